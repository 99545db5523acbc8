"""Notifications reach Slack (a local stand-in, through slack_sdk) as one thread per run, once
per key, and are kept in the artifacts."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from loadgate import pipeline
from loadgate.config.profiles import load_profiles
from loadgate.config.run import resolve_trigger
from loadgate.notify import (
    LEDGER,
    START_UPDATED,
    Links,
    Notifier,
    SlackApiSender,
    SlackWebhookSender,
    airflow_links,
    final_message,
    gate_message,
    start_message,
    task_failed_message,
)
from loadgate.run import folder
from loadgate.run.artifacts import RunArtifacts
from loadgate.run.records import StageGate
from tests.support.helpers import REFERENCE_PLAN
from tests.support.slack_standin import CHANNEL_ID, SlackStandIn, block_problems

RUN_ID = "manual__2026-12-01T02:01:45.564560+00:00"
BASE = "https://airflow.example.com"
LINKS = airflow_links(BASE, "release_gate", RUN_ID)
RUN_URL = f"{BASE}/dags/release_gate/runs/manual__2026-12-01T02%3A01%3A45.564560%2B00%3A00"
REPORT_URL = (
    f"{BASE}/loadgate/reports/release_gate/manual__2026-12-01T02%3A01%3A45.564560%2B00%3A00"
)

START = start_message(
    release="v2",
    target="http://127.0.0.1:1",
    plan="harmonyflow-10k",
    stages=["api"],
    scale=0.01,
    run_id="r1",
    dry_run=False,
)
API = {"requests": 12_345, "error_rate": 0.0004, "p95_ms": 48.2, "p99_ms": 131.0, "ws": {}}
WEBSOCKET = {
    "requests": 3,  # the logins: not what the stage is about
    "error_rate": 0.0,
    "p95_ms": 2.0,
    "p99_ms": 2.0,
    "ws": {
        "connects": 120,
        "connect_failed": 2,
        "max_connections": 100,
        "messages_sent": 4_800,
        "messages_received": 4_790,
        "error_rate": 0.012,
        "rtt_p95_ms": 7.84,
        "rtt_p99_ms": 21.5,
    },
}


@pytest.fixture
def slack():
    with SlackStandIn() as standin:
        yield standin


def api_notifier(root, slack, links: Links | None = LINKS) -> Notifier:
    client = WebClient(token="xoxb-test-token", base_url=f"{slack.url}/api/")
    return Notifier(RunArtifacts(root, RUN_ID), SlackApiSender(client, "#deploys"), links)


def types(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["type"] for b in blocks]


def fields(block: dict[str, Any]) -> dict[str, str]:
    """A fields section as {name: value} (each field is ``*name*\\nvalue``)."""
    assert block["type"] == "section"
    pairs = (f["text"].split("\n", 1) for f in block["fields"])
    return {name.strip("*"): value for name, value in pairs}


def buttons(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["text"]["text"], e["url"])
        for b in blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e["type"] == "button"
    ]


def the_run(notifier: Notifier) -> None:
    """A run's messages in the order its tasks send them."""
    common = {"release": "v2", "target": "http://127.0.0.1:1", "run_id": RUN_ID}
    notifier.notify(
        "start",
        start_message(
            **common,
            plan="harmonyflow-10k",
            stages=["api", "websocket"],
            scale=0.01,
            dry_run=False,
            links=notifier.links,
        ),
    )
    notifier.notify(
        "gate:api",
        gate_message(
            stage="api",
            verdict="pass",
            summary=API,
            reasons=["20 criteria met"],
            release="v2",
            links=notifier.links,
        ),
        reply=True,
    )
    reasons = ["ws-error-rate: 1.20% > 1% (120 samples)", "ws-connect-p95: too few samples"]
    notifier.notify(
        "gate:websocket",
        gate_message(
            stage="websocket",
            verdict="investigate",
            summary=WEBSOCKET,
            reasons=reasons,
            release="v2",
            links=notifier.links,
        ),
        reply=True,
    )
    notifier.notify(
        "final",
        final_message(
            **common,
            verdict="investigate",
            stages={
                "api": {"verdict": "pass", **API},
                "websocket": {"verdict": "investigate", **WEBSOCKET},
            },
            reasons=reasons,
            rollback=None,
            links=notifier.links,
        ),
        reply=True,
        broadcast=True,
    )
    notifier.update_start(
        start_message(
            **common,
            plan="harmonyflow-10k",
            stages=["api", "websocket"],
            scale=0.01,
            dry_run=False,
            links=notifier.links,
            verdict="investigate",
            reasons=reasons,
        )
    )


def test_a_run_is_one_thread_with_buttons_and_the_stages_figures(tmp_path, slack) -> None:
    notifier = api_notifier(tmp_path, slack)
    the_run(notifier)
    paths = [c["path"] for c in slack.calls]
    assert paths == ["/api/chat.postMessage"] * 4 + ["/api/chat.update"]
    assert all(c["auth"] == "Bearer xoxb-test-token" for c in slack.calls)
    for call in slack.calls:  # what the stand-in would refuse, Slack would too
        assert block_problems(call["body"]["blocks"]) == [], call["body"]
    start, api, websocket, final = slack.messages()
    (update,) = slack.updates()
    start_ts = min(slack.channel)  # the first message posted

    # the start message: to the channel, with the run's button (no report yet)
    assert start["channel"] == "#deploys" and "thread_ts" not in start
    assert "Load test of release v2 starting" in start["text"]
    assert types(start["blocks"]) == ["header", "section", "actions", "context"]
    assert start["blocks"][0]["text"]["text"] == "🚦 Load test starting: v2"
    assert fields(start["blocks"][1]) == {
        "Target": "http://127.0.0.1:1",
        "Plan": "harmonyflow-10k",
        "Stages": "api, websocket",
        "Scale": "0.01",
    }
    assert buttons(start["blocks"]) == [("Airflow run", RUN_URL)]

    # each gate: a reply in the start message's thread (not broadcast)
    for reply in (api, websocket):
        assert reply["channel"] == CHANNEL_ID and reply["thread_ts"] == start_ts
        assert "reply_broadcast" not in reply
    # an HTTP stage: requests, error rate, p95/p99; a pass shows no reasons and no buttons
    assert types(api["blocks"]) == ["header", "section", "context"]
    assert api["blocks"][0]["text"]["text"] == "✅ Gate api: PASS"
    assert fields(api["blocks"][1]) == {
        "Requests": "12,345",
        "Error rate": "0.04%",
        "p95": "48 ms",
        "p99": "131 ms",
    }
    assert "20 criteria met" not in json.dumps(api)
    # a WebSocket stage: connections, messages, its error rate and the round trip's p95/p99
    assert types(websocket["blocks"]) == ["header", "section", "section", "actions", "context"]
    assert websocket["blocks"][0]["text"]["text"] == "⚠️ Gate websocket: INVESTIGATE"
    assert fields(websocket["blocks"][1]) == {
        "Connections": "100 at peak · 120 opened · 2 failed",
        "Messages": "4,800 sent · 4,790 received",
        "Error rate": "1.20%",
        "RTT p95": "7.8 ms",
        "RTT p99": "22 ms",
    }
    why = websocket["blocks"][2]["text"]["text"]
    assert why.startswith("*Why*\n• ws-error-rate: 1.20% &gt; 1% (120 samples)\n• ws-connect")
    assert buttons(websocket["blocks"]) == [("Airflow run", RUN_URL)]
    assert "release v2" in websocket["text"] and "websocket" in websocket["text"]

    # the verdict: a reply also posted to the channel, every stage, why, both buttons
    assert final["channel"] == CHANNEL_ID and final["thread_ts"] == start_ts
    assert final["reply_broadcast"] is True
    assert "Release v2: investigate" in final["text"]
    assert types(final["blocks"]) == [
        "header",
        "section",
        "section",
        "section",
        "section",
        "actions",
        "context",
    ]
    assert fields(final["blocks"][1]) == {"Target": "http://127.0.0.1:1", "Verdict": "INVESTIGATE"}
    assert fields(final["blocks"][2])["Stage"] == "api: pass"
    assert fields(final["blocks"][2])["p95"] == "48 ms"
    assert fields(final["blocks"][3])["Stage"] == "websocket: investigate"
    assert fields(final["blocks"][3])["RTT p99"] == "22 ms"
    assert "Requests" not in fields(final["blocks"][3])
    assert final["blocks"][4]["text"]["text"].startswith("*Why*\n• ws-error-rate")
    assert buttons(final["blocks"]) == [("Airflow run", RUN_URL), ("Report", REPORT_URL)]

    # the start message, updated in place to show the verdict
    assert update["channel"] == CHANNEL_ID and update["ts"] == start_ts
    assert update["blocks"][0]["text"]["text"] == "⚠️ Load test of v2: INVESTIGATE"
    assert types(update["blocks"]) == ["header", "section", "section", "actions", "context"]
    assert buttons(update["blocks"]) == [("Airflow run", RUN_URL), ("Report", REPORT_URL)]
    assert slack.channel[start_ts]["edited"] and slack.channel[start_ts]["text"] == update["text"]
    assert "INVESTIGATE" in update["text"]

    # the ledger knows where each message is: later tasks find the thread there
    ledger = notifier.artifacts.read_jsonl(LEDGER)
    assert [(r["key"], r["delivered"]) for r in ledger] == [
        ("start", True),
        ("gate:api", True),
        ("gate:websocket", True),
        ("final", True),
        (START_UPDATED, True),
    ]
    assert ledger[0]["ts"] == start_ts and ledger[0]["channel"] == CHANNEL_ID
    assert [r.get("thread_ts") for r in ledger[1:4]] == [start_ts] * 3
    assert "xoxb-test-token" not in notifier.artifacts.path(LEDGER).read_text()
    # no local path anywhere: the links are Airflow's
    assert str(tmp_path) not in json.dumps(slack.calls)

    # every task retried or rerun (a notifier of its own): nothing is sent twice
    calls = len(slack.calls)
    the_run(api_notifier(tmp_path, slack))
    assert len(slack.calls) == calls


def test_a_retry_after_a_failed_update_only_updates(tmp_path, slack) -> None:
    notifier = api_notifier(tmp_path, slack)
    assert notifier.notify("start", START) == "sent"
    final = final_message(
        verdict="pass",
        release="v2",
        target="t",
        stages={},
        reasons=[],
        rollback=None,
        run_id="r1",
        links=LINKS,
    )
    assert notifier.notify("final", final, reply=True, broadcast=True) == "sent"
    updated = start_message(
        release="v2",
        target="t",
        plan="p",
        stages=["api"],
        scale=1,
        run_id="r1",
        dry_run=False,
        links=LINKS,
        verdict="pass",
    )
    slack.fail_with = 500
    with pytest.raises(SlackApiError):
        notifier.update_start(updated)
    assert notifier.artifacts.read_jsonl(LEDGER)[-1]["delivered"] is False
    slack.fail_with = None
    # the task's retry: the final message was delivered, the update was not
    assert notifier.notify("final", final, reply=True, broadcast=True) == "duplicate"
    assert notifier.update_start(updated) == "updated"
    assert notifier.update_start(updated) == "duplicate"
    assert [c["path"].rsplit("/", 1)[1] for c in slack.calls] == [
        "chat.postMessage",
        "chat.postMessage",
        "chat.update",  # refused
        "chat.update",
    ]
    # a pass shows no reasons: the header says it, the buttons lead on
    update = slack.updates()[-1]
    assert update["blocks"][0]["text"]["text"] == "✅ Load test of v2: PASS"
    assert types(update["blocks"]) == ["header", "section", "actions", "context"]


def test_the_webhook_posts_each_message_on_its_own(tmp_path, slack, caplog) -> None:
    """A webhook can neither thread nor update: every message goes to its channel, and the
    start message stays as it was sent; the log says so."""
    client = WebhookClient(f"{slack.url}/services/T0/B0/secret")
    notifier = Notifier(RunArtifacts(tmp_path, "r"), SlackWebhookSender(client), LINKS)
    with caplog.at_level(logging.INFO, logger="loadgate.notify"):
        the_run(notifier)
    bodies = slack.messages()
    assert len(bodies) == 4 and not slack.updates()
    assert all(c["path"] == "/services/T0/B0/secret" for c in slack.calls)
    assert not any("thread_ts" in b or "reply_broadcast" in b for b in bodies)
    # each message is whole on its own: it names its release and stage
    assert "Gate websocket" in bodies[2]["text"] and "release v2" in bodies[2]["text"]
    assert "RTT p95" in json.dumps(bodies[2]["blocks"])
    assert buttons(bodies[3]["blocks"]) == [("Airflow run", RUN_URL), ("Report", REPORT_URL)]
    assert "cannot reply in a thread" in caplog.text
    assert "cannot update a message" in caplog.text
    keys = [r["key"] for r in notifier.artifacts.read_jsonl(LEDGER)]
    assert keys == ["start", "gate:api", "gate:websocket", "final"]


def test_bot_token_message_is_sent_once(tmp_path, slack) -> None:
    notifier = api_notifier(tmp_path, slack)
    assert notifier.notify("start", START) == "sent"
    assert notifier.notify("start", START) == "duplicate"
    assert len(slack.calls) == 1
    call = slack.calls[0]
    assert call["path"] == "/api/chat.postMessage"
    assert call["body"]["channel"] == "#deploys"
    assert call["body"]["blocks"][0]["type"] == "header"
    ledger = notifier.artifacts.read_jsonl(LEDGER)
    assert [(r["key"], r["via"], r["delivered"]) for r in ledger] == [("start", "slack", True)]


def test_failed_delivery_is_kept_and_retried(tmp_path, slack) -> None:
    client = WebClient(token="xoxb-t", base_url=f"{slack.url}/api/")
    notifier = Notifier(RunArtifacts(tmp_path, "r"), SlackApiSender(client, "#c"))
    slack.fail_with = 500
    with pytest.raises(SlackApiError):
        notifier.notify("final", START)
    record = notifier.artifacts.read_jsonl(LEDGER)[0]
    assert record["delivered"] is False and "error" in record
    slack.fail_with = None
    assert notifier.notify("final", START) == "sent"  # a retry sends what was not delivered


def test_without_a_start_message_replies_go_to_the_channel(tmp_path, slack) -> None:
    """The checklist failed before the start message: a failed task's and the final message
    are posted to the channel, and there is nothing to update."""
    notifier = api_notifier(tmp_path, slack)
    failed = task_failed_message(
        task_id="checklist", try_number=1, error="release v3 expected", run_id="r1", links=LINKS
    )
    assert notifier.notify("task-failed:checklist:1", failed, reply=True) == "sent"
    assert notifier.update_start(START) == "no thread"
    (body,) = slack.messages()
    assert body["channel"] == "#deploys" and "thread_ts" not in body
    assert types(body["blocks"]) == ["header", "section", "actions", "context"]
    assert buttons(body["blocks"]) == [("Airflow run", RUN_URL)]


def test_without_slack_messages_go_to_the_file(tmp_path, caplog) -> None:
    notifier = Notifier(RunArtifacts(tmp_path, "r"), None)
    msg = final_message(
        verdict="pass",
        release="v1",
        target="t",
        run_id="r",
        stages={"api": {"verdict": "pass", "requests": 10, "error_rate": 0.0, "p95_ms": 3.0}},
        reasons=[],
        rollback=None,
    )
    with caplog.at_level("INFO"):
        assert notifier.notify("final", msg, reply=True, broadcast=True) == "recorded"
    assert "Slack is not configured" in caplog.text
    assert notifier.notify("final", msg) == "duplicate"
    assert notifier.update_start(START) == "no thread"
    (record,) = notifier.artifacts.read_jsonl(LEDGER)
    assert record["via"] == "file" and "Release v1: pass" in record["text"]
    # no link to the run without Airflow's base URL, and never a path: the report is its tab
    assert "actions" not in types(record["blocks"])
    assert "Report tab" in json.dumps(record["blocks"])
    assert str(tmp_path) not in json.dumps(record)


def test_links_to_the_run_and_its_report() -> None:
    assert Links(run=RUN_URL, report=REPORT_URL) == LINKS
    assert airflow_links(f"{BASE}/", "release_gate", RUN_ID) == LINKS
    # a plan's DAG and a run id with characters a path must escape
    links = airflow_links("http://127.0.0.1:8080", "gate_my plan", "a/b?c#d")
    assert links.run == "http://127.0.0.1:8080/dags/gate_my%20plan/runs/a%2Fb%3Fc%23d"
    # no base URL, or none a browser opens: no links at all (never a local path)
    for base in (None, "", "/opt/airflow", "file:///tmp/x", "localhost:8080"):
        assert airflow_links(base, "release_gate", RUN_ID) == Links()
    assert airflow_links(BASE, None, RUN_ID) == Links()


def test_a_dry_run_and_a_rerun_gate_say_so() -> None:
    dry = start_message(
        release="v2",
        target="t",
        plan="p",
        stages=["api"],
        scale=1,
        run_id="r",
        dry_run=True,
        verdict="dry_run",
    )
    assert dry.blocks[0]["text"]["text"] == "🧪 Dry run of v2: DRY_RUN"
    rerun = gate_message(
        stage="api",
        verdict="inconclusive",
        summary={},
        reasons=["api-p95: too few samples"],
        release="v2",
        attempt=2,
    )
    assert rerun.blocks[0]["text"]["text"] == "❔ Gate api (re-run): INCONCLUSIVE"
    assert fields(rerun.blocks[1]) == {"Results": "none"}
    assert "both attempts" in rerun.blocks[-1]["elements"][0]["text"]


def test_many_reasons_stay_within_slack_limits() -> None:
    msg = gate_message(
        stage="api",
        verdict="rollback",
        summary=API,
        reasons=[f"criterion {i}: " + "x" * 1000 for i in range(30)],
        release="v2",
    )
    assert block_problems(msg.blocks) == []
    assert "… and 23 more (see the report)" in msg.blocks[2]["text"]["text"]


def test_task_failure_message_is_bounded() -> None:
    msg = task_failed_message(task_id="run_api", try_number=2, error="x" * 5000, run_id="r")
    assert len(msg.text) < 300
    assert len(msg.blocks[1]["text"]["text"]) < 1600


# --- the pipeline's steps -----------------------------------------------------------------


def gated(tmp_path, verdicts: dict[str, str]) -> folder.Run:
    """A prepared run whose gates decided ``verdicts`` (no load: the records as written)."""
    profiles = load_profiles(
        {
            "t": {
                "plan": REFERENCE_PLAN,
                "artifacts_root": str(tmp_path / "artifacts"),
                "default_target": "http://127.0.0.1:9",
            }
        }
    )
    config = resolve_trigger(
        {"profile": "t", "stages": list(verdicts), "scale": 0.001, "release": "v2"},
        profiles=profiles,
    )
    run = folder.Run(pipeline.prepare(config, RUN_ID))
    run.artifacts.write_json("checklist.json", [])
    for stage, verdict in verdicts.items():
        write_gate(run, stage, verdict)
    return run


def write_gate(run: folder.Run, stage: str, verdict: str, attempt: int = 1) -> None:
    gate = StageGate(
        stage=stage,
        attempt=attempt,
        attempts=[],
        verdict=verdict,
        reasons=[f"{stage}: why {verdict}"],
        criteria=[],
        summary=None,
    )
    run.artifacts.write_json(f"gates/{stage}.json", gate.model_dump(mode="json"))


def test_the_pipeline_threads_gates_and_a_rerun_gate_replies_again(tmp_path, slack) -> None:
    run = gated(tmp_path, {"api": "inconclusive"})
    notifier = api_notifier(tmp_path / "unused", slack)
    notifier.artifacts = run.artifacts
    notifier.notify("start", START)
    assert pipeline.notify_gate(run, notifier, "api") == "sent"
    assert pipeline.notify_gate(run, notifier, "api") == "duplicate"  # the task retried
    # the stage ran once more: its gate decides again, and says so in a new reply
    write_gate(run, "api", "rollback", attempt=2)
    assert pipeline.notify_gate(run, notifier, "api") == "sent"
    assert pipeline.notify_final(run, notifier) == "sent"
    assert pipeline.notify_final(folder.Run(run.record), notifier) == "duplicate"
    keys = [r["key"] for r in run.artifacts.read_jsonl(LEDGER)]
    assert keys == ["start", "gate:api", "gate:api:attempt-2", "final", START_UPDATED]
    _, first, second, final = slack.messages()
    assert first["blocks"][0]["text"]["text"] == "❔ Gate api: INCONCLUSIVE"
    assert second["blocks"][0]["text"]["text"] == "🛑 Gate api (re-run): ROLLBACK"
    assert "api: why rollback" in second["blocks"][2]["text"]["text"]
    assert {first["thread_ts"], second["thread_ts"], final["thread_ts"]} == {
        slack.updates()[0]["ts"]
    }
    assert final["reply_broadcast"] is True
    assert buttons(final["blocks"]) == [("Airflow run", RUN_URL), ("Report", REPORT_URL)]
    assert "🛑" in slack.updates()[0]["blocks"][0]["text"]["text"]


def test_the_plugin_links_through_airflows_base_url(monkeypatch) -> None:
    """``settings.run_links`` reads ``[api] base_url``; without one, or outside a task (no
    DAG to name), the messages carry no links."""
    pytest.importorskip("airflow")
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "plugins"))
    from loadgate_airflow import settings

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE)
    assert settings.run_links(RUN_ID, "release_gate") == LINKS
    assert settings.run_links(RUN_ID) == Links()  # no running task: no DAG id
    monkeypatch.delenv("AIRFLOW__API__BASE_URL")
    assert settings.run_links(RUN_ID, "release_gate") == Links()
