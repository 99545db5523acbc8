"""The run's report, shaped like the user's own load-test report, with measured values.

``build_report`` writes four files under the run root: ``report.md``, a self-contained
``report.html`` (the same text plus SVG charts), ``report.json`` (the machine-readable verdict)
and ``junit.xml`` (one test case per criterion, for CI systems).

Input is the run's record: the checklist, one gate result per stage (see ``loadgate.run.gate``), the
rollback outcome and the timeline. Nothing in it is a secret.

Much of the record's text comes from a trigger, a plan or the target (the release, the target
URL, stage, criterion and request names, reasons, evidence, timeline events, the health the
target reported): none of it may become Markdown or HTML. Every such string is escaped where it
is written (:func:`md_inline` inside a line, :func:`md_block` where a line's block starts,
:func:`md_code` in a code span; table cells are escaped by :func:`_table` unless they are
:class:`Md`, Markdown this module wrote), so ``![x](https://…)`` in a release name is shown as
typed and fetches nothing, and the HTML holds no element or attribute from such a string.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

import yaml
from markdown_it import MarkdownIt

from loadgate.plan import PlanError
from loadgate.plan.load import plan_from_data
from loadgate.plan.model import Plan
from loadgate.report import charts as charts_module
from loadgate.report import figures
from loadgate.run.artifacts import RunArtifacts
from loadgate.run.records import Report, ReportStage

# Status as text, never an emoji alone (a browser without an emoji font shows empty boxes): in
# Markdown a bold word, in HTML a coloured badge with the same word (readable in print, in grey
# and by a screen reader). The run's and a gate's outcomes are loadgate.verdict.outcomes.Verdict.
STATUS = {
    "pass": "PASS",
    "investigate": "INVESTIGATE",
    "inconclusive": "INCONCLUSIVE",
    "invalid": "INVALID",
    "rollback": "ROLLBACK",
    "error": "ERROR",
    "dry_run": "DRY RUN",
    "skipped": "SKIPPED",
    "not run": "NOT RUN",
}
# the other statuses the report shows: a criterion's, a checklist item's, a load level's
WORDS = {
    "met": "MET",
    "not met": "NOT MET",
    "no data": "NO DATA",
    "too few samples": "TOO FEW SAMPLES",
    "unsure": "UNSURE",
    "no limit": "NO LIMIT",
    "ok": "OK",
    "warn": "WARN",
    "fail": "FAIL",
}
# badge word → its colour class (text and background of at least 4.5:1 contrast)
BADGE_CLASS = {
    "PASS": "good",
    "MET": "good",
    "OK": "good",
    "INVESTIGATE": "warn",
    "WARN": "warn",
    "UNSURE": "warn",
    "TOO FEW SAMPLES": "warn",
    "INCONCLUSIVE": "unsure",
    "INVALID": "invalid",
    "ROLLBACK": "bad",
    "ERROR": "bad",
    "NOT MET": "bad",
    "FAIL": "bad",
    "DRY RUN": "neutral",
    "SKIPPED": "neutral",
    "NOT RUN": "neutral",
    "NO DATA": "neutral",
    "NO LIMIT": "neutral",
}
STAGE_TITLES = {
    "api": "API Load Test",
    "websocket": "WebSocket Load Test",
    "session": "Session State Management",
}


class Md(str):
    """Markdown this module wrote (not escaped again in a table cell)."""


# inline Markdown: code spans, emphasis, links and images, autolinks and raw HTML, escapes,
# entity references; a "_" between two letters or digits opens and closes nothing, so
# error_rate stays as it is
_INLINE = re.compile(
    r"[\\`*\[<|]|(?<![^\W_])_|_(?![^\W_])|&(?=#?[0-9A-Za-z]+;)",
)
# what opens a block at the start of a line (or of a list item): a heading, a quote, a list
# item, a thematic break, a fence (``*``, ``_``, backticks, ``<`` and ``|`` are escaped inline)
_BLOCK_START = re.compile(r"^(?:#{1,6}(?=[ \t]|$)|>|[-+](?=[ \t]|$)|~{3,}|(?:-[ \t]*){3,}$)")
_ORDERED = re.compile(r"^\d{1,9}(?=[.)](?:[ \t]|$))")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


def md_inline(value: Any) -> str:
    """``value`` as literal text inside a line of Markdown: every character that could start
    inline markup is backslash-escaped and line breaks become spaces. Rendered, it reads as
    typed."""
    text = _LINE_BREAKS.sub(" ", str(value))
    return _INLINE.sub(lambda m: "\\" + m.group(0), text)


def md_block(value: Any) -> str:
    """:func:`md_inline` for text that starts a block (a paragraph, or a list item after
    ``- ``): leading spaces (an indented code block) are dropped, and what would open a
    heading, a quote, a list, a thematic break or a fence is escaped."""
    text = md_inline(value).lstrip(" \t")
    if _BLOCK_START.match(text):
        return "\\" + text
    number = _ORDERED.match(text)
    if number:  # "1. " or "1) ": escape the dot
        return f"{text[: number.end()]}\\{text[number.end() :]}"
    return text


def md_heading(value: Any) -> str:
    """:func:`md_inline` for a heading's text (a trailing ``#`` would close the heading)."""
    return md_inline(value).replace("#", "\\#")


def md_code(value: Any) -> str:
    """``value`` in a code span: fenced by more backticks than any run it holds (inside a code
    span nothing is markup, and backslashes do not escape)."""
    text = _LINE_BREAKS.sub(" ", str(value))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if longest or text.startswith(" ") or text.endswith(" ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def badge(status: Any) -> Md:
    """A status as Markdown: its word in bold (a badge in the HTML)."""
    key = str(status)
    word = STATUS.get(key) or WORDS.get(key) or md_inline(key).upper()
    return Md(f"**{word}**")


def fmt(value: Any, unit: str = "") -> str:
    """A value for people: 1,234; 12.5 ms; 0.2% (a ratio as a percentage); no exponent."""
    if value is None:
        return "—"
    if unit in ("%", "ms"):
        return figures.with_unit(value, unit)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return figures.number(value) + unit
    return f"{value}{unit}"


def _table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A table; every cell is escaped (:func:`md_inline`) unless it is :class:`Md`."""

    def cell(value: Any) -> str:
        if isinstance(value, Md):
            return _LINE_BREAKS.sub(" ", value)
        return md_inline(value)

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# a target loadgate wrote from numbers ("< 1%", "≥ 20", "~750", "< 1,000 ms"): nothing in it
# is Markdown ("<" before a space opens no tag), so it is shown as written, not escaped
_TARGET_TEXT = re.compile(r"(?:(?:[<>≤≥=≠] )?~?[0-9][0-9,.]*(?: ms|%)?|—)")


def target_cell(text: str) -> str:
    """A target for a table cell: as written when it is loadgate's own figure, else escaped."""
    return Md(text) if _TARGET_TEXT.fullmatch(text) else text


class Slot:
    """A place in the report that the HTML fills with more than Markdown holds (the summary's
    cards, a stage's charts); ``report.md`` has its tables instead."""

    def __init__(self, kind: str, stage: str = "") -> None:
        self.kind, self.stage = kind, stage


class MarkdownOnly(str):
    """Markdown that ``report.md`` holds and the HTML shows otherwise (in a :class:`Slot`)."""


Part = str | Slot


def load_plan_of(artifacts: RunArtifacts) -> Plan | None:
    """The run's plan as its shards ran it (``plan.yaml``), for the expected figures and the
    load levels' limits; None when the run root has none (a report built by hand)."""
    try:
        target = artifacts.path("plan.yaml")
        if not target.exists():
            return None
        return plan_from_data(yaml.safe_load(target.read_text()), "plan.yaml")
    except (PlanError, OSError, yaml.YAMLError, ValueError):
        return None


def document(record: Mapping[str, Any], plan: Plan | None = None) -> list[Part]:
    """The report in the seed's order: summary, acceptance, checklist, each stage's results,
    resources, performance by load level, history, timeline, rollback, the collected logs."""
    verdict = record.get("verdict", "error")
    stages: Mapping[str, Mapping[str, Any]] = record.get("stages", {})
    head = [
        f"# {md_heading(record.get('title', 'Load Test Report'))}",
        "",
        f"**Report Date:** {md_inline(record.get('ended_at') or datetime.now(UTC).isoformat())}  ",
        f"**Release:** {md_inline(record.get('release') or '—')}  ",
        f"**Target:** {md_inline(record.get('target', '—'))}  ",
        f"**Plan:** {md_inline(record.get('plan', '—'))} (scale {record.get('scale', 1):g}, "
        f"time scale {record.get('time_scale', 1):g})  ",
        f"**Run:** {md_code(record.get('run_id', '—'))}  ",
        "",
        "---",
        "",
        "## Executive Summary",
        "",
        f"**Verdict:** {badge(verdict)} — {md_inline(VERDICT_MEANS.get(str(verdict), ''))}",
        "",
    ]
    head += [f"- {md_block(reason)}" for reason in record.get("reasons", [])]
    parts: list[Part] = [
        "\n".join(head),
        MarkdownOnly("\n".join(_headline_table(figures.headline(record)))),
        Slot("cards"),  # the same figures as cards
    ]

    out = ["## 1. Acceptance Criteria", ""]
    rows = figures.acceptance_rows(record)
    if rows:
        releases = {r["baseline_release"] for r in rows if r["baseline_release"]}
        who = ", ".join(sorted(str(r) for r in releases)) or "—"
        out.append(
            _table(
                [
                    "Criterion",
                    "Stage",
                    "Target",
                    "Measured",
                    f"Baseline ({who})",
                    "Change",
                    "Status",
                ],
                [
                    [
                        r["label"],
                        r["stage"],
                        target_cell(r["target"]),
                        r["measured_text"],
                        r["baseline_text"],
                        r["change"],
                        badge(r["status"]),
                    ]
                    for r in rows
                ],
            )
        )
        described = [r for r in rows if r["description"]]
        if described:
            out += ["", "How each is measured:", ""]
            out += [
                f"- {md_block(r['label'])} ({md_inline(r['stage'])}): {md_inline(r['description'])}"
                for r in described
            ]
    else:
        out.append("_No stage ran: nothing was measured._")
    out += ["", "## 2. Pre-Test Checklist", ""]
    for check in record.get("checklist", []):
        mark = "x" if check["status"] == "pass" else " "
        word = {"pass": "ok", "warn": "warn", "fail": "fail"}.get(check["status"], "fail")
        item = md_inline(check["item"]).strip() or "—"
        evidence = md_inline(check["evidence"])
        out.append(f"- [{mark}] {badge(word)} {item}: {evidence}")
    out += ["", "## 3. Results by Stage", ""]
    parts.append("\n".join(out))
    for number, (name, stage) in enumerate(stages.items(), start=1):
        parts.append("\n".join(_stage_section(number, name, stage, record, plan)))
        parts.append(Slot("charts", name))
    out = ["## 4. Resource Utilization", ""]
    limits = {
        (r["stage"], c.get("metric")): figures.target_text(c)
        for r in [{"stage": n} for n in stages]
        for c in stages[r["stage"]].get("criteria", [])
        if c.get("level") == "acceptance"
    }
    resources = [
        [
            stage_name,
            figures.metric_label(metric),
            *(fmt(v.get(k), v.get("unit", "")) for k in ("max", "avg", "last")),
            target_cell(limits.get((stage_name, metric), "—")),
        ]
        for stage_name, stage in stages.items()
        for metric, v in sorted((stage.get("system") or {}).items())
    ]
    out.append(
        _table(["Stage", "Metric", "Max", "Average", "Last", "Target"], resources)
        if resources
        else "_No system metrics were measured._"
    )
    out += ["", "## 5. Performance Under Load", ""]
    levels = [
        row for name, stage in stages.items() for row in figures.level_rows(plan, name, stage)
    ]
    out.append(
        _table(
            [
                "Stage",
                "Load Level",
                "Users",
                "Seconds",
                "p95 RT",
                "p95 limit",
                "Error Rate",
                "Error-rate limit",
                "CPU",
                "Memory",
                "Status",
            ],
            [
                [
                    lv["stage"],
                    lv["level"],
                    fmt(lv["users"]),
                    fmt(lv["seconds"]),
                    fmt(lv["p95_ms"], "ms"),
                    target_cell(
                        "—" if lv["p95_limit_ms"] is None else f"< {fmt(lv['p95_limit_ms'], 'ms')}"
                    ),
                    fmt(lv["error_rate"], "%"),
                    target_cell(
                        "—"
                        if lv["error_rate_limit"] is None
                        else f"< {fmt(lv['error_rate_limit'], '%')}"
                    ),
                    fmt(lv["cpu"], "%"),
                    fmt(lv["memory"], "%"),
                    badge(lv["status"]),
                ]
                for lv in levels
            ],
        )
        if levels
        else "_No load levels were reached._"
    )
    out += ["", "## 6. Release History", ""]
    out += _history_section(record)
    out += ["", "## 7. Gate Timeline", ""]
    out.append(
        _table(
            ["Time", "Event"],
            [[e.get("at", ""), e.get("event", "")] for e in record.get("timeline", [])],
        )
    )
    out += ["", "## 8. Rollback", ""]
    rollback = record.get("rollback")
    if rollback:
        outcome, action = md_inline(rollback.get("outcome")), md_inline(rollback.get("action"))
        out.append(f"**Outcome:** {outcome} (action: {action})  ")
        health = rollback.get("health") or {}
        out.append(f"**Health after:** {md_inline(health)}  ")
    else:
        out.append("No rollback was needed." if verdict != "rollback" else "Rollback did not run.")
    out += ["", "## 9. Collected Logs", ""]
    logs = record.get("logs") or []
    out += [f"- [{md_inline(p)}]({quote(p)})" for p in logs] or [
        "_No logs were collected for this run._"
    ]
    if record.get("dry_run_load"):
        out += ["", "## 10. Dry Run: Planned Load", ""]
        out.append(
            _table(
                ["Stage", "Scenario", "Shard", "Peak VUs", "Duration"],
                [
                    [
                        r["stage"],
                        r["scenario"],
                        r["shard"],
                        fmt(r["peak_vus"]),
                        f"{r['duration_s']:.0f} s",
                    ]
                    for r in record["dry_run_load"]
                ],
            )
        )
    out += ["", "---", "", f"_Generated by loadgate at {datetime.now(UTC).isoformat()}._", ""]
    parts.append("\n".join(out))
    return parts


VERDICT_MEANS = {
    "pass": "every gate passed: the release stays.",
    "investigate": (
        "the release stays, but a criterion or a comparison with the baseline needs a look."
    ),
    "inconclusive": (
        "too little evidence to decide, even after a re-run: the release stays, unvouched."
    ),
    "invalid": "the test cannot vouch for its own numbers: nothing is said about the release.",
    "error": "a stage gave no usable results.",
    "rollback": "an immediate-rollback criterion was breached: the release was rolled back.",
    "dry_run": "nothing was sent: the planned load is listed below.",
}


def _headline_table(cards: Sequence[Mapping[str, Any]]) -> list[str]:
    if not cards:
        return []
    return [
        _table(
            ["Headline", "This run", "Target", "Baseline", "Change"],
            [
                [
                    c["label"],
                    c["text"],
                    target_cell(c["target"] or "—"),
                    "—"
                    if c["baseline_text"] is None
                    else f"{c['baseline_text']} ({c['baseline_release'] or 'baseline'})",
                    c["change"] or "—",
                ]
                for c in cards
            ],
        )
    ]


def render_markdown(record: Mapping[str, Any], plan: Plan | None = None) -> str:
    return "\n\n".join(p for p in document(record, plan) if isinstance(p, str))


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{figures.number(value)} req/s"


def _attempts_section(stage: Mapping[str, Any]) -> list[str]:
    attempts = stage.get("attempts") or []
    if not attempts:
        return []
    rows = [[a.get("attempt"), badge(a.get("verdict")), fmt(a.get("requests"))] for a in attempts]
    return [
        "The first attempt was inconclusive: the stage ran once more and was decided on both "
        "attempts' evidence.",
        "",
        _table(["Attempt", "Verdict", "Requests (pooled)"], rows),
        "",
    ]


def _baseline_section(stage: Mapping[str, Any]) -> list[str]:
    base = stage.get("baseline") or {}
    comparisons = base.get("comparisons") or []
    if not base.get("run_id"):
        return ["_No baseline: no earlier passing run of this target, plan and scale._", ""]
    who = base.get("release") or base.get("run_id")

    def value(c: Mapping[str, Any], side: str) -> str:
        unit = {"ms": "ms", "rate": "%"}.get(c.get("unit", ""), "")
        v = c.get(f"{side}_value")
        return fmt(v, unit) if unit else ("—" if v is None else f"{v:.2f}")

    rows = [
        [
            c.get("text"),
            value(c, "baseline"),
            value(c, "current"),
            c.get("outcome", "").replace("_", " "),
        ]
        for c in comparisons
        if c.get("scope") == "all" or c.get("outcome") in ("regression", "inconclusive")
    ]
    header = ["Change (confidence interval)", str(who), "This release", "Outcome"]
    undecided = [*(base.get("thin_baseline") or []), *(base.get("noisy") or [])]
    return [
        f"Compared with {md_block(who)} ({md_code(base.get('run_id'))}), from both runs' seconds "
        f"({len(comparisons)} comparisons; per-request ones shown when not clear):",
        "",
        _table(header, rows) if rows else "_None._",
        "",
        *(["Undecided, and not held against the release:", ""] if undecided else []),
        *[f"- {md_block(line)}" for line in undecided],
        *([""] if undecided else []),
    ]


def _history_section(record: Mapping[str, Any]) -> list[str]:
    """The trend over the last releases of this target and plan, this run last."""
    rows = []
    for entry in record.get("history", []):
        for stage, fig in sorted((entry.get("stages") or {}).items()):
            this = entry.get("run_id") == record.get("run_id")
            mark = "**this run** " if this else ""
            rows.append(
                [
                    Md(f"{mark}{md_inline(entry.get('release') or '—')}"),
                    stage,
                    badge(fig.get("verdict")),
                    fmt(fig.get("p95_ms"), "ms"),
                    fmt(fig.get("error_rate"), "%"),
                    _rate(fig.get("achieved_rps")),
                ]
            )
    if not rows:
        return ["_No earlier release of this target and plan was gated._"]
    return [
        _table(["Release", "Stage", "Verdict", "p95", "Error rate", "Throughput"], rows),
    ]


def _measured_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("Max concurrent users", fmt(summary.get("max_vus"))),
        ("Total requests", fmt(summary.get("requests"))),
        ("Requests per second", fmt(summary.get("rps"))),
        ("Error rate", fmt(summary.get("error_rate"), "%")),
        ("p50 response time", fmt(summary.get("p50_ms"), "ms")),
        ("p95 response time", fmt(summary.get("p95_ms"), "ms")),
        ("p99 response time", fmt(summary.get("p99_ms"), "ms")),
    ]
    ws = summary.get("ws") or {}
    if ws.get("connects") or ws.get("max_connections") or ws.get("messages_sent"):
        rows += [
            ("Max WebSocket connections", fmt(ws.get("max_connections"))),
            ("Messages sent", fmt(ws.get("messages_sent"))),
            ("Messages received", fmt(ws.get("messages_received"))),
            ("WebSocket error rate", fmt(ws.get("error_rate"), "%")),
            ("Heartbeat RTT p95", fmt(ws.get("rtt_p95_ms"), "ms")),
            ("Heartbeat RTT p99", fmt(ws.get("rtt_p99_ms"), "ms")),
        ]
    rates = summary.get("rates") or {}
    if rates:
        rows += [
            ("Planned request rate (the plan's pacing)", _rate(rates.get("planned"))),
            ("Offered request rate", _rate(rates.get("offered"))),
            ("Achieved request rate", _rate(rates.get("achieved"))),
        ]
    return rows


def _stage_section(
    number: int,
    name: str,
    stage: Mapping[str, Any],
    record: Mapping[str, Any],
    plan: Plan | None,
) -> list[str]:
    title = STAGE_TITLES.get(name, name)
    summary = stage.get("summary") or {}
    out = [
        f"### 3.{number} {md_heading(title)}",
        "",
        f"**Gate:** {badge(stage.get('verdict'))}",
        "",
    ]
    if stage.get("aborted"):
        ab = stage["aborted"]
        out += [
            f"**Aborted** at {md_inline(fmt(ab.get('at_s')))} s by {md_code(ab.get('criterion'))} "
            f"(observed {md_inline(fmt(ab.get('observed')))})",
            "",
        ]
    out += [f"- {md_block(r)}" for r in stage.get("reasons", [])]
    if not summary:
        return [*out, "", "_Not run._", ""]
    scale, time_scale = record.get("scale", 1) or 1, record.get("time_scale", 1) or 1
    expected = figures.expected_rows(plan, name, stage, scale, time_scale)
    if expected:
        scaled = (
            f"the plan's, scaled to this run (scale {scale:g}, time scale {time_scale:g})"
            if scale != 1 or time_scale != 1
            else "the plan's"
        )
        out += [
            "",
            f"Expected figures: {scaled}.",
            "",
            _table(
                ["Metric", "Measured", "Expected", "Target"],
                [
                    [e["label"], e["measured_text"], e["expected_text"], target_cell(e["target"])]
                    for e in expected
                ],
            ),
            "",
        ]
        shown = {e["label"].lower() for e in expected}
        more = [row for row in _measured_rows(summary) if row[0].lower() not in shown]
        if more:
            out += [_table(["Also measured", "Measured"], more), ""]
    else:
        plan_text = stage.get("expected") or {}
        out += [
            "",
            _table(
                ["Metric", "Measured", "Expected (plan)"],
                [[k, v, plan_text.get(k, "—")] for k, v in _measured_rows(summary)],
            ),
            "",
        ]
    out += _attempts_section(stage)
    out += _baseline_section(stage)
    endpoints = figures.endpoint_rows(record, name, stage)
    if endpoints:
        who = figures.baseline_release(stage) or "baseline"
        out += [
            _table(
                [
                    "Request",
                    "Requests",
                    "Errors",
                    "Error rate",
                    "p50",
                    "p95",
                    "p99",
                    f"p95 vs {who}",
                ],
                [
                    [
                        e["request"],
                        fmt(e["requests"]),
                        fmt(e["errors"]),
                        fmt(e["error_rate"], "%"),
                        fmt(e["p50_ms"], "ms"),
                        fmt(e["p95_ms"], "ms"),
                        fmt(e["p99_ms"], "ms"),
                        e["p95_change"],
                    ]
                    for e in endpoints
                ],
            ),
            "",
        ]
    criteria = [c for c in stage.get("criteria", []) if c.get("level") != "acceptance"]
    if criteria:
        out += [
            _table(
                ["Criterion", "Level", "Target", "Observed", "Status"],
                [
                    [
                        c.get("description") or f"{figures.criterion_label(c)} ({c.get('id')})",
                        c.get("level"),
                        target_cell(figures.target_text(c)),
                        fmt(c.get("observed"), c.get("unit", "")),
                        badge(figures.status_of(c)),
                    ]
                    for c in criteria
                ],
            ),
            "",
        ]
    if summary.get("generator_saturated"):
        out += [
            "> **Warning:** the load generator saturated during this stage: it cannot vouch "
            "for these latencies.",
            "",
        ]
    return out


def stage_charts(name: str, record: Mapping[str, Any]) -> str:
    """The HTML of a stage's charts, shown in the stage's own section (after its tables): the
    inline SVG of the charts :func:`build_report` drew (``record["charts"]``, ``charts.py``)."""
    return charts_module.charts_html((record.get("charts") or {}).get(name, []))


def cards_html(cards: Sequence[Mapping[str, Any]]) -> str:
    """The summary's headline figures as cards (every string escaped)."""
    if not cards:
        return ""
    items = []
    for c in cards:
        notes = []
        if c.get("target"):
            notes.append(f"target {c['target']}")
        if c.get("baseline_text") is not None:
            who = c.get("baseline_release") or "baseline"
            notes.append(f"{who}: {c['baseline_text']} ({c.get('change') or '—'})")
        note = "".join(f'<span class="note">{html.escape(n)}</span>' for n in notes)
        items.append(
            f'<li class="card"><span class="card-label">{html.escape(c["label"])}</span>'
            f'<span class="card-value">{html.escape(c["text"])}</span>{note}</li>'
        )
    return f'<ul class="cards" aria-label="Headline figures">{"".join(items)}</ul>'


CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1040px;margin:2em auto;
padding:0 1em;color:#111827;line-height:1.45;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%;margin:.6em 0}
table{border-collapse:collapse;font-size:14px}
th,td{border:1px solid #d1d5db;padding:4px 8px;text-align:left;vertical-align:top;
overflow-wrap:normal}
th{background:#f3f4f6}
code{background:#f3f4f6;padding:1px 4px;border-radius:3px;word-break:break-all}
svg{display:block;margin:.4em 0 1em;max-width:100%;height:auto}h1{font-size:1.6em}
.badge{display:inline-block;padding:0 .45em;border:1px solid;border-radius:4px;font-size:.85em;
letter-spacing:.02em;white-space:nowrap}
.badge-good{background:#dcfce7;color:#14532d;border-color:#15803d}
.badge-warn{background:#fef3c7;color:#78350f;border-color:#b45309}
.badge-unsure{background:#dbeafe;color:#1e3a8a;border-color:#1d4ed8}
.badge-invalid{background:#ede9fe;color:#4c1d95;border-color:#6d28d9}
.badge-bad{background:#fee2e2;color:#7f1d1d;border-color:#b91c1c}
.badge-neutral{background:#f3f4f6;color:#374151;border-color:#6b7280}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:.6em;
list-style:none;padding:0;margin:.8em 0}
.card{border:1px solid #d1d5db;border-radius:6px;padding:.5em .7em;display:flex;
flex-direction:column}
.card-label{font-size:.85em;color:#374151}.card-value{font-size:1.4em;font-weight:600}
.note{font-size:.8em;color:#374151}
@media print{body{max-width:none;margin:0}.scroll{overflow:visible}
.badge{print-color-adjust:exact;-webkit-print-color-adjust:exact}
.card,table,svg{break-inside:avoid}}
"""
_BADGE = re.compile(
    "<strong>("
    + "|".join(re.escape(w) for w in sorted(BADGE_CLASS, key=len, reverse=True))
    + ")</strong>"
)


def _html_of(markdown: str) -> str:
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    body = _BADGE.sub(
        lambda m: f'<strong class="badge badge-{BADGE_CLASS[m.group(1)]}">{m.group(1)}</strong>',
        body,
    )
    # a wide table scrolls on its own on a narrow screen (focusable, so a keyboard can scroll it)
    return body.replace("<table>", '<div class="scroll" tabindex="0"><table>').replace(
        "</table>", "</table></div>"
    )


def render_html(
    parts: Sequence[Part], charts: str, title: str, record: Mapping[str, Any] | None = None
) -> str:
    record = record or {}
    stages: Mapping[str, Mapping[str, Any]] = record.get("stages", {})
    body = []
    for part in parts:
        if isinstance(part, MarkdownOnly):
            continue
        if isinstance(part, str):
            body.append(_html_of(part))
        elif part.kind == "cards":
            body.append(cards_html(figures.headline(record)))
        elif part.kind == "charts" and part.stage in stages:
            body.append(stage_charts(part.stage, record))
    html_body = "\n".join(b for b in body if b)
    if charts:
        html_body += f"<h2>Charts</h2>\n{charts}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>\n{html_body}\n</main></body></html>\n"
    )


def render_junit(record: Mapping[str, Any]) -> str:
    suites = ET.Element("testsuites", name="loadgate")
    for stage_name, stage in record.get("stages", {}).items():
        criteria = stage.get("criteria", [])
        suite = ET.SubElement(suites, "testsuite", name=stage_name, tests=str(len(criteria)))
        failures = 0
        for c in criteria:
            case = ET.SubElement(
                suite, "testcase", classname=f"{stage_name}.{c.get('level')}", name=c.get("id", "")
            )
            if c.get("observed") is None:
                ET.SubElement(case, "skipped", message="not measured")
            elif c.get("breached"):
                failures += 1
                ET.SubElement(
                    case,
                    "failure",
                    message=f"observed {c.get('observed')} {c.get('op')} {c.get('threshold')}",
                )
        suite.set("failures", str(failures))
    checklist = ET.SubElement(suites, "testsuite", name="checklist")
    for check in record.get("checklist", []):
        case = ET.SubElement(checklist, "testcase", classname="checklist", name=check["item"])
        if check["status"] == "fail":
            ET.SubElement(case, "failure", message=check["evidence"])
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def report_json(record: Mapping[str, Any], plan: Plan | None = None) -> Report:
    """``report.json``: the record's verdicts, key figures and evidence, for CI systems (its
    schema: ``docs/schemas/report.schema.json``). Every key it had stays; the report's figures
    (headline, acceptance rows, expected figures, endpoints, load levels, logs) are added."""
    stages = {}
    scale, time_scale = record.get("scale", 1) or 1, record.get("time_scale", 1) or 1
    for name, stage in record.get("stages", {}).items():
        summary = stage.get("summary") or {}
        stages[name] = ReportStage.model_validate(
            {
                "verdict": stage.get("verdict"),
                "requests": summary.get("requests"),
                "error_rate": summary.get("error_rate"),
                "p95_ms": summary.get("p95_ms"),
                "p99_ms": summary.get("p99_ms"),
                "aborted": stage.get("aborted"),
                "reasons": stage.get("reasons", []),
                "criteria": stage.get("criteria", []),
                "rates": {
                    k: v for k, v in (summary.get("rates") or {}).items() if k != "by_scenario"
                },
                "invalid": stage.get("invalid", []),
                "attempts": stage.get("attempts", []),
                "baseline": stage.get("baseline"),
                "p50_ms": summary.get("p50_ms"),
                "max_vus": summary.get("max_vus"),
                "max_connections": (summary.get("ws") or {}).get("max_connections"),
                "expected": [
                    {k: e[k] for k in ("label", "measured", "expected", "target", "scaled")}
                    for e in figures.expected_rows(plan, name, stage, scale, time_scale)
                ],
                "endpoints": figures.endpoint_rows(record, name, stage),
                "load_levels": [
                    {k: v for k, v in lv.items() if k != "stage"}
                    for lv in figures.level_rows(plan, name, stage)
                ],
            }
        )
    acceptance_keys = (
        "id", "label", "stage", "target", "measured", "baseline", "baseline_release",
        "change", "status", "unit",
    )  # fmt: skip
    card_keys = (
        "key", "label", "value", "unit", "target", "baseline", "baseline_release", "change",
        "stage",
    )  # fmt: skip
    return Report.model_validate(
        {
            "verdict": record.get("verdict"),
            "reasons": record.get("reasons", []),
            "release": record.get("release"),
            "target": record.get("target"),
            "run_id": record.get("run_id"),
            "dry_run": record.get("dry_run", False),
            "stages": stages,
            "checklist": record.get("checklist", []),
            "rollback": record.get("rollback"),
            "timeline": record.get("timeline", []),
            "history": record.get("history", []),
            "plan": record.get("plan"),
            "scale": record.get("scale"),
            "time_scale": record.get("time_scale"),
            "headline": [{k: c[k] for k in card_keys} for c in figures.headline(record)],
            "acceptance": [
                {k: r[k] for k in acceptance_keys} for r in figures.acceptance_rows(record)
            ],
            "logs": record.get("logs") or [],
        }
    )


def build_report(artifacts: RunArtifacts, record: Mapping[str, Any]) -> dict[str, str]:
    """Write the four report files; returns their paths. ``report.json`` is built first: a
    record it does not validate writes no report. The run root's ``plan.yaml`` gives the
    plan's expectations and load-level limits, its ``logs/index.json`` the collected logs."""
    plan = load_plan_of(artifacts)
    if "logs" not in record:
        try:
            index = artifacts.read_json("logs/index.json")
        except (OSError, ValueError):
            index = None
        record = {**record, "logs": figures.log_links(index)}
    report = report_json(record, plan)
    parts = document(record, plan)
    # each stage's charts: SVG files next to report.md (linked there), inline in report.html
    drawn = charts_module.write_charts(artifacts, record)
    markdown = "\n\n".join(
        p if isinstance(p, str) else charts_module.markdown_images(drawn[p.stage])
        for p in parts
        if isinstance(p, str) or (p.kind == "charts" and drawn.get(p.stage))
    )
    page = render_html(parts, "", record.get("title", ""), {**record, "charts": drawn})
    paths = {
        "markdown": artifacts.write_text("report.md", markdown),
        "html": artifacts.write_text("report.html", page),
        "json": artifacts.write_json("report.json", report.model_dump(mode="json")),
        "junit": artifacts.write_text("junit.xml", render_junit(record)),
    }
    return {k: str(v) for k, v in paths.items()}
