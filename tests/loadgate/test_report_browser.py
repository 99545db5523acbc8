"""The report as a person opens it: Debian's Chromium (Playwright), offline, desktop and phone.

Two real gate runs (no Airflow, as ``test_gate.py`` makes them) against the real reference
service at a tiny scale: a healthy release (API and WebSocket stages), then a faulty one (half its
API requests fail) that the live criteria stop and the rollback undoes; each builds its report
as the DAG's ``build_report`` does. Each ``report.html`` is opened from its file at 1280 px and
390 px with every request but the file's own blocked, and checked for: no request leaving the
page, no horizontal overflow, every chart with a title and axes with units, the verdict as a
text badge, and no serious or critical accessibility violation found by axe-core (from npm:
``npm ci`` installs ``node_modules/axe-core``; without it that check is skipped, saying so).
Screenshots go to ``.test-artifacts/screenshots/`` (``report-<run>-<width>.png``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from loadgate import pipeline
from loadgate.backends.local import run_stage_local
from loadgate.config.run import build_run_config
from loadgate.notify import Notifier
from loadgate.report.build import BADGE_CLASS
from loadgate.run import folder, gate
from loadgate.verdict.outcomes import Verdict
from syncbridge.launcher import start_syncbridge
from tests.support.browser import chromium, chromium_or_skip, save_screenshot
from tests.support.helpers import reference_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = {"desktop": 1280, "phone": 390}
BADGES = ("PASS", "INVESTIGATE", "ROLLBACK", "INCONCLUSIVE", "INVALID", "ERROR")
BADGE_WORDS = set(BADGE_CLASS)  # every status word the report shows as a badge


def gated_run(
    svc: Any, root: Path, run_id: str, stages: list[str], faults: dict[str, Any] | None = None
) -> folder.Run:
    """The DAG's steps in order (checklist, seeding, each stage and its gate, the rollback, the
    logs, the report, the history), with a command rollback that always succeeds; ``faults``
    are set on the service once its users are seeded (the release under load is faulty)."""
    config = build_run_config(
        {
            **reference_run(),
            "target_url": svc.url,
            "release": run_id,
            "scale": 0.002,  # 20 users: enough requests for the must-have criteria (100)
            "time_scale": 0.006,  # the 44-minute API test in about 16 s
            "stages": stages,
            "shards": 1,
            "artifacts_root": str(root / "artifacts"),
            "rollback": {"type": "command", "command": ["true"]},
        },
        allowlist=[],
    )
    run = folder.Run(pipeline.prepare(config, run_id))
    notifier = Notifier(run.artifacts, None)
    pipeline.run_checklist(run, notifier=notifier, rollback_secret=None)
    pipeline.seed(run, secret="report-browser-test")
    if faults:
        svc.set_faults(faults)
    for stage in stages:
        if pipeline.stage_skip_reason(run, stage) is not None:
            continue
        run_stage_local(run, stage, lambda line: None)
        gate.decide(run, stage)
    pipeline.rollback(run, secret=None)
    pipeline.collect_logs(run)
    pipeline.make_report(run)
    pipeline.record_history(run)
    return run


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    chromium_or_skip()  # no browser: no gate runs either
    root = tmp_path_factory.mktemp("report-browser")
    good = start_syncbridge(root / "svc-v1", release="v1")
    try:
        healthy = gated_run(good, root, "v1", ["api", "websocket"])
        verdict, reasons = pipeline.run_verdict(healthy)
        assert verdict is Verdict.PASS, reasons
    finally:
        good.stop()
    # v2 deployed: half its API requests fail once its users are seeded
    bad = start_syncbridge(root / "svc-v2", release="v2")
    try:
        faulty = gated_run(bad, root, "v2", ["api", "websocket"], faults={"error_rate": 0.5})
        verdict, reasons = pipeline.run_verdict(faulty)
        assert verdict is Verdict.ROLLBACK, reasons
    finally:
        bad.stop()
    return {
        "healthy": Path(healthy.artifacts.path("report.html")),
        "rollback": Path(faulty.artifacts.path("report.html")),
    }


CHARTS_JS = """() => [...document.querySelectorAll('svg')].map(svg => {
    const title = svg.querySelector(':scope > title');
    const comments = [];
    const walker = document.createTreeWalker(svg, NodeFilter.SHOW_COMMENT);
    while (walker.nextNode()) comments.push(walker.currentNode.nodeValue.trim());
    return {
        name: (svg.getAttribute('aria-label') || (title && title.textContent) || '').trim(),
        desc: ((svg.querySelector(':scope > desc') || {}).textContent || '').trim(),
        texts: [...svg.querySelectorAll('text')].map(t => t.textContent.trim()),
        comments: comments,
    };
})"""
AXE_JS = """async () => {
    const result = await axe.run(document, {resultTypes: ['violations']});
    return result.violations.map(v => ({
        id: v.id, impact: v.impact, help: v.help,
        targets: v.nodes.slice(0, 3).map(n => n.target.join(' ')),
    }));
}"""
UNITS = re.compile(r"\b(ms|s|%|per second|users|connections)\b|\((?:s|ms|%)\)")
TIME_AXIS = re.compile(r"^\d+(?:\.\d+)? s$|\(s\)")


def open_report(browser: Any, report: Path, width: int) -> tuple[Any, Any, list[str]]:
    """The report in a fresh page of ``width`` px; every request but the file's own is
    blocked, and every request the page made is listed."""
    url = report.as_uri()
    context = browser.new_context(viewport={"width": width, "height": 900})
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))

    def only_the_file(route: Any) -> None:
        if route.request.url == url:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", only_the_file)
    page = context.new_page()
    page.goto(url)
    page.wait_for_load_state("load")
    return context, page, requested


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("which", ["healthy", "rollback"])
def test_the_report_reads_offline_at_desktop_and_phone_widths(reports, which, width) -> None:
    report = reports[which]
    with chromium() as browser:
        context, page, requested = open_report(browser, report, WIDTHS[width])
        try:
            # the verdict as a text badge with its colour class (readable without colour)
            verdict = "PASS" if which == "healthy" else "ROLLBACK"
            summary_badge = page.locator("p:has-text('Verdict:') strong.badge").first
            assert summary_badge.inner_text().strip() == verdict
            assert page.locator("strong.badge").count() > 5
            assert set(page.locator("strong.badge").all_inner_texts()) & set(BADGES)
            # nothing but the file itself was requested: the report is whole offline
            assert requested == [report.as_uri()], requested
            # nothing wider than the screen: wide tables scroll inside their own box
            overflow = page.evaluate(
                "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert overflow[0] <= overflow[1], f"page {overflow[0]} px wide in {overflow[1]} px"
            # the collected logs are linked, relative to the report, and each link finds its file
            logs = page.eval_on_selector_all(
                "a[href^='logs/']", "links => links.map(a => a.getAttribute('href'))"
            )
            assert any(h.startswith("logs/generator/") for h in logs), logs
            assert all((report.parent / h).is_file() for h in logs), logs
            # in print, each badge keeps its word and a border (no colour needed to read it)
            page.emulate_media(media="print")
            printed = page.evaluate(
                "() => [...document.querySelectorAll('strong.badge')].map(b => "
                "[b.innerText.trim(), getComputedStyle(b).borderTopStyle])"
            )
            page.emulate_media(media="screen")
            assert printed and all(t in BADGE_WORDS and b == "solid" for t, b in printed), printed
            # every chart: a title, and axes with units. The hand-written charts write their
            # tick labels as <text> ("0 s", "5 ms"); charts drawn with text as paths keep each
            # label's text in a comment beside its path and say the rest in <title>/<desc>.
            charts = page.evaluate(CHARTS_JS)
            assert charts, "no chart in the report"
            for chart in charts:
                assert chart["name"], chart
                labels = chart["texts"] + chart["comments"]
                assert any(TIME_AXIS.search(t) for t in labels), (chart["name"], labels)
                words = " ".join([chart["name"], chart["desc"], *labels])
                assert UNITS.search(words), (chart["name"], words)
                assert len([t for t in labels if re.search(r"\d", t)]) >= 3, chart["name"]
            save_screenshot(page, f"report-{which}-{width}")
            # accessibility: no serious or critical violation (axe-core, from npm)
            if not AXE.is_file():
                pytest.skip(
                    "axe-core is not installed: run `npm ci` (package.json pins it; "
                    "`make test` and .ci/run do it)"
                )
            page.add_script_tag(path=str(AXE))
            violations = page.evaluate(AXE_JS)
            serious = [v for v in violations if v["impact"] in ("serious", "critical")]
            assert not serious, serious
            assert requested == [report.as_uri()], requested  # axe fetched nothing either
        finally:
            context.close()
