"""The merged summary of a stage: a dict (``summarize --json``) and k6-like text."""

from __future__ import annotations

from typing import Any

from loadgate.plan.durations import format_duration

from .aggregate import Aggregate, HttpFigures
from .histogram import Accumulator
from .merge import MergedStage

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
