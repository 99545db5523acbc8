"""Notifications reach Slack (a local stand-in) once per key, and are kept in the artifacts."""

from __future__ import annotations

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from loadgate.notify import (
    LEDGER,
    Notifier,
    SlackApiSender,
    SlackWebhookSender,
    final_message,
    gate_message,
    start_message,
    task_failed_message,
)
from loadgate.run.artifacts import RunArtifacts
from tests.support.slack_standin import SlackStandIn

START = start_message(
    release="v2",
    target="http://127.0.0.1:1",
    plan="harmonyflow-10k",
    stages=["api"],
    scale=0.01,
    run_id="r1",
    dry_run=False,
)


@pytest.fixture
def slack():
    with SlackStandIn() as standin:
        yield standin


def test_bot_token_message_is_sent_once(tmp_path, slack) -> None:
    client = WebClient(token="xoxb-test-token", base_url=f"{slack.url}/api/")
    notifier = Notifier(
        RunArtifacts(tmp_path, "manual__2026:1"), SlackApiSender(client, "#deploys")
    )
    assert notifier.notify("start", START) == "sent"
    assert notifier.notify("start", START) == "duplicate"
    assert len(slack.calls) == 1
    call = slack.calls[0]
    assert call["path"] == "/api/chat.postMessage"
    assert call["body"]["channel"] == "#deploys"
    assert call["body"]["blocks"][0]["type"] == "header"
    ledger = notifier.artifacts.read_jsonl(LEDGER)
    assert [(r["key"], r["via"], r["delivered"]) for r in ledger] == [("start", "slack", True)]
    # the token never reaches the artifacts
    assert "xoxb-test-token" not in notifier.artifacts.path(LEDGER).read_text()


def test_webhook_message(tmp_path, slack) -> None:
    client = WebhookClient(f"{slack.url}/services/T0/B0/secret")
    notifier = Notifier(RunArtifacts(tmp_path, "r"), SlackWebhookSender(client))
    message = gate_message(
        stage="api",
        verdict="rollback",
        release="v2",
        summary={"requests": 1234, "error_rate": 0.2, "p95_ms": 80.0, "p99_ms": 120.0},
        reasons=["error_rate 20.00% > 5%"],
    )
    assert notifier.notify("gate:api", message) == "sent"
    body = slack.messages()[0]
    assert "rollback" in body["text"]
    assert "20.00%" in str(body["blocks"])
    assert "1,234" in str(body["blocks"])


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


def test_without_slack_messages_go_to_the_file(tmp_path, caplog) -> None:
    notifier = Notifier(RunArtifacts(tmp_path, "r"), None)
    msg = final_message(
        verdict="pass",
        release="v1",
        target="t",
        run_id="r",
        report="/x/report.html",
        stages={"api": {"verdict": "pass", "requests": 10, "error_rate": 0.0, "p95_ms": 3.0}},
        reasons=[],
        rollback=None,
    )
    with caplog.at_level("INFO"):
        assert notifier.notify("final", msg) == "recorded"
    assert "Slack is not configured" in caplog.text
    assert notifier.notify("final", msg) == "duplicate"
    (record,) = notifier.artifacts.read_jsonl(LEDGER)
    assert record["via"] == "file" and "/x/report.html" in record["text"]


def test_task_failure_message_is_bounded() -> None:
    msg = task_failed_message(task_id="run_api", try_number=2, error="x" * 5000, run_id="r")
    assert len(msg.text) < 300
    assert len(msg.blocks[1]["text"]["text"]) < 1600
