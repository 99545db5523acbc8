"""The report's figures as people read them: labels, targets as the seed states them, the
baseline release's values and the change, the plan's expectations scaled to the run.

Everything here is data (plain dicts of numbers and short strings); :mod:`loadgate.report.build`
renders it as Markdown and HTML and writes it into ``report.json``. Nothing here is escaped:
the strings may come from a plan or a trigger, and the renderer escapes them where it writes.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from loadgate.plan.model import Plan

# the seed states a target ("< 1%"); a plan's criterion holds its breach (">= 1%"): the negation
_TARGET_OP = {">=": "<", ">": "≤", "<": "≥", "<=": ">", "==": "≠", "!=": "="}
_SYSTEM = {
    "cpu_utilization": "CPU utilization",
    "memory_utilization": "Memory utilization",
    "db_connection_utilization": "Database connection pool in use",
    "db_connection_errors": "Database connection failures",
    "pod_restarts": "Pod crashes",
    "ws_server_connections": "WebSocket connections held by the service",
    "up": "Metrics endpoint answering",
}
_METRICS = {
    "vus": "Concurrent users",
    "ws_connections": "Concurrent WebSocket connections",
    "http_req_failed": "Error rate",
    "http_availability": "Service availability",
    "http_unavailable_rate": "5xx or unanswered requests",
    "ws_error_rate": "WebSocket error rate",
    "ws_connect_success_rate": "WebSocket connection success",
    **_SYSTEM,
}
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")


def metric_label(metric: str, stat: str | None = None) -> str:
    """A metric (and statistic) as a person names it: ``http_req_duration`` p95 → "p95
    response time"; an unknown one keeps its name."""
    if metric == "http_req_duration":
        return f"{stat or 'average'} response time"
    if metric == "ws_rtt":
        return f"WebSocket round trip {stat or 'average'}"
    label = _METRICS.get(metric, metric)
    if metric in _SYSTEM and stat and _PERCENTILE.match(stat):
        label += f" ({stat} of the seconds)"
    return label


def criterion_label(c: Mapping[str, Any]) -> str:
    """A criterion's human label: its metric's, or its id in words."""
    metric = str(c.get("metric") or "")
    if metric in _METRICS or metric in ("http_req_duration", "ws_rtt"):
        return metric_label(metric, c.get("stat"))
    ident = str(c.get("id") or metric)
    return ident.replace("-", " ").replace("_", " ").capitalize()


def number(value: float | None, digits: int = 3) -> str:
    """A number for people: thousands separated, no exponent, at most ``digits`` significant
    digits after the point (12.5, 1,234, 2,500,000, 0.338)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if float(value).is_integer():
        return f"{int(value):,}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    places = max(0, digits - 1 - math.floor(math.log10(magnitude))) if magnitude else 0
    return f"{value:,.{min(places, 6)}f}".rstrip("0").rstrip(".")


def percent(value: float | None) -> str:
    """A ratio as a percentage: 0.01 → "1%", 0.0023 → "0.23%", 0 → "0%"."""
    if value is None:
        return "—"
    return f"{value * 100:.2f}".rstrip("0").rstrip(".") + "%"


def with_unit(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "%":
        return percent(value)
    if unit == "ms":
        return f"{number(value)} ms"
    return number(value) + (f" {unit}" if unit else "")


def target_text(c: Mapping[str, Any]) -> str:
    """The criterion's target as the seed states it: ``>= 1%`` is "< 1%", ``> 0`` crashes is
    "0", ``< 30`` users is "≥ 30". An operator it does not know is shown as "not <op> …"."""
    op, threshold, unit = str(c.get("op") or ""), c.get("threshold"), str(c.get("unit") or "")
    if op == ">" and threshold == 0:
        return "0"
    shown = with_unit(threshold, unit)
    return f"{_TARGET_OP[op]} {shown}" if op in _TARGET_OP else f"not {op} {shown}"


def status_of(c: Mapping[str, Any]) -> str:
    """A criterion's status word: met, not met, no data, too few samples, unsure."""
    status = str(c.get("status") or "")
    if c.get("observed") is None or status in ("unknown", "no baseline"):
        return "no data"
    if c.get("breached"):
        return "not met"
    if status == "insufficient":
        return "too few samples"
    if status == "inconclusive":
        return "unsure"
    return "met"


def change_text(current: float | None, base: float | None, unit: str) -> str:
    """The change from the baseline: percentage points for a rate, relative otherwise."""
    if current is None or base is None:
        return "—"
    if unit == "%":
        points = (current - base) * 100
        return f"{points:+.2f} pp"
    if base == 0:
        return "—" if current == 0 else "new"
    return f"{(current / base - 1) * 100:+.0f}%"


# --- the baseline release's figures --------------------------------------------------------


def baseline_entry(record: Mapping[str, Any], stage: Mapping[str, Any]) -> dict[str, Any] | None:
    """The history entry of the stage's baseline run, when the history the report holds has it."""
    run_id = (stage.get("baseline") or {}).get("run_id")
    if not run_id:
        return None
    for entry in record.get("history") or []:
        if entry.get("run_id") == run_id:
            return dict(entry)
    return None


def _baseline_comparison(stage: Mapping[str, Any], metric: str, scope: str = "all") -> Any:
    for c in (stage.get("baseline") or {}).get("comparisons") or []:
        if c.get("scope") == scope and c.get("metric") == metric and c.get("source") == "http":
            return c.get("baseline_value")
    return None


def baseline_value(
    record: Mapping[str, Any], name: str, stage: Mapping[str, Any], c: Mapping[str, Any]
) -> float | None:
    """The baseline release's value of what criterion ``c`` measures (None: not kept)."""
    metric, stat = c.get("metric"), c.get("stat")
    entry = baseline_entry(record, stage)
    figures = ((entry or {}).get("stages") or {}).get(name) or {}
    if metric == "http_req_duration" and stat in ("p50", "p95", "p99"):
        value: float | None = figures.get(f"{stat}_ms")
        return value if value is not None else _baseline_comparison(stage, str(stat))
    if metric == "http_req_failed":
        rate: float | None = figures.get("error_rate")
        return rate if rate is not None else _baseline_comparison(stage, "error_rate")
    key = {"vus": "peak_users", "ws_connections": "peak_connections"}.get(str(metric))
    if key is None and stat == "max":
        key = {"cpu_utilization": "cpu_peak", "memory_utilization": "memory_peak"}.get(str(metric))
    return figures.get(key) if key else None


def baseline_release(stage: Mapping[str, Any]) -> str | None:
    base = stage.get("baseline") or {}
    return base.get("release") or base.get("run_id")


def acceptance_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """§1: one row per acceptance criterion of each stage."""
    rows = []
    for name, stage in (record.get("stages") or {}).items():
        for c in stage.get("criteria") or []:
            if c.get("level") != "acceptance":
                continue
            unit = str(c.get("unit") or "")
            base = baseline_value(record, name, stage, c)
            rows.append(
                {
                    "id": c.get("id"),
                    "label": criterion_label(c),
                    "stage": name,
                    "target": target_text(c),
                    "measured": c.get("observed"),
                    "measured_text": with_unit(c.get("observed"), unit),
                    "baseline": base,
                    "baseline_text": with_unit(base, unit),
                    "baseline_release": baseline_release(stage),
                    "change": change_text(c.get("observed"), base, unit),
                    "status": status_of(c),
                    "unit": unit,
                    "description": c.get("description") or "",
                }
            )
    return rows


# --- the plan's expectations, scaled to the run ------------------------------------------------

_COUNT_OF_LOAD = {"vus", "ws_connections"}


def _scale_factor(metric: str | None, stat: str | None, scale: float, time_scale: float) -> float:
    """How a plan's expected figure follows the run's scale: an amount of load (users,
    connections, a rate) × scale; a total over the stage × scale × time scale (a shorter
    schedule sends fewer requests, never faster ones); latencies and rates stay."""
    if stat == "count":
        return scale * time_scale
    if stat == "per_s" or (metric in _COUNT_OF_LOAD and stat == "max"):
        return scale
    return 1.0


_TARGET = re.compile(r"^\s*(~|[<>]=?|≤|≥)?\s*([\d.,]+)\s*([KMk]?)\s*([A-Za-z%]*)\s*$")


def _plain_target(text: str) -> str:
    """ "<500ms" → "< 500 ms", "<1%" → "< 1%"; anything else as written."""
    m = _TARGET.match(text)
    if not m or m.group(3):
        return text
    op, value, _, unit = m.groups()
    unit = "" if not unit else (unit if unit == "%" else f" {unit}")
    with contextlib.suppress(ValueError):  # "1.2.3": as written
        value = number(float(value.replace(",", "")))
    return f"{op + ' ' if op and op != '~' else op or ''}{value}{unit}"


def expected_rows(
    plan: Plan | None, name: str, stage: Mapping[str, Any], scale: float, time_scale: float
) -> list[dict[str, Any]]:
    """The plan's expected figures for the stage (the seed's §4), each with its measured value,
    the expectation and a load target scaled to the run, formatted for people."""
    summary = stage.get("summary") or {}
    if plan is None or name not in plan.stages:
        return []
    rows = []
    for fig in plan.stages[name].expected:
        factor = _scale_factor(fig.metric, fig.stat, scale, time_scale)
        unit = "%" if fig.metric in ("http_req_failed", "ws_error_rate") else fig.unit
        expected = None if fig.expected is None else fig.expected * factor
        if expected is not None and factor != 1.0 and unit != "%":
            expected = float(max(1, round(expected))) if expected >= 0.5 else expected
        if factor != 1.0 and expected is not None:
            approx = "~" if (fig.target or "").lstrip().startswith("~") else ""
            target = f"{approx}{number(expected)}"
        else:
            target = _plain_target(fig.target or "—")
        measured = measured_figure(fig.label, fig.metric, fig.stat, summary)
        rows.append(
            {
                "label": fig.label,
                "measured": measured,
                "measured_text": with_unit(measured, unit),
                "expected": expected,
                "expected_text": (
                    "—"
                    if expected is None
                    else ("~" if factor != 1.0 else "") + with_unit(expected, unit)
                ),
                "target": target,
                "scaled": factor != 1.0,
            }
        )
    return rows


def _by_name(summary: Mapping[str, Any], *words: str) -> list[Mapping[str, Any]]:
    return [
        s for n, s in (summary.get("by_name") or {}).items() if all(w in n.lower() for w in words)
    ]


def measured_figure(
    label: str, metric: str | None, stat: str | None, summary: Mapping[str, Any]
) -> float | None:
    """What the stage measured of a plan's expected figure (None: not measured)."""
    if not summary:
        return None
    ws = summary.get("ws") or {}
    lower = label.lower()
    # the session stage's updates and snapshots are request kinds of its one request total
    kind = ("put",) if "update" in lower else ("snapshot",) if "snapshot" in lower else None
    if metric == "http_reqs" and stat == "count":
        if kind:
            rows = _by_name(summary, *kind)
            return float(sum(r.get("requests") or 0 for r in rows)) if rows else None
        return summary.get("requests")
    if metric == "http_req_duration" and stat in ("p50", "p95", "p99"):
        if kind:
            rows = _by_name(summary, *kind)
            values = [float(r[f"{stat}_ms"]) for r in rows if r.get(f"{stat}_ms") is not None]
            return max(values) if values else None
        return summary.get(f"{stat}_ms")
    simple = {
        ("vus", "max"): summary.get("max_vus"),
        ("http_reqs", "per_s"): summary.get("rps"),
        ("http_req_failed", None): summary.get("error_rate"),
        ("ws_connections", "max"): ws.get("max_connections"),
        ("ws_msgs_sent", "count"): ws.get("messages_sent"),
        ("ws_msgs_received", "count"): ws.get("messages_received"),
        ("ws_error_rate", None): ws.get("error_rate"),
        ("ws_rtt", "avg"): ws.get("rtt_avg_ms"),
        ("ws_rtt", "p95"): ws.get("rtt_p95_ms"),
        ("ws_rtt", "p99"): ws.get("rtt_p99_ms"),
    }
    return simple.get((metric or "", stat))


# --- per endpoint, load levels, headline ------------------------------------------------------


def endpoint_rows(
    record: Mapping[str, Any], name: str, stage: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per request name: requests, errors, p50/p95/p99 and the p95's change against the
    baseline release (the gate's comparison where it made one, else the history's figure)."""
    summary = stage.get("summary") or {}
    entry = baseline_entry(record, stage)
    scopes = (((entry or {}).get("stages") or {}).get(name) or {}).get("scopes") or {}
    compared = {
        c.get("scope"): c
        for c in (stage.get("baseline") or {}).get("comparisons") or []
        if c.get("metric") == "p95" and c.get("source") == "http"
    }
    rows = []
    for request, s in sorted((summary.get("by_name") or {}).items()):
        p95 = s.get("p95_ms")
        c = compared.get(request) or {}
        base = c.get("baseline_value")
        if base is None:
            base = (scopes.get(f"http {request}") or {}).get("p95")
        change = change_text(p95, base, "ms")
        if c.get("outcome") == "regression":
            change += " (regression)"
        rows.append(
            {
                "request": request,
                "requests": s.get("requests"),
                "errors": s.get("failed"),
                "error_rate": s.get("error_rate"),
                "p50_ms": s.get("p50_ms"),
                "p95_ms": p95,
                "p99_ms": s.get("p99_ms"),
                "baseline_p95_ms": base,
                "p95_change": change,
            }
        )
    return rows


def level_rows(
    plan: Plan | None, stage_name: str, stage: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """§5 (the seed's §9.2): each load level the stage reached, with the seed's limits and
    whether it kept them."""
    levels = {lv.name: lv for lv in plan.load_levels} if plan else {}
    rows = []
    for lv in stage.get("load_levels") or []:
        planned = levels.get(str(lv.get("level")))
        p95_limit = lv.get("limit_p95_ms")
        if p95_limit is None and planned is not None:
            p95_limit = planned.limit_p95_ms
        error_limit = planned.limit_error_rate if planned is not None else None
        checks = [
            (lv.get("p95_ms"), p95_limit),
            (lv.get("error_rate"), error_limit),
        ]
        known = [(v, limit) for v, limit in checks if v is not None and limit is not None]
        status = (
            "no limit" if not known else "met" if all(v < lim for v, lim in known) else "not met"
        )
        rows.append(
            {
                "stage": stage_name,
                "level": lv.get("level") or "—",
                "users": lv.get("users"),
                "seconds": lv.get("seconds"),
                "p95_ms": lv.get("p95_ms"),
                "p95_limit_ms": p95_limit,
                "error_rate": lv.get("error_rate"),
                "error_rate_limit": error_limit,
                "cpu": lv.get("cpu"),
                "memory": lv.get("memory"),
                "status": status,
            }
        )
    return rows


def _criterion(
    stage: Mapping[str, Any], metric: str, stat: str | None = None
) -> Mapping[str, Any] | None:
    for c in stage.get("criteria") or []:
        if (
            c.get("level") == "acceptance"
            and c.get("metric") == metric
            and (stat is None or c.get("stat") == stat)
        ):
            return dict(c)
    return None


def headline(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The summary's cards: peak users and connections, requests, error rate, p95 and p99
    (the worst stage's: percentiles of different stages do not add up), each with its target
    and the baseline release's value."""
    stages: Mapping[str, Mapping[str, Any]] = record.get("stages") or {}
    ran = {n: s for n, s in stages.items() if s.get("summary")}
    cards: list[dict[str, Any]] = []

    def card(key: str, label: str, value: Any, unit: str, **more: Any) -> None:
        cards.append(
            {
                "key": key,
                "label": label,
                "value": value,
                "text": with_unit(value, unit),
                "unit": unit,
                "target": more.get("target"),
                "baseline": more.get("baseline"),
                "baseline_text": with_unit(more.get("baseline"), unit)
                if more.get("baseline") is not None
                else None,
                "baseline_release": more.get("release"),
                "change": change_text(value, more.get("baseline"), unit)
                if more.get("baseline") is not None
                else None,
                "stage": more.get("stage"),
            }
        )

    def base_of(name: str, field: str) -> tuple[Any, Any]:
        entry = baseline_entry(record, stages[name])
        figs = ((entry or {}).get("stages") or {}).get(name) or {}
        return figs.get(field), baseline_release(stages[name]) if entry else None

    if not ran:
        return cards

    def peak(key: str, label: str, by_stage: Mapping[str, int], metric: str) -> None:
        """The stage with the most (users, connections): against its criterion's target and
        the same figure (``key``) of its baseline release."""
        top = max(by_stage, key=lambda n: by_stage[n])
        crit = _criterion(ran[top], metric)
        base, release = base_of(top, key)
        target = crit and target_text(crit)
        card(
            key, label, by_stage[top], "", target=target, baseline=base, release=release, stage=top
        )

    peak(
        "peak_users",
        "Peak users",
        {n: s["summary"].get("max_vus") or 0 for n, s in ran.items()},
        "vus",
    )
    conns = {
        n: ((s["summary"].get("ws") or {}).get("max_connections") or 0) for n, s in ran.items()
    }
    if any(conns.values()):
        peak("peak_connections", "Peak WebSocket connections", conns, "ws_connections")
    requests = sum(s["summary"].get("requests") or 0 for s in ran.values())
    # the failed requests of all stages over all their requests (a gate's error rate is its
    # failed / requests, so this is the run's)
    failed = sum(
        (s["summary"].get("error_rate") or 0) * (s["summary"].get("requests") or 0)
        for s in ran.values()
    )
    base_requests, base_failed, release = 0.0, 0.0, None
    for n, s in ran.items():
        entry = baseline_entry(record, s)
        figs = ((entry or {}).get("stages") or {}).get(n) or {}
        if figs.get("requests"):
            base_requests += figs["requests"]
            base_failed += (figs.get("error_rate") or 0) * figs["requests"]
            release = release or baseline_release(s)
    card(
        "requests",
        "Requests",
        requests,
        "",
        baseline=base_requests or None,
        release=release,
    )
    crit = next((c for s in ran.values() if (c := _criterion(s, "http_req_failed"))), None)
    card(
        "error_rate",
        "Error rate",
        failed / requests if requests else None,
        "%",
        target=crit and target_text(crit),
        baseline=base_failed / base_requests if base_requests else None,
        release=release,
    )
    # the stages whose response time the plan judges (a WebSocket stage's few logins are not
    # what its p95 is about), else every stage that sent requests
    judged = [n for n, s in ran.items() if _criterion(s, "http_req_duration")] or list(ran)
    for stat in ("p95", "p99"):
        values = {
            n: ran[n]["summary"].get(f"{stat}_ms")
            for n in judged
            if ran[n]["summary"].get(f"{stat}_ms") is not None and ran[n]["summary"].get("requests")
        }
        if not values:
            continue
        top = max(values, key=lambda n: values[n])
        crit = _criterion(ran[top], "http_req_duration", stat)
        base, release = base_of(top, f"{stat}_ms")
        card(
            stat,
            f"{stat} response time ({top})",
            values[top],
            "ms",
            target=crit and target_text(crit),
            baseline=base,
            release=release,
            stage=top,
        )
    return cards


def log_links(index: Mapping[str, Any] | None) -> list[str]:
    """The collected logs' paths relative to the run root (``logs/index.json``)."""
    if not index:
        return []
    paths: list[str] = []
    for value in index.values():
        items: Sequence[Any] = value if isinstance(value, list) else [value]
        paths += [str(p) for p in items if isinstance(p, str) and p.startswith("logs/")]
    return sorted(set(paths))
