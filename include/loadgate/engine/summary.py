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
- **planned**: what the plan's pacing implies for the VU curve actually run. A scenario declares
  its pacing (``@scenario(pacing=...)``, :mod:`loadgate.scenarios`): k requests and ``idle``
  seconds per iteration (expected values for its options). A closed-model scenario
  (ramping-vus, constant-vus, connection-ramp) then plans ``k / (idle + k × L)`` requests per
  second per active VU, with L the mean latency measured from its merged histograms (so a slow
  target does not make the plan look unmet), times the VU-seconds it ran (the engine's exact
  integral of active VUs over time, ``vu_s`` in the windows). An arrival-rate scenario plans
  rate × scale × k per second while it is scheduled. ``--time-scale`` does not enter: it shortens
  the schedule, never the pacing. A scenario that declares no pacing (or cannot be imported
  where the summary is made) has no planned rate, and neither has its stage: None.
- **offered_vs_planned**: offered / planned (None without a plan): about 1 when the generator
  sent what the plan asks for; well below 1 when it could not keep up.
"""

from __future__ import annotations

from typing import Any

from loadgate.plan.durations import format_duration
from loadgate.plan.profile import ArrivalProfile, ConnectionRampProfile, Profile
from loadgate.scenarios import pacing_of

from .aggregate import Aggregate, HttpFigures
from .histogram import Accumulator
from .merge import MergedStage
from .window import TRANSPORT_ERRORS

ARRIVAL = "constant-arrival-rate"

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


def _scenario_rates(
    agg: Aggregate, name: str, desc: dict[str, Any], stage_s: float
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
        pacing[0] if pacing is not None else (started / iterations if iterations else 1.0)
    )
    dropped = agg.dropped.get(name, 0)
    offered = started + dropped * per_iteration
    vu_s = agg.vu_seconds.get(name)
    if vu_s is None:  # results from before vu_s: the VUs at each window's end, one second each
        vu_s = float(sum(per[name][0] for per in agg.vus_t.values() if name in per))
    planned: float | None = None
    if pacing is not None:
        k, idle = pacing
        if desc.get("executor") == ARRIVAL:
            rate = float(desc.get("rate_total_per_s") or 0.0)
            ran = max(0.0, stage_s - float(desc.get("start_s") or 0.0))
            iterations_planned = min(float(desc.get("iterations_total") or 0), rate * ran)
            planned = iterations_planned * k
        elif idle + k * mean_s > 0:
            planned = vu_s * k / (idle + k * mean_s)
    return {
        "planned": planned,
        "offered": float(offered),
        "achieved": float(answered),
        "vu_seconds": vu_s,
        "pacing": None
        if pacing is None
        else {"requests_per_iteration": round(pacing[0], 6), "idle_s": round(pacing[1], 6)},
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
        counts = _scenario_rates(agg, name, described.get(name, {}), seconds)
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
    k, idle = pacing
    if isinstance(profile, ArrivalProfile):
        total = profile.iterations_total
        rate = profile.rate_total * profile.iterations / total if total else 0.0
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
    unit = "connection" if isinstance(profile, ConnectionRampProfile) else "VU"
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
