"""Strings from a trigger, a plan or the target are text in every medium: Slack mrkdwn pings
and links nothing, and the report's Markdown and HTML hold no element or attribute of theirs."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from loadgate.notify import (
    Message,
    Notifier,
    SlackWebhookSender,
    final_message,
    gate_message,
    start_message,
    task_failed_message,
)
from loadgate.report.build import build_report, md_block, md_code, md_inline
from loadgate.run.artifacts import RunArtifacts
from tests.support.records import comparison, history_entry
from tests.support.slack_standin import SlackStandIn

HOSTILE = [
    "<!channel>",
    "<!here|here> <@U123> <#C123>",
    "![x](https://evil.example/pixel.png)",
    "<https://evil.example/|click here>",
    "[click](https://evil.example/) [ref]",
    "[ref]: https://evil.example/",
    '<img src="https://evil.example/x.png" onerror="alert(1)">',
    "<script>alert(1)</script>",
    "*bold* **strong** _em_ __em__ `code` ~~strike~~",
    "# heading",
    "###### small heading #",
    "> quote",
    "- item",
    "+ item",
    "1. item",
    "7) item",
    "---",
    "- - -",
    "___",
    "~~~",
    "```",
    "`` ` ``",
    "    indented code",
    "&lt;b&gt; &amp; &#x3C;i&#x3E; AT&T",
    "a | b \\| c \\",
    "trailing backslash \\",
    "line one\n\n# line two\r\n<b>three</b>",
    "text\u2028- item",
    "<!-- comment -->",
    "https://evil.example/auto-link",
    "error_rate 20.00% > 5% _",
]

# --- Slack ------------------------------------------------------------------------------------


def slack_unescape(text: str) -> str:
    """What Slack shows for escaped mrkdwn text."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def slack_texts(message: Message) -> list[str]:
    """The top-level text (mrkdwn in notifications and the fallback) and every text object
    (Slack parses ``&``, ``<`` and ``>`` in plain_text ones too)."""
    texts = [message.text]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text"):
                texts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message.blocks)
    return texts


def messages(h: str) -> list[Message]:
    summary = {"requests": 10, "error_rate": 0.0, "p95_ms": 3.0, "p99_ms": 4.0}
    return [
        start_message(
            release=h,
            target=h,
            plan=h,
            stages=[h, "api"],
            scale=0.01,
            run_id=h,
            dry_run=False,
        ),
        gate_message(stage=h, verdict="pass", summary=summary, reasons=[h], release=h),
        final_message(
            verdict="rollback",
            release=h,
            target=h,
            stages={h: {"verdict": "rollback", **summary}},
            reasons=[h],
            rollback={"outcome": h, "action": h},
            run_id=h,
        ),
        # the start message as the run's end updates it
        start_message(
            release=h,
            target=h,
            plan=h,
            stages=[h],
            scale=0.01,
            run_id=h,
            dry_run=False,
            verdict="rollback",
            reasons=[h],
        ),
        task_failed_message(task_id=h, try_number=1, error=h, run_id=h),
    ]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_slack_text_pings_and_links_nothing(hostile: str) -> None:
    for message in messages(hostile):
        texts = slack_texts(message)
        for text in texts:
            # Slack's control sequences (<!channel>, <@U…>, <url|label>) all need "<";
            # "&" only as one of the three escapes
            assert "<" not in text and ">" not in text, (message.kind, text)
            assert not re.search(r"&(?!amp;|lt;|gt;)", text), (message.kind, text)
        # readable: Slack shows the string as typed (in at least the fallback text)
        assert hostile[:150] in slack_unescape(message.text) or message.kind == "task_failed"
        assert any(hostile in slack_unescape(t) for t in texts[1:]), message.kind
        header = message.blocks[0]["text"]
        assert header["type"] == "plain_text" and hostile[:40] in slack_unescape(header["text"])


def test_escaped_text_stays_within_slack_limits() -> None:
    message = task_failed_message(task_id="t", try_number=1, error="<&>" * 3000, run_id="r")
    assert len(message.text) < 300
    assert len(message.blocks[0]["text"]["text"]) <= 150
    section = message.blocks[1]["text"]["text"]
    assert len(section) <= 1506
    # cut between escapes, never inside one
    assert section.removeprefix("```").removesuffix("```").endswith(("&lt;", "&amp;", "&gt;"))


def test_slack_receives_the_escaped_text(tmp_path) -> None:
    """Through a real webhook client to the local Slack stand-in: what arrives is escaped."""
    from slack_sdk.webhook import WebhookClient

    with SlackStandIn() as slack:
        notifier = Notifier(
            RunArtifacts(tmp_path, "r"),
            SlackWebhookSender(WebhookClient(f"{slack.url}/services/T0/B0/x")),
        )
        notifier.notify("start", messages("<!channel> <https://evil.example|x>")[0])
        body = slack.messages()[0]
    sent = json.dumps(body)
    assert "<" not in sent and ">" not in sent
    assert "&lt;!channel&gt;" in body["text"]
    assert "&lt;!channel&gt;" in body["blocks"][0]["text"]["text"]


# --- the report ------------------------------------------------------------------------------


def record(v: Callable[[str], str]) -> dict[str, Any]:
    """A run record with ``v(slot)`` in every string that comes from a trigger, a plan or the
    target (the verdicts, outcomes and statuses are loadgate's own: the records hold no other)."""
    measured = {"stat": "rate", "status": "breach", "samples": 1234, "window": "stage"}
    criteria = [
        {
            "id": v("criterion-id"),
            "description": v("criterion-description"),
            "level": "acceptance",
            "metric": "http_req_failed",
            "op": v("criterion-op"),
            "threshold": 0.01,
            "observed": 0.2,
            "breached": True,
            **measured,
            "unit": "%",
        },
        {
            "id": v("rollback-criterion-id"),
            "level": "rollback",
            "metric": "http_req_failed",
            "op": ">",
            "threshold": 0.05,
            "observed": 0.2,
            "breached": True,
            **measured,
            "unit": "%",
        },
    ]
    stage = {
        "verdict": "rollback",
        "reasons": [v("stage-reason")],
        "aborted": {"criterion": v("aborted-criterion"), "observed": 0.2, "at_s": 2.1},
        "summary": {
            "requests": 1234,
            "error_rate": 0.2,
            "p50_ms": 3.0,
            "p95_ms": 12.5,
            "p99_ms": 30.0,
            "max_vus": 100,
            "rps": 400.0,
            "by_name": {v("request-name"): {"requests": 600, "error_rate": 0.2}},
            "rates": {"planned": 20.0, "offered": 19.5, "achieved": 19.4},
        },
        "criteria": criteria,
        "series": {"t": [1, 2], "rps": [1, 2], "p95_ms": [3, 4], "errors": [0, 1], "vus": [1, 2]},
        "system": {v("system-metric"): {"max": 0.4, "avg": 0.3, "last": 0.35}},
        "load_levels": [{"users": 100, "p95_ms": 12.0, "error_rate": 0.2}],
        "expected": {"p95 response time": v("expected")},
        "attempts": [
            {"attempt": 1, "verdict": "inconclusive", "reasons": ["too few"], "requests": 10}
        ],
        "baseline": {
            "run_id": v("baseline-run-id"),
            "release": v("baseline-release"),
            "comparisons": [
                comparison(
                    "all", "no_regression", v("comparison"), baseline_value=20.0, current_value=20.6
                )
            ],
            "findings": [],
            "inconclusive": [],
            "thin_baseline": [v("thin-baseline")],
            "noisy": [v("noisy")],
            "figures": {},
        },
    }
    return {
        "title": v("title"),
        "release": v("release"),
        "target": v("target"),
        "plan": v("plan"),
        "scale": 0.01,
        "time_scale": 0.1,
        "run_id": v("run-id"),
        "ended_at": v("ended-at"),
        "verdict": "rollback",
        "reasons": [v("reason")],
        "checklist": [
            {
                "item": v("check-item"),
                "status": "fail",
                "evidence": v("check-evidence"),
                "required": True,
            },
        ],
        "stages": {v("stage"): stage},
        "rollback": {
            "action": v("rollback-action"),
            "release": "v2",
            "outcome": "failed",
            "error": "HTTP 500",
            "health": {"healthy": None},
            "seconds": 0.5,
            "at": "2026-01-01T00:00:05+00:00",
        },
        "timeline": [{"at": v("timeline-at"), "event": v("timeline-event")}],
        "history": [
            history_entry("r0", v("history-release"), v("history-stage")),
            history_entry(v("run-id"), v("release"), "api"),
        ],
        "dry_run_load": [
            {
                "stage": v("load-stage"),
                "scenario": v("load-scenario"),
                "shard": v("load-shard"),
                "peak_vus": 3,
                "duration_s": 10.0,
            }
        ],
    }


SLOTS: list[str] = []
record(lambda slot: SLOTS.append(slot) or slot)  # every slot, in order


class Elements(HTMLParser):
    """Every element and attribute of a page, and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, tuple[tuple[str, str | None], ...]]] = []
        self.text: list[str] = []
        self.in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, tuple(attrs)))
        self.in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, tuple(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.in_style = False

    def handle_comment(self, data: str) -> None:
        self.elements.append(("<!--", ((data, None),)))

    def handle_data(self, data: str) -> None:
        if not self.in_style:
            self.text.append(data)


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    parser.close()
    return parser


def words(text: str) -> str:
    return " ".join(text.split())


def render(tmp_path: Path, name: str, v: Callable[[str], str]) -> dict[str, str]:
    paths = build_report(RunArtifacts(tmp_path / name, "r"), record(v))
    return {kind: Path(path).read_text() for kind, path in paths.items()}


@pytest.fixture(scope="module")
def plain_elements(tmp_path_factory) -> list:
    """The elements of the report of plain strings (rendered once: a report with its charts
    is a fraction of a second of CPU, and every hostile string is compared with it)."""
    plain = render(tmp_path_factory.mktemp("plain"), "plain", lambda slot: f"plain {slot}")
    return parse(plain["html"]).elements


@pytest.mark.parametrize("hostile", HOSTILE)
def test_report_html_holds_no_element_or_attribute_of_a_hostile_string(
    tmp_path, plain_elements, hostile: str
) -> None:
    bad = render(tmp_path, "bad", lambda slot: f"{hostile} ·{slot}·")
    # the same elements with the same attributes as the report of plain strings: nothing in
    # the strings became an element (img, a, h1, ul, blockquote, hr, code, em…) or attribute
    assert parse(bad["html"]).elements == plain_elements
    assert "evil.example" not in " ".join(str(e) for e in parse(bad["html"]).elements)
    # readable: each slot's string is shown as typed (spaces aside)
    shown = words(" ".join(parse(bad["html"]).text))
    for slot in SLOTS:
        if slot == "criterion-id":  # the report shows the description (junit.xml the id)
            continue
        assert words(f"{hostile} ·{slot}·") in shown, slot
    # the other files keep the strings as data
    data = json.loads(bad["json"])
    assert data["release"] == f"{hostile} ·release·"
    junit = ET.fromstring(bad["junit"].split("\n", 1)[1])
    assert junit.find(".//testcase").get("name") == f"{hostile} ·criterion-id·"


@pytest.mark.parametrize(
    ("text", "markdown"),
    [
        ("error_rate 20.00% > 5%", "error_rate 20.00% > 5%"),
        ("GET /a p95 +40% (95% CI +35%…+46%) vs v41", "GET /a p95 +40% (95% CI +35%…+46%) vs v41"),
        ("http://127.0.0.1:8080/api", "http://127.0.0.1:8080/api"),
        ("AT&T 2.1 s", "AT&T 2.1 s"),
        ("![x](u)", "!\\[x](u)"),
        ("_x_ a_b", "\\_x\\_ a_b"),
    ],
)
def test_normal_text_stays_readable_in_the_markdown(text: str, markdown: str) -> None:
    assert md_inline(text) == markdown


def test_block_markers_are_escaped_only_at_the_start() -> None:
    assert md_block("# x # y") == "\\# x # y"
    assert md_block("1. x 2. y") == "1\\. x 2. y"
    assert md_block("1.5x slower") == "1.5x slower"
    assert md_block("-2% p95") == "-2% p95"
    assert md_block("   > x") == "\\> x"
    assert md_code("a`b") == "`` a`b ``"
    assert md_code("run-1") == "`run-1`"
