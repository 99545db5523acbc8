"""The report's charts (loadgate.report.charts, loadgate.report.series) from real stage runs
against the real reference service: a healthy run of the api and websocket stages (two shards
each), and an api stage of a release answering half its requests with a 5xx, stopped by an
abort. Each chart's SVG is read as a reader (and a screen reader) gets it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loadgate import pipeline
from loadgate.backends.local import run_stage_local
from loadgate.config.run import build_run_config
from loadgate.report import charts
from loadgate.report.series import read_stage
from loadgate.run import folder, gate
from loadgate.run.records import StageGate
from tests.support.helpers import reference_run

pytestmark = pytest.mark.slow
SVG = "{http://www.w3.org/2000/svg}"
COMMENT = re.compile(r"<!-- (.*?) -->", re.S)


@dataclass
class Gated:
    run: folder.Run
    gates: dict[str, StageGate]
    charts: dict[str, list[charts.Chart]]


def gated(
    svc: Any, root: Path, run_id: str, stages: list[str], faults: dict[str, Any] | None = None
) -> Gated:
    """The stages run and gated, their charts written; ``faults`` set after the seeding."""
    config = build_run_config(
        {
            **reference_run(),
            "target_url": svc.url,
            "release": "v1",
            "scale": 0.002,  # 20 users
            "time_scale": 0.006,  # the 44-minute API test in about 16 s
            "stages": stages,
            "shards": 2,
            "artifacts_root": str(root),
            "rollback": {"type": "command", "command": ["true"]},
        },
        allowlist=[],
    )
    run = folder.Run(pipeline.prepare(config, run_id))
    pipeline.seed(run, secret="charts-test")
    if faults:
        svc.set_faults(faults)
    gates = {}
    for stage in stages:
        run_stage_local(run, stage, lambda line: None)
        gates[stage] = gate.decide(run, stage)
    record = {"stages": {s: g.model_dump(mode="json") for s, g in gates.items()}}
    return Gated(run, gates, charts.write_charts(run.artifacts, record))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Gated]:
    from syncbridge.launcher import start_syncbridge

    tmp = tmp_path_factory.mktemp("charts")
    svc = start_syncbridge(tmp / "svc")
    try:
        healthy = gated(svc, tmp / "artifacts", "healthy", ["api", "websocket"])
        faulty = gated(svc, tmp / "artifacts", "faulty", ["api"], faults={"error_rate": 0.5})
        return {"healthy": healthy, "faulty": faulty}
    finally:
        svc.stop()


def texts(chart: charts.Chart) -> list[str]:
    """The chart's text as drawn (as paths: matplotlib notes each text in a comment)."""
    return [t.replace("&gt;", ">").replace("&lt;", "<") for t in COMMENT.findall(chart.svg)]


def y_labels_of(chart: charts.Chart) -> list[str]:
    """The drawn texts that read as a y axis's label with its unit."""
    unit = r"\((req/s|VUs|ms|errors/s|%|% of \w+)\)|\(ms\), log scale$|\(%\)$"
    drawn_title = chart.title.removeprefix(f"{chart.stage}: ")
    return [
        t for t in texts(chart) if re.search(unit, t) and "limit:" not in t and t != drawn_title
    ]


def all_charts(runs: dict[str, Gated]) -> list[charts.Chart]:
    return [c for g in runs.values() for cs in g.charts.values() for c in cs]


def test_each_stage_has_its_charts_written_next_to_the_report(runs) -> None:
    healthy = runs["healthy"]
    keys = {stage: [c.key for c in cs] for stage, cs in healthy.charts.items()}
    assert keys["api"] == ["requests", "latency", "errors", "cpu", "memory", "db-pool"]
    assert keys["websocket"][:1] == ["requests"]
    assert "websocket" in keys["websocket"] and "errors" in keys["websocket"]
    for chart in all_charts(runs):
        assert chart.file == f"charts/{chart.stage}-{chart.key}.svg"
    for gated_run in runs.values():
        for chart in [c for cs in gated_run.charts.values() for c in cs]:
            assert gated_run.run.artifacts.path(chart.file).read_text() == chart.svg


def test_every_chart_has_a_title_axes_with_units_and_an_accessible_name(runs) -> None:
    for chart in all_charts(runs):
        root = ET.fromstring(chart.svg)  # well-formed, one <svg> element
        assert root.tag == f"{SVG}svg"
        assert root.get("role") == "img"
        title = root.find(f"{SVG}title")
        assert title is not None and title.text == chart.title
        assert title.get("id") in (root.get("aria-labelledby") or "").split()
        desc = root.find(f"{SVG}desc")
        assert desc is not None and desc.text
        assert desc.get("id") == root.get("aria-describedby")
        assert "Axes: time into the stage (s); " in desc.text
        assert all(label in desc.text for label in y_labels_of(chart))
        drawn = texts(chart)
        assert chart.title.startswith(f"{chart.stage}: ")  # drawn without the stage's name
        assert chart.title.removeprefix(f"{chart.stage}: ") in drawn
        assert root.get("aria-label") == chart.title.removeprefix(f"{chart.stage}: ")
        assert "time into the stage (s)" in drawn
        assert y_labels_of(chart), (chart.key, drawn)
    api = {c.key: texts(c) for c in runs["healthy"].charts["api"]}
    assert "requests per second (req/s)" in api["requests"]
    assert "active users (VUs)" in api["requests"]  # on the same time axis
    assert {"p50", "p95", "p99"} <= set(api["latency"])
    assert any(t.startswith("response time (ms)") for t in api["latency"])
    assert {"4xx", "5xx", "timeouts", "connection errors"} <= set(api["errors"])
    ws = {c.key: texts(c) for c in runs["healthy"].charts["websocket"]}
    assert "open connections" in ws["websocket"] and "p95" in ws["websocket"]
    assert any(t.startswith("round trip (ms)") for t in ws["websocket"])


def test_the_plans_limits_are_drawn_where_a_criterion_sets_one(runs) -> None:
    api = {c.key: texts(c) for c in runs["healthy"].charts["api"]}
    assert "acceptance limit: p95 >= 500 ms" in api["latency"]
    assert "acceptance limit: p99 >= 1000 ms" in api["latency"]
    assert "rollback limit: rate > 5%" in api["errors"]
    assert "acceptance limit: p95 >= 80%" in api["cpu"]
    assert "rollback limit: avg > 95%" in api["memory"]
    assert "investigate limit: sustained > 80%" in api["db-pool"]
    ws = {c.key: texts(c) for c in runs["healthy"].charts["websocket"]}
    assert "rollback limit: rate > 5%" in ws["errors"]
    # the description names each limit's criterion
    latency = next(c for c in runs["healthy"].charts["api"] if c.key == "latency")
    assert "500 ms (api-p95)" in latency.svg and "1000 ms (api-p99)" in latency.svg
    # no limit where no criterion sets one (a relative one, against a baseline, is no line)
    assert not any("limit" in t for t in api["requests"])
    assert not any("limit" in t for t in ws["websocket"])


def test_an_abort_is_marked_on_every_chart_of_its_stage(runs) -> None:
    decided = runs["faulty"].gates["api"]
    assert decided.aborted is not None, decided.reasons
    marker = read_stage(runs["faulty"].run.artifacts.path("stages", "api"))
    assert marker is not None and marker.abort_s is not None and marker.abort_criterion
    mark = f"abort at {marker.abort_s:.1f} s"
    faulty = runs["faulty"].charts["api"]
    assert len(faulty) >= 5
    for chart in faulty:
        assert mark in texts(chart), chart.key
        assert (
            f"An abort fired {marker.abort_s:.1f} s into the stage ({marker.abort_criterion})"
            in (chart.svg)
        )
    for chart in [c for cs in runs["healthy"].charts.values() for c in cs]:
        assert not any(t.startswith("abort at") for t in texts(chart))
    errors = next(c for c in faulty if c.key == "errors")
    assert marker.errors["5xx"] and sum(marker.errors["5xx"]) > 0
    assert re.search(r"\b[1-9]\d* in all", errors.svg)


def test_the_series_counts_every_request_of_the_stage_once(runs) -> None:
    for name, gated_run in runs.items():
        for stage, decided in gated_run.gates.items():
            series = read_stage(gated_run.run.artifacts.path("stages", stage))
            assert series is not None and decided.summary is not None, (name, stage)
            assert sum(series.requests) == decided.summary.requests
            assert 0 < max(series.vus) <= 20
            assert series.t == sorted(series.t) and len(set(series.t)) == len(series.t)


def test_no_chart_reaches_outside_its_file(runs) -> None:
    every = all_charts(runs)
    for chart in every:
        svg = chart.svg
        assert "<script" not in svg and "@font-face" not in svg and "@import" not in svg
        assert "<image" not in svg and "foreignObject" not in svg and "<metadata" not in svg
        assert not re.search(r"href=\"(?!#)", svg), chart.key  # only links within the chart
        assert not re.search(r"url\((?!#)", svg), chart.key
        assert set(re.findall(r"https?://[^\s\"']+", svg)) <= {
            "http://www.w3.org/2000/svg",  # the namespaces, declared, never fetched
            "http://www.w3.org/1999/xlink",
        }
        assert "<text" not in svg  # text is drawn as paths: no font is named
    # one page holds every chart of the run: no id twice
    for gated_run in runs.values():
        svgs = [c.svg for cs in gated_run.charts.values() for c in cs]
        ids = Counter(i for svg in svgs for i in re.findall(r'\bid="([^"]+)"', svg))
        assert ids and max(ids.values()) == 1, ids.most_common(3)


def test_report_md_links_the_charts_and_the_html_holds_them(runs) -> None:
    api = runs["healthy"].charts["api"]
    md = charts.markdown_images(api)
    assert md.splitlines()[0] == "![api: Requests per second and active users]" + (
        "(charts/api-requests.svg)"
    )
    assert md.count("![") == len(api) and md.count("\n\n") == len(api) - 1
    page = charts.charts_html(api)
    assert page.count("<figure") == len(api) and page.count("<svg") == len(api)


def test_a_stage_name_becomes_a_safe_file_name_and_escaped_text() -> None:
    from loadgate.report.series import StageSeries

    series = StageSeries(
        t=[1.0, 2.0],
        vus=[1, 2],
        requests=[3, 4],
        latency_ms={50: [1.0, 2.0], 95: [2.0, 3.0], 99: [3.0, 4.0]},
        errors={"5xx": [0, 1]},
        ws_open=[0, 0],
        ws_sent=[0, 0],
        has_http=True,
    )
    name = "../x](http://e.x/a.png) <b>"
    made = charts.stage_charts(name, series)
    assert made and all(re.fullmatch(r"charts/[a-z0-9-]+\.svg", c.file) for c in made)
    for chart in made:
        root = ET.fromstring(chart.svg)
        title = root.find(f"{SVG}title")
        assert title is not None and title.text == chart.title and "<b>" not in chart.svg
        assert name not in str(root.attrib) and "e.x" not in " ".join(texts(chart))
    md = charts.markdown_images(made[:1])
    assert "](http" not in md and md.endswith(f"]({made[0].file})")


def test_a_rerun_stage_is_charted_from_its_last_attempt(runs, tmp_path) -> None:
    import shutil

    healthy = runs["healthy"]
    source = Path(str(healthy.run.artifacts.path("stages", "api")))
    root = tmp_path / "rerun"
    (root / "stages" / "api").mkdir(parents=True)  # the first attempt left nothing readable
    shutil.copytree(source, root / "stages" / "api" / "attempt-2")
    stage = healthy.gates["api"].model_dump(mode="json") | {"attempt": 2}
    drawn = charts.report_charts(root, {"stages": {"api": stage}})
    assert [c.key for c in drawn["api"]] == [c.key for c in healthy.charts["api"]]
    for chart in drawn["api"]:
        assert "attempt 2; its gate decided on every attempt" in chart.svg
    assert not any("attempt 2" in c.svg for c in healthy.charts["api"])


def test_every_text_of_a_full_scale_stage_fits_its_chart(monkeypatch) -> None:
    """The charts have fixed margins (not a layout engine): at the plan's full scale (six-digit
    requests per second and WebSocket messages, five-digit users, 95 s latencies, an abort, a
    legend of two rows) everything drawn still lies inside the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from loadgate.report.series import StageSeries

    n = 60
    series = StageSeries(
        t=[float(i + 1) for i in range(n)],
        vus=[10_000] * n,
        requests=[250_000 + i for i in range(n)],
        latency_ms={50: [180.0] * n, 95: [12_000.0] * n, 99: [95_000.0] * n},
        errors={"4xx": [12_000] * n, "5xx": [3] * n, "timeouts": [0] * n, "connection": [1] * n},
        ws_open=[100_000] * n,
        ws_sent=[400_000] * n,
        rtt_ms={95: [900.0] * n, 99: [4_000.0] * n},
        system={m: [0.9] * n for m, *_ in charts.SYSTEM},
        abort_s=42.5,
        abort_criterion="api-error-rate",
        has_http=True,
        has_ws=True,
    )
    figures: list[Any] = []
    to_svg = charts.to_svg

    def capture(fig: Any, *args: Any) -> str:
        figures.append(fig)
        return to_svg(fig, *args)

    monkeypatch.setattr(charts, "to_svg", capture)
    drawn = charts.stage_charts("api", series)
    assert len(figures) == len(drawn) >= 6
    for fig, chart in zip(figures, drawn, strict=True):
        FigureCanvasAgg(fig)
        fig.canvas.draw()
        inside = fig.get_tightbbox(fig.canvas.get_renderer())  # inches, what was drawn
        width, height = fig.get_size_inches()
        assert inside.x0 >= 0 and inside.y0 >= 0, (chart.title, inside)
        assert inside.x1 <= width and inside.y1 <= height, (chart.title, inside)
