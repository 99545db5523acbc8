"""The merged summary of a stage: a dict (``summarize --json``) and k6-like text.

Request rates (``rates``: the stage's, all shards merged, and ``by_scenario``), each in requests
per second over the stage's wall-clock duration (first shard's start to last shard's end), so
that their ratios are ratios of counts:

- **achieved**: requests completed, that is answered with any HTTP status (a 5xx included; a
  connect error, timeout or closed connection is no answer).
- **offered**: requests the generator started: the completed ones, those that failed without an
  answer and those stopped in flight at the stage's end; for an open-model executor
  (constant-arrival-rate) also every dropped iteration, as offered but not sent, times the
  scenario's requests per iteration.
- **planned**: what the plan's pacing asks of the schedule actually run. A scenario declares
  its pacing (``@scenario(pacing=...)``, :mod:`loadgate.scenarios`): k requests and ``idle``
  seconds per iteration (expected values for its options), of which ``spread`` seconds lie
  between its first and last request, and how much the idle time varies (``idle_sd``). With L
  the mean latency measured from its merged histograms (so a slow target does not make the
  plan look unmet), a VU runs an iteration every c = idle + k × L seconds, the first the moment
  it starts, and sends an iteration's requests at its start (spread 0), or the first then and
  the others evenly over the next b = spread + (k - 1) × L seconds. A closed-model scenario
  (ramping-vus, constant-vus) plans, for each VU the engine ran (its ``vu_lifetimes``: the
  seconds from its start until it was asked to stop, and the grace its last iteration then had
  before being cancelled), the iterations it starts before the stop and of each the requests
  due before the grace ran out (:func:`expected_requests`); a connection-ramp VU runs one
  iteration. So a short stage, where a VU's first iteration (sent at once) is a large part of
  its requests, plans them too, and a long one plans k × VU-seconds / c, the steady state. An
  arrival-rate scenario plans rate × scale × k per second while it is scheduled.
  ``--time-scale`` does not enter: it shortens the schedule, never the pacing. Results without
  ``vu_lifetimes`` (an older engine, a shard killed before its end) plan the steady state over
  the VU-seconds run (``vu_s`` in the windows). A scenario that declares no pacing (or cannot
  be imported where the summary is made) has no planned rate, and neither has its stage: None.
- **offered_vs_planned**: offered / planned (None without a plan): about 1 when the generator
  sent what the plan asks for; well below 1 when it could not keep up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from loadgate.engine.aggregate import Aggregate, HttpFigures
from loadgate.engine.durations import format_duration
from loadgate.engine.executors.base import Profile, find_executor
from loadgate.engine.histogram import Accumulator
from loadgate.engine.merge import MergedStage
from loadgate.engine.window import TRANSPORT_ERRORS
from loadgate.scenarios import IterationPacing, pacing_of

# a VU alive longer than this many cycles (and long enough that its iteration starts vary by a
# cycle or more) is planned by the renewal asymptote, which the sum then agrees with to a
# hundredth of an iteration
ASYMPTOTE_CYCLES = 30.0
TAIL_SD = 8.0  # an iteration start this many standard deviations after the stop: none
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)

PERCENTILES = (50, 90, 95, 99)
SATURATED_MESSAGE = "the generator cannot vouch for these numbers"
HEARTBEAT = "heartbeat"  # the WebSocket round trip the seed reports (ws.rtt_* in the summary)


def _latency(acc: Accumulator) -> dict[str, float]:
    values = acc.percentiles_us(PERCENTILES)
    return {
        "avg_ms": round(acc.mean_ms(), 3),
        "min_ms": round(acc.min_ms(), 3),
        **{f"p{p}_ms": round(values[p] / 1000.0, 3) for p in PERCENTILES},
        "max_ms": round(acc.max_ms(), 3),
    }


def _http(fig: HttpFigures, seconds: int) -> dict[str, Any]:
    return {
        "requests": fig.requests,
        "failed": fig.failed,
        "error_rate": round(fig.error_rate, 6),
        "rps": round(fig.requests / seconds, 3) if seconds else 0.0,
        **_latency(fig.latency),
        "status_classes": dict(sorted(fig.by_class.items())),
    }


def _generator(agg: Aggregate, max_fraction: float) -> dict[str, Any]:
    lag = agg.lag.percentiles_us([99])[99] / 1000.0
    fraction = agg.saturated_windows / agg.windows if agg.windows else 0.0
    return {
        "windows": agg.windows,
        "saturated_windows": agg.saturated_windows,
        "saturated_fraction": round(fraction, 4),
        "lag_p99_ms": round(lag, 3),
        "lag_max_ms": round(agg.lag_max_ms, 3),
        "cpu_max": round(agg.cpu_max, 3),
        "rss_max_mb": round(agg.rss_max_mb, 1),
        "saturated": agg.windows > 0 and fraction > max_fraction,
    }


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def _pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / _SQRT2PI


def _due(
    lo: float,
    hi: float,
    gauss: tuple[float, float] | None,
    alive: float,
    end: float,
    b: float,
    lead: float,
) -> float:
    """E[1{S < alive} × the share of an iteration starting at S that is due by ``end``] for S
    uniform in [lo, hi] (a point when lo == hi), or normal with ``gauss`` = (mean, standard
    deviation). The share: ``lead`` at S, the rest evenly over (S, S + b]."""
    whole = min(alive, end - b)  # an iteration starting before this sends all its requests
    if gauss is not None:
        mean, sd = gauss
        z_whole, z_alive = (whole - mean) / sd, (alive - mean) / sd
        due = _cdf(z_whole)
        if b > 0 and whole < alive:
            p = _cdf(z_alive) - _cdf(z_whole)
            started = mean * p - sd * (_pdf(z_alive) - _pdf(z_whole))  # E[S; whole <= S < alive]
            due += lead * p + (1.0 - lead) * (end * p - started) / b
        return due
    if hi <= lo:
        if lo >= alive:
            return 0.0
        return 1.0 if lo <= whole else lead + (1.0 - lead) * (end - lo) / b
    width = hi - lo
    due = min(1.0, max(0.0, (whole - lo) / width))
    u1, u2 = max(lo, whole), min(hi, alive)
    if b > 0 and u2 > u1:
        p = (u2 - u1) / width
        started = (u2 * u2 - u1 * u1) / (2.0 * width)  # E[S; u1 <= S < u2]
        due += lead * p + (1.0 - lead) * (end * p - started) / b
    return due


def expected_requests(
    alive_s: float,
    grace_s: float,
    pacing: IterationPacing,
    latency_s: float,
    *,
    once: bool = False,
) -> float:
    """The requests the pacing asks of one VU asked to stop ``alive_s`` seconds after its start
    and cancelled ``grace_s`` later (``once``: it runs one iteration, as a connection-ramp VU).

    Iteration n starts at S_n: S_0 = 0, then one every c = idle + k × L seconds on average;
    none starts after the stop request. Of iteration n, the requests due before the grace runs
    out count: all of them at S_n when the pacing has no spread, else the first at S_n and the
    other k - 1 evenly over (S_n, S_n + b], b = spread + (k - 1) × L. A cycle varies by its
    idle time's declared standard deviation σ (undeclared: the idle time after the requests,
    T = idle - spread, taken as uniform from 0 to 2T, the seed's think times: σ = T / √3):
    S_1 is taken as uniform over c ± √3 σ (a think time uniform in [a, b]), S_n for n >= 2 as
    normal with mean n × c and variance n × σ². σ decides only how soon VUs that started
    together lose step, not the rate. A VU alive for more than ``ASYMPTOTE_CYCLES`` cycles,
    and long enough that S_n varies by a cycle or more, gets the renewal asymptote the sum
    tends to: k × (alive / c + (1 + σ² / c²) / 2 - (1 - 1 / k) × (b - grace)₊² / (2 b c)):
    the steady state, plus the first iteration sent at once, less its last iteration's
    requests still due when it was cancelled. A cycle that never varies (σ = 0) starts its
    iterations at c, 2c, ...."""
    k, idle, spread, idle_sd = pacing
    if alive_s <= 0 or k <= 0:
        return 0.0
    c = idle + k * latency_s
    b = spread + max(0.0, k - 1.0) * latency_s if spread > 0 else 0.0
    sigma = (idle - spread) / math.sqrt(3.0) if idle_sd is None else idle_sd
    end = alive_s + grace_s  # when the last iteration is cancelled
    lead = min(1.0, 1.0 / k)  # of an iteration's requests, the share sent as it starts
    iterations = _due(0.0, 0.0, None, alive_s, end, b, lead)  # the first, at 0
    if once or c <= 0:
        return k * iterations
    whole = min(alive_s, end - b)  # an iteration starting before this sends all it has
    if sigma <= 0:  # every cycle c long: iterations 1, 2, ... start at c, 2c, ... < alive
        first = max(1, math.floor(whole / c) + 1) if whole >= c else 1
        iterations += max(0, first - 1)
        n = first
        while n * c < alive_s:
            iterations += _due(n * c, n * c, None, alive_s, end, b, lead)
            n += 1
        return k * iterations
    if alive_s / c > max(ASYMPTOTE_CYCLES, (c / sigma) ** 2):
        late = (1.0 - lead) * (b - grace_s) ** 2 / (2.0 * b) if b > grace_s else 0.0
        return k * (alive_s / c + (1.0 + (sigma / c) ** 2) / 2.0 - late / c)
    half = min(c, math.sqrt(3.0) * sigma)  # S_1 is never negative
    iterations += _due(c - half, c + half, None, alive_s, end, b, lead)
    # iterations 2 ... certain to start and send everything before ``whole`` (n c + 8 √n σ
    # below it) count 1 each; the rest one by one, until a start before the stop is as unlikely
    root = -TAIL_SD * sigma + math.sqrt((TAIL_SD * sigma) ** 2 + 4.0 * c * max(whole, 0.0))
    certain = math.floor((root / (2.0 * c)) ** 2)
    iterations += max(0, certain - 1)
    n = max(2, certain + 1)
    while True:
        mean, sd = n * c, math.sqrt(n) * sigma
        if mean - TAIL_SD * sd >= alive_s:
            break
        iterations += _due(0.0, 0.0, (mean, sd), alive_s, end, b, lead)
        n += 1
    return k * iterations


def planned_requests(
    lifetimes: Iterable[list[float]],
    pacing: IterationPacing,
    latency_s: float,
    *,
    once: bool = False,
) -> float:
    """The requests the pacing asks of VUs run as ``lifetimes`` say (``[[seconds to the stop
    request, grace, VUs], ...]``, see :func:`expected_requests`)."""
    return sum(
        n * expected_requests(alive, grace, pacing, latency_s, once=once)
        for alive, grace, n in lifetimes
    )


def _lifetimes(merged: MergedStage, name: str) -> list[list[float]] | None:
    """A scenario's VU lifetimes over all shards; None when a shard did not record them."""
    rows: list[list[float]] = []
    for shard in merged.shards:
        recorded = shard.meta.get("vu_lifetimes")
        if not isinstance(recorded, dict):
            return None
        rows.extend(recorded.get(name) or [])
    return rows


def _scenario_rates(
    agg: Aggregate,
    name: str,
    desc: dict[str, Any],
    stage_s: float,
    lifetimes: list[list[float]] | None = None,
) -> dict[str, Any]:
    """Counts behind one scenario's rates (see the module's doc)."""
    started = answered = 0
    for (_, _, _, cls), h in agg.select_http(scenarios=[name]):
        started += h.count
        if cls not in TRANSPORT_ERRORS:
            answered += h.count
    started += agg.http_cancelled.get(name, 0)
    latency = agg.http_figures(scenarios=[name]).latency
    mean_s = latency.mean_ms() / 1000.0 if latency.total else 0.0
    exec_ref = desc.get("exec")
    pacing = pacing_of(exec_ref, desc.get("options") or {}) if exec_ref else None
    iterations = agg.iterations.get(name, 0)
    per_iteration = (
        pacing.requests if pacing is not None else (started / iterations if iterations else 1.0)
    )
    dropped = agg.dropped.get(name, 0)
    offered = started + dropped * per_iteration
    vu_s = agg.vu_seconds.get(name)
    if vu_s is None:  # results from before vu_s: the VUs at each window's end, one second each
        vu_s = float(sum(per[name][0] for per in agg.vus_t.values() if name in per))
    planned: float | None = None
    planned_from: str | None = None
    if pacing is not None:
        k, idle = pacing.requests, pacing.idle
        executor = find_executor(desc.get("executor"))
        scheduled = executor.profile.scheduled_iterations(desc, stage_s) if executor else None
        if scheduled is not None:
            planned, planned_from = scheduled * k, "arrival schedule"
        elif idle + k * mean_s <= 0:
            pass
        elif lifetimes is not None:
            once = executor is not None and executor.profile.once
            planned = planned_requests(lifetimes, pacing, mean_s, once=once)
            planned_from = "vu lifetimes"
        else:
            planned, planned_from = vu_s * k / (idle + k * mean_s), "vu-seconds (steady state)"
    return {
        "planned": planned,
        "planned_from": planned_from,
        "offered": float(offered),
        "achieved": float(answered),
        "vu_seconds": vu_s,
        "pacing": None
        if pacing is None
        else {
            "requests_per_iteration": round(pacing.requests, 6),
            "idle_s": round(pacing.idle, 6),
            "spread_s": round(pacing.spread, 6),
            "idle_sd_s": None if pacing.idle_sd is None else round(pacing.idle_sd, 6),
        },
        "latency_mean_ms": round(mean_s * 1000.0, 3),
    }


def _per_s(count: float | None, seconds: float) -> float | None:
    if count is None:
        return None
    return round(count / seconds, 4) if seconds > 0 else 0.0


def _ratio(offered: float, planned: float | None) -> float | None:
    return round(offered / planned, 4) if planned else None


def rates(merged: MergedStage) -> dict[str, Any]:
    """Planned, offered and achieved request rates of the stage and of each scenario (all
    shards merged; definitions in the module's doc)."""
    agg = merged.aggregate
    seconds = merged.duration_s or float(agg.seconds)
    described: dict[str, dict[str, Any]] = {}
    for shard in merged.shards:
        for name, desc in (shard.meta.get("scenarios") or {}).items():
            described.setdefault(name, desc)
    names = list(described)
    seen = {key[0] for key in agg.http} | set(agg.vu_seconds) | set(agg.iterations)
    names += sorted(seen - set(described))
    by: dict[str, Any] = {}
    totals = {"planned": 0.0, "offered": 0.0, "achieved": 0.0}
    unplanned = False
    for name in names:
        counts = _scenario_rates(
            agg, name, described.get(name, {}), seconds, _lifetimes(merged, name)
        )
        if counts["planned"] is None:
            unplanned = True
        else:
            totals["planned"] += counts["planned"]
        totals["offered"] += counts["offered"]
        totals["achieved"] += counts["achieved"]
        vu_s = counts["vu_seconds"]
        by[name] = {
            "planned": _per_s(counts["planned"], seconds),
            "offered": _per_s(counts["offered"], seconds),
            "achieved": _per_s(counts["achieved"], seconds),
            "offered_vs_planned": _ratio(counts["offered"], counts["planned"]),
            "planned_from": counts["planned_from"],
            "vu_seconds": round(vu_s, 3),
            "achieved_per_vu_s": round(counts["achieved"] / vu_s, 4) if vu_s > 0 else None,
            "pacing": counts["pacing"],
            "latency_mean_ms": counts["latency_mean_ms"],
        }
    planned = None if unplanned or not names else totals["planned"]
    return {
        "planned": _per_s(planned, seconds),
        "offered": _per_s(totals["offered"], seconds),
        "achieved": _per_s(totals["achieved"], seconds),
        "offered_vs_planned": _ratio(totals["offered"], planned),
        "seconds": round(seconds, 3),
        "by_scenario": by,
    }


def describe_pacing(profile: Profile) -> str:
    """What a profile's declared pacing implies on this shard, for the start-of-stage log:
    ``pacing: ~0.67 req/s per VU, ~13 req/s at the peak of 20 VUs`` (at zero latency: the most
    the plan asks for; a slower target gets proportionally less, as a real user would send)."""
    pacing = pacing_of(profile.exec_ref, profile.options)
    if pacing is None:
        return "pacing: not declared (no planned request rate)"
    k, idle = pacing.requests, pacing.idle
    rate = profile.iteration_rate
    if rate is not None:
        return (
            f"pacing: {rate:.3g} iterations/s × {k:.3g} requests = ~{rate * k:.3g} req/s on "
            f"this shard (whatever the time scale)"
        )
    peak = profile.peak
    if idle <= 0:
        return (
            f"pacing: {k:.3g} requests per iteration and no idle time: each of up to {peak} "
            f"VUs sends as fast as the target answers"
        )
    per_vu = k / idle
    unit = profile.unit
    return (
        f"pacing: ~{per_vu:.3g} req/s per {unit}, ~{per_vu * peak:.3g} req/s at the peak of "
        f"{peak} {unit}s (whatever the time scale)"
    )


def summarize(merged: MergedStage) -> dict[str, Any]:
    agg = merged.aggregate
    seconds = agg.seconds
    total = agg.http_figures()
    limits = (merged.shards[0].meta.get("generator") or {}).get("limits") or {}
    gen = _generator(agg, float(limits.get("max_fraction", 0.05)))
    ws = agg.ws_figures()
    passed, failed_checks = agg.checks_figures()
    latency = {
        name: {"count": acc.total, **_latency(acc)}
        for name in agg.ws_latency_names()
        if (acc := agg.ws_figures(names=[name]).latency)
    }
    out: dict[str, Any] = {
        "stage": merged.stage,
        "plan": merged.plan,
        "shards": len(merged.shards),
        "status": merged.status,
        "started_at": merged.started_at,
        "duration_s": round(merged.duration_s, 3),
        **_http(total, seconds),
        "errors": {k: total.failed_by_class.get(k, 0) for k in ("4xx", "5xx")}
        | {k: total.by_class.get(k, 0) for k in ("connect", "timeout", "closed", "protocol")},
        "max_vus": agg.vus_max(),
        "iterations": agg.count(agg.iterations),
        "dropped_iterations": agg.count(agg.dropped),
        "interrupted_iterations": agg.count(agg.interrupted),
        "iteration_errors": agg.count(agg.iteration_errors),
        "checks": {
            "passed": passed,
            "failed": failed_checks,
            "by_name": {
                f"{s}: {n}": {"passed": p, "failed": f} for (s, n), (p, f) in agg.checks.items()
            },
        },
        "by_name": {
            name: _http(agg.http_figures(names=[name]), seconds) for name in agg.request_names()
        },
        "ws": {
            "connects": ws.counts["connects"],
            "connect_failed": ws.counts["connect_failed"],
            "connect_success_rate": round(ws.counts["connects"] / ws.attempts, 6)
            if ws.attempts
            else None,
            "max_connections": ws.open_max,
            "closed_unexpected": ws.counts["closed_unexpected"],
            "error_replies": ws.counts["error_replies"],
            "messages_sent": ws.counts["msgs_out"],
            "messages_received": ws.counts["msgs_in"],
            "errors": ws.errors,
            "error_rate": round(ws.error_rate, 6),
            "connect_ms": _latency(ws.connect),
            "latency": latency,
            **{f"rtt_{k}": v for k, v in (latency.get(HEARTBEAT) or {}).items() if k != "count"},
        },
        "aborted": merged.aborted,
        "generator_saturated": gen["saturated"],
        "generator": gen,
        "incomplete_shards": merged.incomplete,
        "truncated_lines": merged.truncated_lines,
        "system": {
            name: {"max": max(vals), "last": vals[-1], "samples": len(vals)}
            for name in sorted(agg.sys)
            if (vals := agg.system_values(name))
        },
        "rates": rates(merged),
    }
    return out


def _line(label: str, value: str) -> str:
    return f"  {label:.<34}: {value}"


def _lat_text(d: dict[str, Any]) -> str:
    return (
        f"avg={d['avg_ms']:.2f}ms p50={d['p50_ms']:.2f}ms p95={d['p95_ms']:.2f}ms "
        f"p99={d['p99_ms']:.2f}ms max={d['max_ms']:.2f}ms"
    )


def render_text(summary: dict[str, Any]) -> str:
    """k6-like text of a summary dict."""
    s = summary
    lines = [
        f"  stage {s['stage']} · plan {s['plan']} · {s['shards']} shard(s) · "
        f"{format_duration(s['duration_s'])} · {s['status']}",
        "",
    ]
    if s["aborted"]:
        a = s["aborted"]
        lines.append(
            f"  ABORTED by criterion {a.get('criterion')} (observed {a.get('observed')}) "
            f"at {a.get('at_s')}s"
        )
        lines.append("")
    if s["generator_saturated"]:
        lines.append(f"  WARNING: generator saturated: {SATURATED_MESSAGE}")
        lines.append("")
    lines.append(_line("http_reqs", f"{s['requests']}  {s['rps']:.1f}/s"))
    r = s.get("rates")
    if r and (s["requests"] or r["planned"]):
        planned = "none declared" if r["planned"] is None else f"{r['planned']:.2f}/s"
        ratio = r["offered_vs_planned"]
        lines.append(
            _line(
                "http_req_rate",
                f"planned {planned}  offered {r['offered']:.2f}/s  achieved "
                f"{r['achieved']:.2f}/s"
                + ("" if ratio is None else f"  (offered/planned {ratio:.2f})"),
            )
        )
    pct = f"{s['error_rate'] * 100:.2f}%"
    lines.append(_line("http_req_failed", f"{pct}  {s['failed']} of {s['requests']}"))
    if s["requests"]:
        lines.append(_line("http_req_duration", _lat_text(s)))
        for name, d in s["by_name"].items():
            lines.append(
                _line(
                    f"  {{ {name} }}",
                    f"{d['requests']} reqs, {d['error_rate'] * 100:.2f}% failed, " + _lat_text(d),
                )
            )
    errors = {k: v for k, v in s["errors"].items() if v}
    if errors:
        lines.append(_line("errors", ", ".join(f"{k}={v}" for k, v in errors.items())))
    checks = s["checks"]
    n_checks = checks["passed"] + checks["failed"]
    if n_checks:
        lines.append(
            _line(
                "checks",
                f"{checks['passed'] / n_checks * 100:.2f}%  {checks['passed']} ✓ "
                f"{checks['failed']} ✗",
            )
        )
    lines.append(_line("iterations", str(s["iterations"])))
    if s["dropped_iterations"]:
        lines.append(_line("dropped_iterations", str(s["dropped_iterations"])))
    if s["interrupted_iterations"]:
        lines.append(_line("interrupted_iterations", str(s["interrupted_iterations"])))
    if s["iteration_errors"]:
        lines.append(_line("iteration_errors", str(s["iteration_errors"])))
    lines.append(_line("vus_max", str(s["max_vus"])))
    ws = s["ws"]
    if ws["connects"] or ws["connect_failed"]:
        lines.append(_line("ws_connections_max", str(ws["max_connections"])))
        rate = ws["connect_success_rate"]
        lines.append(
            _line(
                "ws_connect_success",
                f"{rate * 100:.2f}%  {ws['connects']} of {ws['connects'] + ws['connect_failed']}",
            )
        )
        lines.append(_line("ws_connecting", _lat_text(ws["connect_ms"])))
        lines.append(
            _line("ws_msgs", f"sent {ws['messages_sent']}  received {ws['messages_received']}")
        )
        lines.append(_line("ws_errors", f"{ws['error_rate'] * 100:.2f}%  {ws['errors']}"))
        for name, d in ws["latency"].items():
            lines.append(_line(f"ws_rtt {{ {name} }}", f"{d['count']} · " + _lat_text(d)))
    g = s["generator"]
    lines.append(
        _line(
            "generator",
            f"loop lag p99={g['lag_p99_ms']:.1f}ms max={g['lag_max_ms']:.1f}ms "
            f"cpu max={g['cpu_max']:.2f} rss max={g['rss_max_mb']:.0f}MB "
            f"saturated windows={g['saturated_windows']}/{g['windows']}",
        )
    )
    for name, d in s["system"].items():
        lines.append(_line(f"system {name}", f"max={d['max']:.4g} last={d['last']:.4g}"))
    if s["incomplete_shards"]:
        lines.append("")
        lines.append(
            "  incomplete shards (killed or still running): " + ", ".join(s["incomplete_shards"])
        )
    return "\n".join(lines) + "\n"
