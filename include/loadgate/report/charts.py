"""The report's charts: each stage's seconds drawn with matplotlib as static SVG.

Per stage (:func:`stage_charts`): requests per second with the active users on the same time
axis; response time p50/p95/p99 with the plan's latency limits; errors per second by kind with
the error rate against the plan's rate limits; WebSocket connections with the round trip's
percentiles; the target's CPU, memory and database pool against their limits. The moment an
abort fired is marked on every chart of the stage.

Each chart is an SVG that stands alone: text drawn as paths (``svg.fonttype: path``: no font is
named or fetched), no script, no metadata, no link out of the file, ids prefixed per chart (one
page holds many), ``role="img"`` with an ``aria-label`` naming it, a ``<title>`` (the stage and
the chart) and a ``<desc>`` (what it shows, its limits, the abort, its axes and units).
:func:`write_charts` draws a report's charts (from the stage folders' windows, else from the
gates' series) and writes them as ``charts/<stage>-<chart>.svg`` next to ``report.md``, which
links them as images (:func:`markdown_images`); ``report.html`` holds the same SVG inline in
each stage's section (:func:`charts_html`).

matplotlib is imported when a chart is drawn, not with this module, and only through its
object-oriented API (a :class:`~matplotlib.figure.Figure` of its own, no pyplot, no global
backend: the SVG backend renders it, as the Agg backend would a raster).
"""

from __future__ import annotations

import hashlib
import html
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadgate.report.series import (
    WS_ERROR_KINDS,
    StageSeries,
    from_gate_series,
    read_stage,
    stage_folder,
)

CHARTS_DIR = "charts"
LEVEL_COLORS = {"rollback": "#b91c1c", "acceptance": "#c2410c", "investigate": "#6b7280"}
ABORT_COLOR = "#7f1d1d"
RC: dict[str, Any] = {
    "svg.fonttype": "path",  # text as paths: no font named, none fetched
    "svg.hashsalt": "loadgate",  # ids from the content, the same from one build to the next
    "font.size": 8.0,
    "axes.titlesize": 9.5,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "legend.fontsize": 7.0,
    "legend.framealpha": 0.85,
}
SYSTEM = (  # metric, chart key, title, what the percentage is of
    ("cpu_utilization", "cpu", "Target CPU", "CPU (% of limit)"),
    ("memory_utilization", "memory", "Target memory", "memory (% of limit)"),
    (
        "db_connection_utilization",
        "db-pool",
        "Target database pool",
        "connections in use (% of pool)",
    ),
)
LATENCY_METRICS = ("http_req_duration",)
# what a limit's label may draw (a record's strings come from a plan: only known words are drawn)
LEVELS = {"acceptance": "acceptance", "rollback": "rollback", "investigate": "investigate"}
STATS = {s: s for s in ("p50", "p90", "p95", "p99", "avg", "max", "min", "last", "rate")}
STATS["sustained"] = "sustained"
OPS = {o: o for o in (">", ">=", "<", "<=")}
RATE_METRICS = ("http_req_failed", "http_unavailable_rate")
TIME_LABEL = "time into the stage (s)"


@dataclass(frozen=True)
class Chart:
    """One chart of a stage: ``file`` relative to the report (``charts/…svg``)."""

    stage: str
    key: str
    title: str
    svg: str

    @property
    def file(self) -> str:
        return f"{CHARTS_DIR}/{_slug(self.stage)}-{self.key}.svg"


def _slug(name: str) -> str:
    """A file name part for a stage name (a plan's names are free text)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "stage"
    if slug != name:  # two names that slug alike stay apart
        slug += "-" + hashlib.sha256(name.encode()).hexdigest()[:6]
    return slug


@dataclass(frozen=True)
class Limit:
    """A criterion's threshold, as a chart draws it."""

    value: float
    label: str  # as drawn: loadgate's words and the value
    level: str
    criterion: str  # the criterion's id (a plan's string: in the description, never drawn)


def limits(
    criteria: Sequence[Mapping[str, Any]], metrics: Sequence[str], unit: str, scale: float = 1.0
) -> list[Limit]:
    """The absolute thresholds of the criteria on ``metrics`` in ``unit`` (relative ones,
    against a baseline, are no line on a chart), each once, times ``scale``."""
    out: dict[tuple[float, str], Limit] = {}
    for c in criteria:
        threshold = c.get("threshold")
        if c.get("metric") not in metrics or c.get("unit", "") != unit:
            continue
        if not isinstance(threshold, int | float) or c.get("relative_to"):
            continue
        value = float(threshold) * scale
        level = str(c.get("level", ""))
        words = [
            f"{LEVELS.get(level, '')} limit".strip(),
            STATS.get(str(c.get("stat") or ""), ""),
            OPS.get(str(c.get("op") or ""), ""),
            f"{value:g}{' ms' if unit == 'ms' else '%'}",
        ]
        label = " ".join(w for w in words if w).replace("limit ", "limit: ", 1)
        out.setdefault((value, label), Limit(value, label, level, str(c.get("id", ""))))
    return sorted(out.values(), key=lambda lim: lim.value)


def _style() -> Any:
    """The charts' matplotlib settings, for a ``with`` block (matplotlib imported here)."""
    import matplotlib

    return matplotlib.rc_context(RC)  # type: ignore[arg-type]  # RC's keys are rcParams names


# --- drawing ------------------------------------------------------------------------------------


FIGSIZE = (7.2, 3.2)  # inches
# The margins, in inches, for the charts' fixed parts: the y tick labels (up to 6 characters)
# and label left, the same right of a chart with a second y axis, the title above, the x tick
# labels and label below, then a row of legend per LEGEND_ROW. Fixed margins, not matplotlib's
# constrained layout: that layout measures every text and draws the figure twice, 40% of a
# report's chart time.
MARGIN_SIDE = 0.72
MARGIN_BARE = 0.22
MARGIN_TOP = 0.32
MARGIN_BOTTOM = 0.5
LEGEND_ROW = 0.2


def _figure() -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=FIGSIZE)


def _margins(fig: Any, legend_rows: int) -> None:
    """Place the chart's axes inside the fixed margins (a second y axis has its own right)."""
    width, height = FIGSIZE
    right = MARGIN_SIDE if len(fig.axes) > 1 else MARGIN_BARE
    bottom = MARGIN_BOTTOM + (LEGEND_ROW * legend_rows + 0.06 if legend_rows else 0.0)
    fig.subplots_adjust(
        left=MARGIN_SIDE / width,
        right=1 - right / width,
        top=1 - MARGIN_TOP / height,
        bottom=bottom / height,
    )


def _draw_limits(ax: Any, found: Sequence[Limit]) -> None:
    for lim in found:
        ax.axhline(
            lim.value,
            color=LEVEL_COLORS.get(lim.level, "#6b7280"),
            linestyle=(0, (6, 3)),
            linewidth=1.1,
            label=lim.label,
        )


def _draw_abort(axes: Sequence[Any], series: StageSeries) -> None:
    if series.abort_s is None:
        return
    label = f"abort at {series.abort_s:.1f} s"  # its criterion is in the description
    for i, ax in enumerate(axes):
        ax.axvline(
            series.abort_s,
            color=ABORT_COLOR,
            linestyle=(0, (2, 2)),
            linewidth=1.6,
            label=label if i == 0 else None,
        )


def _legend(*axes: Any) -> None:
    """One legend for the chart's axes, below the plot (it hides no line), and the axes
    placed in the margins that leaves (the last step of every chart)."""
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    rows = 0
    if handles:
        ncols = 2 if max(len(x) for x in labels) > 30 else 3
        rows = -(-len(handles) // ncols)
        axes[0].figure.legend(
            handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.01), ncols=ncols
        )
    _margins(axes[0].figure, rows)


def _finish(fig: Any, ax: Any, series: StageSeries, title: str) -> None:
    ax.set_title(title, loc="left")
    ax.set_xlabel(TIME_LABEL)
    ax.set_xlim(0, max([*series.t, *([series.abort_s] if series.abort_s else []), 1.0]))


def _ceiling(values: Sequence[float | None], found: Sequence[Limit]) -> float:
    top = max([v for v in values if v is not None] + [lim.value for lim in found] + [0.0])
    return top * 1.15 if top > 0 else 1.0


def _requests_chart(series: StageSeries, title: str) -> Any:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(series.t, series.requests, color="#2563eb", linewidth=1.3, label="requests/s")
    ax.set_ylabel("requests per second (req/s)")
    ax.set_ylim(0, _ceiling([float(v) for v in series.requests], []))
    users = ax.twinx()
    users.step(
        series.t, series.vus, where="post", color="#059669", linewidth=1.2, label="active users"
    )
    users.set_ylabel("active users (VUs)")
    users.set_ylim(0, _ceiling([float(v) for v in series.vus], []))
    users.grid(False)
    _draw_abort([ax, users], series)
    _finish(fig, ax, series, title)
    _legend(ax, users)
    return fig


def _percentile_lines(
    ax: Any, series: StageSeries, values: Mapping[int, Sequence[float | None]]
) -> list[float]:
    colors = {50: "#0891b2", 95: "#2563eb", 99: "#7c3aed"}
    seen: list[float] = []
    for p, ys in sorted(values.items()):
        ax.plot(
            series.t,
            [float("nan") if v is None else v for v in ys],
            color=colors.get(p, "#111827"),
            linewidth=1.2,
            marker="." if sum(v is not None for v in ys) < 3 else None,
            label=f"p{p}",
        )
        seen += [v for v in ys if v is not None]
    return seen


def _scale_for(ax: Any, seen: Sequence[float], found: Sequence[Limit], label: str) -> None:
    """A log axis when a limit lies far above what was measured (both stay readable)."""
    top = max(seen, default=0.0)
    highest = max((lim.value for lim in found), default=0.0)
    low = min((v for v in seen if v > 0), default=0.0)
    if highest and low and highest > 10 * top:
        ax.set_yscale("log")
        ax.set_ylim(low / 1.5, highest * 1.6)
        ax.set_ylabel(f"{label}, log scale")
    else:
        ax.set_ylim(0, _ceiling(list(seen), found))
        ax.set_ylabel(label)


def _latency_chart(series: StageSeries, title: str, found: Sequence[Limit]) -> Any:
    fig = _figure()
    ax = fig.add_subplot()
    seen = _percentile_lines(ax, series, series.latency_ms)
    _draw_limits(ax, found)
    _scale_for(ax, seen, found, "response time (ms)")
    _draw_abort([ax], series)
    _finish(fig, ax, series, title)
    _legend(ax)
    return fig


def _errors_chart(
    series: StageSeries, title: str, kinds: Sequence[str], found: Sequence[Limit]
) -> Any:
    fig = _figure()
    ax = fig.add_subplot()
    palette = ("#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#6b7280", "#db2777", "#65a30d")
    counts = [series.errors.get(kind) or [0] * len(series.t) for kind in kinds]
    # stacked areas, one path a kind (a bar a second would be thousands of elements)
    ax.stackplot(
        series.t,
        *counts,
        labels=list(kinds),
        colors=[palette[i % len(palette)] for i in range(len(kinds))],
        step="mid",
        linewidth=0,
    )
    bottom = [float(sum(c)) for c in zip(*counts, strict=True)] if counts else [0.0] * len(series.t)
    ax.set_ylabel("errors per second (errors/s)")
    ax.set_ylim(0, _ceiling(bottom, []))
    rate = ax.twinx()
    rate.grid(False)
    denominators = [r + w for r, w in zip(series.requests, series.ws_sent, strict=False)]
    rates = [
        100.0 * e / n if n else float("nan") for e, n in zip(bottom, denominators, strict=False)
    ]
    rate.plot(series.t, rates, color="#111827", linewidth=0.9, label="error rate")
    _draw_limits(rate, found)
    rate.set_ylabel("error rate that second (%)")
    shown = [r for r in rates if r == r]
    rate.set_ylim(0, max(_ceiling(shown, found), 1.0))
    _draw_abort([ax, rate], series)
    _finish(fig, ax, series, title)
    _legend(ax, rate)
    return fig


def _websocket_chart(series: StageSeries, title: str, found: Sequence[Limit]) -> Any:
    fig = _figure()
    ax = fig.add_subplot()
    ax.step(
        series.t,
        series.ws_open,
        where="post",
        color="#059669",
        linewidth=1.3,
        label="open connections",
    )
    ax.set_ylabel("open connections")
    ax.set_ylim(0, _ceiling([float(v) for v in series.ws_open], []))
    rtt = ax.twinx()
    rtt.grid(False)
    seen = _percentile_lines(rtt, series, series.rtt_ms)
    _draw_limits(rtt, found)
    _scale_for(rtt, seen, found, "round trip (ms)")
    _draw_abort([ax, rtt], series)
    _finish(fig, ax, series, title)
    _legend(ax, rtt)
    return fig


def _system_chart(
    series: StageSeries, metric: str, title: str, label: str, found: Sequence[Limit]
) -> Any:
    fig = _figure()
    ax = fig.add_subplot()
    values = [None if v is None else 100.0 * v for v in series.system[metric]]
    ax.plot(
        series.t,
        [float("nan") if v is None else v for v in values],
        color="#2563eb",
        linewidth=1.3,
        label=label.split(" (")[0],
    )
    _draw_limits(ax, found)
    ax.set_ylabel(label)
    ax.set_ylim(0, max(_ceiling(values, found), 5.0))
    _draw_abort([ax], series)
    _finish(fig, ax, series, title)
    _legend(ax)
    return fig


# --- SVG ----------------------------------------------------------------------------------------

_ID = re.compile(r'\bid="([^"]+)"')
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def to_svg(fig: Any, title: str, label: str, description: str, prefix: str) -> str:
    """The figure as a standalone, accessible SVG element (see the module's text): named by
    ``title`` (its ``<title>``), else by ``label`` (its ``aria-label``: loadgate's words)."""
    buf = io.StringIO()
    with _style():
        fig.savefig(
            buf,
            format="svg",
            metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
        )
    svg = _METADATA.sub("", _PROLOG.sub("", buf.getvalue()))
    ids = set(_ID.findall(svg))
    for old in sorted(ids, key=len, reverse=True):
        new = f"{prefix}-{old}"
        svg = svg.replace(f'id="{old}"', f'id="{new}"').replace(f"#{old})", f"#{new})")
        svg = svg.replace(f'href="#{old}"', f'href="#{new}"')
    head = (
        f'<svg role="img" aria-label="{html.escape(label, quote=True)}" '
        f'aria-labelledby="{prefix}-title" aria-describedby="{prefix}-desc" '
        'style="max-width:100%;height:auto"'
    )
    svg = svg.replace("<svg", head, 1)
    at = svg.index(">", svg.index("<svg")) + 1
    svg = (
        f'{svg[:at]}\n<title id="{prefix}-title">{html.escape(title)}</title>'
        f'\n<desc id="{prefix}-desc">{html.escape(description)}</desc>{svg[at:]}'
    )
    return svg.strip() + "\n"


def _render(
    fig: Any,
    stage: str,
    key: str,
    drawn: str,
    description: str,
    series: StageSeries,
    index: int,
) -> Chart:
    """The chart's SVG; its description ends with its axes (as a screen reader reads them)."""
    if series.abort_s is not None:
        description += f" An abort fired {series.abort_s:.1f} s into the stage"
        description += f" ({series.abort_criterion})." if series.abort_criterion else "."
    if series.attempt > 1:
        description += (
            f" These are the seconds of the stage's attempt {series.attempt}; its gate decided "
            "on every attempt's evidence."
        )
    axes = [fig.axes[0].get_xlabel(), *(a.get_ylabel() for a in fig.axes if a.get_ylabel())]
    description += f" Axes: {'; '.join(axes)}."
    with _style():
        title = f"{stage}: {drawn}"
        svg = to_svg(fig, title, drawn, description, f"lg-{index}-{key}")
    return Chart(stage=stage, key=key, title=title, svg=svg)


def stage_charts(
    stage: str, series: StageSeries, criteria: Sequence[Mapping[str, Any]] = (), index: int = 0
) -> list[Chart]:
    """A stage's charts, from its seconds and its criteria's limits; ``index``: the stage's
    place in the report (its charts' ids). What a chart draws is loadgate's own words and the
    figures: the stage's name, a criterion's id (strings from a plan) are in its ``<title>`` and
    ``<desc>`` as text, never drawn, in an id or in an attribute."""
    out: list[Chart] = []
    with _style():
        if series.has_http or any(series.vus):
            title = "Requests per second and active users"
            fig = _requests_chart(series, title)
            desc = (
                f"Requests per second (peak {max(series.requests, default=0)}) and active users "
                f"(peak {max(series.vus, default=0)}) over {series.t[-1]:.0f} s."
            )
            out.append(_render(fig, stage, "requests", title, desc, series, index))
        if series.has_http:
            found = limits(criteria, LATENCY_METRICS, "ms")
            title = "Response time p50, p95 and p99"
            fig = _latency_chart(series, title, found)
            desc = "Response time percentiles of each second, in milliseconds"
            desc += f", with the limits {_values(found, ' ms')}." if found else "."
            out.append(_render(fig, stage, "latency", title, desc, series, index))
        if series.has_http or series.has_ws:
            kinds = _error_kinds(series)
            metrics = (*RATE_METRICS, *(("ws_error_rate",) if series.has_ws else ()))
            found = limits(criteria, metrics, "%", scale=100.0)
            title = "Errors per second by kind"
            fig = _errors_chart(series, title, kinds, found)
            total = sum(sum(series.errors.get(k) or []) for k in kinds)
            desc = f"Errors of each second by kind ({', '.join(kinds)}): {total} in all"
            desc += f"; error rate limits {_values(found, '%')}." if found else "."
            out.append(_render(fig, stage, "errors", title, desc, series, index))
        if series.has_ws:
            found = limits(criteria, ("ws_rtt",), "ms")
            title = "WebSocket connections and round trip"
            fig = _websocket_chart(series, title, found)
            desc = (
                f"Open WebSocket connections (peak {max(series.ws_open, default=0)}) and the "
                "round trip's p50, p95 and p99 of each second, in milliseconds."
            )
            out.append(_render(fig, stage, "websocket", title, desc, series, index))
        for metric, key, name, label in SYSTEM:
            values = series.system.get(metric) or []
            if not any(v is not None for v in values):
                continue
            found = limits(criteria, (metric,), "%", scale=100.0)
            title = f"{name} ({label.split(' (')[1].rstrip(')')})"
            fig = _system_chart(series, metric, title, label, found)
            desc = f"{label} each second"
            desc += f", with the limits {_values(found, '%')}." if found else "."
            out.append(_render(fig, stage, key, title, desc, series, index))
    return out


def _error_kinds(series: StageSeries) -> list[str]:
    """The kinds the chart names: HTTP's four (a stage of HTTP load) and WebSocket's four (a
    stage with WebSockets) always, any other kind that occurred."""
    if not series.from_windows:
        return list(series.errors)
    named = []
    if series.has_http and not series.has_ws:
        named += ["4xx", "5xx", "timeouts", "connection errors"]
    if series.has_ws:
        named += list(WS_ERROR_KINDS.values())
    return named + [k for k in series.errors if k not in named and any(series.errors[k])]


def _values(found: Sequence[Limit], unit: str) -> str:
    """The limits' values, each once, for a chart's description."""
    return ", ".join(dict.fromkeys(f"{x.value:g}{unit} ({x.criterion})" for x in found))


# --- in the report ------------------------------------------------------------------------------


_PLAIN_NAME = re.compile(r"[\w.-]+")  # a stage's folder is read only under a plain name


def report_charts(root: Any, record: Mapping[str, Any]) -> dict[str, list[Chart]]:
    """Each stage's charts, from the shards' windows of its last attempt under the run root
    ``root`` (else from the series its gate kept)."""
    out: dict[str, list[Chart]] = {}
    for index, (name, stage) in enumerate((record.get("stages") or {}).items()):
        aborted = stage.get("aborted")
        attempt = int(stage.get("attempt") or 1)
        series = None
        if root is not None and _PLAIN_NAME.fullmatch(name) and name not in (".", ".."):
            try:
                series = read_stage(stage_folder(root, name, attempt), aborted)
                if series is not None:
                    series.attempt = attempt
            except (OSError, ValueError):  # a folder that cannot be read: the gate's series
                series = None
        if series is None:
            series = from_gate_series(stage.get("series") or {}, aborted)
        if series is not None and series.t:
            out[name] = stage_charts(name, series, stage.get("criteria") or [], index)
    return out


def write_charts(artifacts: Any, record: Mapping[str, Any]) -> dict[str, list[Chart]]:
    """:func:`report_charts`, each written as ``charts/<stage>-<chart>.svg`` in the run root."""
    charts = report_charts(artifacts.root, record)
    for stage_charts_ in charts.values():
        for chart in stage_charts_:
            artifacts.write_text(chart.file, chart.svg)
    return charts


_MD_ESCAPE = re.compile(r"([\\`*_\[\]<>&!()~|#])")  # what could open inline Markdown


def markdown_images(charts: Sequence[Chart]) -> str:
    """``report.md``'s lines for a stage's charts: each an image of its file, a paragraph of
    its own (the alt text is the chart's title, what could be markup escaped)."""
    lines = []
    for chart in charts:
        alt = _MD_ESCAPE.sub(r"\\\1", re.sub(r"[\r\n]+", " ", chart.title))
        lines.append(f"![{alt}]({chart.file})")
    return "\n\n".join(lines)


def charts_html(charts: Sequence[Chart]) -> str:
    """``report.html``'s figures for a stage's charts: each chart's SVG, inline."""
    return "\n".join(
        f'<figure class="chart" style="margin:1em 0">\n{chart.svg}</figure>' for chart in charts
    )
