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
from xml.etree import ElementTree as ET

from markdown_it import MarkdownIt

from loadgate.report.charts import line_chart
from loadgate.run.artifacts import RunArtifacts
from loadgate.run.records import Report, ReportStage

STATUS = {
    "pass": "✅ PASS",
    "investigate": "⚠️ INVESTIGATE",
    "inconclusive": "❔ INCONCLUSIVE",
    "invalid": "🚫 INVALID",
    "rollback": "🛑 ROLLBACK",
    "error": "❗ ERROR",
    "dry_run": "🧪 DRY RUN",
    "skipped": "⏭️ skipped",
    "not run": "⏭️ not run",
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


def _ok(flag: bool | None) -> str:
    return "⏳" if flag is None else ("✅" if flag else "❌")


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "%":
        return f"{value * 100:.2f}%"
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return f"{int(value):,}{unit}"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
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


def criterion_row(c: Mapping[str, Any]) -> list[str]:
    unit = c.get("unit", "")
    target = f"{c.get('op', '')} {fmt(c.get('threshold'), unit)}"
    return [
        c.get("description") or c.get("id", ""),
        target,
        fmt(c.get("observed"), unit),
        _ok(None if c.get("observed") is None else not c.get("breached")),
    ]


def render_markdown(record: Mapping[str, Any]) -> str:
    verdict = record.get("verdict", "error")
    stages: Mapping[str, Mapping[str, Any]] = record.get("stages", {})
    out = [
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
        f"**Verdict:** {md_inline(STATUS.get(verdict, verdict))}",
        "",
    ]
    out += [f"- {md_block(reason)}" for reason in record.get("reasons", [])] or [
        "- every gate passed"
    ]
    out += ["", "## 1. Acceptance Criteria", ""]
    acceptance = [
        criterion_row(c)
        for s in stages.values()
        for c in s.get("criteria", [])
        if c.get("level") == "acceptance"
    ]
    out.append(
        _table(["Criteria", "Target", "Measured", "Status"], acceptance)
        if acceptance
        else "_No stage ran: nothing was measured._"
    )
    out += ["", "## 2. Pre-Test Checklist", ""]
    for check in record.get("checklist", []):
        mark = "x" if check["status"] == "pass" else " "
        status = {"pass": "✅", "warn": "⚠️", "fail": "❌"}[check["status"]]
        # "**" next to a space would not be bold: the item is stripped
        item = md_inline(check["item"]).strip() or "—"
        evidence = md_inline(check["evidence"])
        out.append(f"- [{mark}] {status} **{item}**: {evidence}")
    out += ["", "## 3. Results by Stage", ""]
    for number, (name, stage) in enumerate(stages.items(), start=1):
        out += _stage_section(number, name, stage)
    out += ["## 4. Resource Utilization", ""]
    resources = [
        [stage_name, metric, *(fmt(v.get(k), v.get("unit", "")) for k in ("max", "avg", "last"))]
        for stage_name, stage in stages.items()
        for metric, v in sorted((stage.get("system") or {}).items())
    ]
    out.append(
        _table(["Stage", "Metric", "Max", "Average", "Last"], resources)
        if resources
        else "_No system metrics were measured._"
    )
    out += ["", "## 5. Performance Under Load", ""]
    levels = [
        [
            name,
            fmt(lv.get("users")),
            fmt(lv.get("p95_ms"), "ms"),
            fmt(lv.get("error_rate"), "%"),
            fmt(lv.get("cpu"), "%"),
            fmt(lv.get("memory"), "%"),
        ]
        for name, stage in stages.items()
        for lv in stage.get("load_levels", [])
    ]
    out.append(
        _table(["Stage", "Load Level", "Users", "p95 RT", "Error Rate", "CPU", "Memory"], levels)
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
    if record.get("dry_run_load"):
        out += ["", "## 9. Dry Run: Planned Load", ""]
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
    return "\n".join(out)


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f} req/s"


def _attempts_section(stage: Mapping[str, Any]) -> list[str]:
    attempts = stage.get("attempts") or []
    if not attempts:
        return []
    rows = [
        [a.get("attempt"), STATUS.get(a.get("verdict"), a.get("verdict")), fmt(a.get("requests"))]
        for a in attempts
    ]
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
                    STATUS.get(fig.get("verdict"), fig.get("verdict")),
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


def _stage_section(number: int, name: str, stage: Mapping[str, Any]) -> list[str]:
    title = STAGE_TITLES.get(name, name)
    summary = stage.get("summary") or {}
    gate = STATUS.get(str(stage.get("verdict")), "—")
    out = [f"### 3.{number} {md_heading(title)}", "", f"**Gate:** {md_inline(gate)}", ""]
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
    rows = [
        ["Max concurrent users", fmt(summary.get("max_vus"))],
        ["Total requests", fmt(summary.get("requests"))],
        ["Requests per second", fmt(summary.get("rps"))],
        ["Error rate", fmt(summary.get("error_rate"), "%")],
        ["p50 response time", fmt(summary.get("p50_ms"), "ms")],
        ["p95 response time", fmt(summary.get("p95_ms"), "ms")],
        ["p99 response time", fmt(summary.get("p99_ms"), "ms")],
    ]
    ws = summary.get("ws") or {}
    if ws:
        rows += [
            ["Max WebSocket connections", fmt(ws.get("max_connections"))],
            ["Messages sent", fmt(ws.get("messages_sent"))],
            ["Messages received", fmt(ws.get("messages_received"))],
            ["WebSocket error rate", fmt(ws.get("error_rate"), "%")],
            ["Heartbeat RTT p95", fmt(ws.get("rtt_p95_ms"), "ms")],
            ["Heartbeat RTT p99", fmt(ws.get("rtt_p99_ms"), "ms")],
        ]
    expected = stage.get("expected") or {}
    rates = summary.get("rates") or {}
    if rates:
        rows += [
            ["Planned request rate (the plan's pacing)", _rate(rates.get("planned"))],
            ["Offered request rate", _rate(rates.get("offered"))],
            ["Achieved request rate", _rate(rates.get("achieved"))],
        ]
    out += [
        "",
        _table(
            ["Metric", "Measured", "Expected (plan)"],
            [[k, v, expected.get(k, "—")] for k, v in rows],
        ),
        "",
    ]
    out += _attempts_section(stage)
    out += _baseline_section(stage)
    by_name = summary.get("by_name") or {}
    if by_name:
        out += [
            _table(
                ["Request", "Requests", "Error rate", "p95", "p99"],
                [
                    [
                        n,
                        fmt(s.get("requests")),
                        fmt(s.get("error_rate"), "%"),
                        fmt(s.get("p95_ms"), "ms"),
                        fmt(s.get("p99_ms"), "ms"),
                    ]
                    for n, s in sorted(by_name.items())
                ],
            ),
            "",
        ]
    criteria = [c for c in stage.get("criteria", []) if c.get("level") != "acceptance"]
    if criteria:
        out += [
            _table(
                ["Criterion", "Level", "Threshold", "Observed", "Status"],
                [
                    [c.get("description") or c.get("id"), c.get("level"), *criterion_row(c)[1:]]
                    for c in criteria
                ],
            ),
            "",
        ]
    if summary.get("generator_saturated"):
        out += [
            "> ⚠️ The load generator saturated during this stage: it cannot vouch for "
            "these latencies.",
            "",
        ]
    return out


def render_charts(stages: Mapping[str, Mapping[str, Any]]) -> str:
    parts = []
    for name, stage in stages.items():
        series = stage.get("series") or {}
        t = series.get("t") or []
        if not t:
            continue
        markers = []
        if stage.get("aborted") and stage["aborted"].get("at_s") is not None:
            markers.append((stage["aborted"]["at_s"], "abort"))
        parts.append(f"<h3>{html.escape(STAGE_TITLES.get(name, name))}</h3>")
        for key, title, unit in (
            ("rps", "Requests per second", ""),
            ("p95_ms", "p95 response time", " ms"),
            ("errors", "Errors per second", ""),
            ("vus", "Active virtual users", ""),
        ):
            values = series.get(key) or []
            if values:
                parts.append(
                    line_chart(
                        title, {key: list(zip(t, values, strict=False))}, unit=unit, markers=markers
                    )
                )
    return "\n".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:2em auto;
padding:0 1em;color:#111827;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0;font-size:14px}
th,td{border:1px solid #d1d5db;padding:4px 8px;text-align:left}th{background:#f3f4f6}
code{background:#f3f4f6;padding:1px 4px;border-radius:3px}
svg{display:block;margin:.4em 0 1em}h1{font-size:1.6em}
"""


def render_html(markdown: str, charts: str, title: str) -> str:
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    if charts:
        body += f"<h2>Charts</h2>\n{charts}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
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


def report_json(record: Mapping[str, Any]) -> Report:
    """``report.json``: the record's verdicts, key figures and evidence, for CI systems (its
    schema: ``docs/schemas/report.schema.json``)."""
    stages = {}
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
            }
        )
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
        }
    )


def build_report(artifacts: RunArtifacts, record: Mapping[str, Any]) -> dict[str, str]:
    """Write the four report files; returns their paths. ``report.json`` is built first: a
    record it does not validate writes no report."""
    report = report_json(record)
    markdown = render_markdown(record)
    page = render_html(markdown, render_charts(record.get("stages", {})), record.get("title", ""))
    paths = {
        "markdown": artifacts.write_text("report.md", markdown),
        "html": artifacts.write_text("report.html", page),
        "json": artifacts.write_json("report.json", report.model_dump(mode="json")),
        "junit": artifacts.write_text("junit.xml", render_junit(record)),
    }
    return {k: str(v) for k, v in paths.items()}
