"""Team notifications: Slack Block Kit messages, sent once per run and kept in the artifacts.

Every message is recorded in ``notifications.jsonl`` under the run root with a key that names
it (``start``, ``gate:api``, ``final``, ``task-failed:<task>:<try>``). A message whose key was
delivered already is not sent again, so a cleared and rerun task does not repeat itself. With no
Slack connection configured the file is the delivery, and the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from loadgate.run.artifacts import RunArtifacts

log = logging.getLogger(__name__)

LEDGER = "notifications.jsonl"
VERDICT_ICONS = {"pass": "✅", "investigate": "⚠️", "rollback": "🛑", "dry_run": "🧪"}


@dataclass(frozen=True)
class Message:
    kind: str
    text: str  # the plain-text fallback Slack shows in notifications
    blocks: list[dict[str, Any]]


class Sender(Protocol):
    via: str

    def send(self, message: Message) -> None: ...


class SlackApiSender:
    """chat.postMessage through a slack_sdk WebClient (bot token)."""

    via = "slack"

    def __init__(self, client: Any, channel: str) -> None:
        self.client = client
        self.channel = channel

    def send(self, message: Message) -> None:
        self.client.chat_postMessage(channel=self.channel, text=message.text, blocks=message.blocks)


class SlackWebhookSender:
    """An incoming webhook through a slack_sdk WebhookClient."""

    via = "slack-webhook"

    def __init__(self, client: Any) -> None:
        self.client = client

    def send(self, message: Message) -> None:
        response = self.client.send(text=message.text, blocks=message.blocks)
        if response.status_code != 200:
            raise RuntimeError(f"Slack webhook answered HTTP {response.status_code}")


class Notifier:
    def __init__(self, artifacts: RunArtifacts, sender: Sender | None) -> None:
        self.artifacts = artifacts
        self.sender = sender

    def delivered_keys(self) -> set[str]:
        return {r["key"] for r in self.artifacts.read_jsonl(LEDGER) if r.get("delivered")}

    def notify(self, key: str, message: Message) -> str:
        """Send (or record) a message once; returns 'sent', 'recorded' or 'duplicate'."""
        if key in self.delivered_keys():
            log.info("notification %s was delivered before; not sending it again", key)
            return "duplicate"
        record: dict[str, Any] = {
            "key": key,
            "kind": message.kind,
            "at": datetime.now(UTC).isoformat(),
            "text": message.text,
            "blocks": message.blocks,
        }
        if self.sender is None:
            log.info("Slack is not configured: notification %s written to %s", key, LEDGER)
            self.artifacts.append_jsonl(LEDGER, {**record, "via": "file", "delivered": True})
            return "recorded"
        try:
            self.sender.send(message)
        except Exception as exc:
            # kept in the file all the same, so nothing is lost; the caller decides on retries
            error = f"{type(exc).__name__}: {exc}"
            self.artifacts.append_jsonl(
                LEDGER, {**record, "via": self.sender.via, "delivered": False, "error": error}
            )
            raise
        self.artifacts.append_jsonl(LEDGER, {**record, "via": self.sender.via, "delivered": True})
        return "sent"


# --- messages -------------------------------------------------------------------------------
#
# Release names, target URLs, stage names, reasons and errors come from a trigger, a plan or the
# target: every one of them goes through :func:`esc` before it joins a message's text (the
# ``text`` fallback, headers, section fields, context), so ``<!channel>`` or
# ``<https://…|click>`` in a release is shown as typed and pings or links nothing. Slack treats
# ``&``, ``<`` and ``>`` as control characters in every text object, plain_text included, and
# decodes the three escapes for display.

_SLACK_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def esc(value: object) -> str:
    """``value`` as text for Slack mrkdwn: ``&``, ``<`` and ``>`` escaped, as Slack asks for
    text that is not markup (it shows them as typed; nothing else is changed)."""
    return str(value).translate(_SLACK_ESCAPES)


def esc_clip(value: object, limit: int) -> str:
    """:func:`esc` of ``value``, at most ``limit`` characters, never cutting an escape."""
    out: list[str] = []
    size = 0
    for char in str(value):
        piece = esc(char)
        if size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _fields(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """A section of ``*name*`` / value pairs; the values are escaped here."""
    return {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{esc(v)}"} for k, v in pairs.items()][:10],
    }


def _header(text: str) -> dict[str, Any]:
    """A header; ``text`` is escaped here (and kept to Slack's 150 characters)."""
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": esc_clip(text, 150), "emoji": True},
    }


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def stage_figures(stage: Mapping[str, Any]) -> dict[str, str]:
    return {
        "Requests": f"{stage.get('requests', 0):,}",
        "Error rate": _pct(stage.get("error_rate")),
        "p95": _ms(stage.get("p95_ms")),
        "p99": _ms(stage.get("p99_ms")),
    }


def start_message(
    *,
    release: str,
    target: str,
    plan: str,
    stages: Sequence[str],
    scale: float,
    run_id: str,
    dry_run: bool,
) -> Message:
    what = "Dry run" if dry_run else "Load test"
    text = (
        f"{what} of release {esc(release)} starting on {esc(target)}: "
        f"stages {esc(', '.join(stages))}"
    )
    blocks = [
        _header(f"🚦 {what} starting: {release}"),
        _fields(
            {
                "Target": target,
                "Plan": plan,
                "Stages": ", ".join(stages),
                "Scale": f"{scale:g}",
            }
        ),
        _context(f"loadgate run `{esc(run_id)}`"),
    ]
    return Message("start", text, blocks)


def gate_message(
    *, stage: str, verdict: str, summary: Mapping[str, Any], reasons: Sequence[str], release: str
) -> Message:
    icon = VERDICT_ICONS.get(verdict, "")
    text = f"{icon} Gate {esc(stage)}: {esc(verdict)} (release {esc(release)})"
    blocks = [_header(f"{icon} Gate {stage}: {verdict}"), _fields(stage_figures(summary))]
    if reasons:
        blocks.append(_context("\n".join(f"• {esc(r)}" for r in reasons[:8])))
    return Message("gate", text, blocks)


def final_message(
    *,
    verdict: str,
    release: str,
    target: str,
    stages: Mapping[str, Mapping[str, Any]],
    reasons: Sequence[str],
    rollback: Mapping[str, Any] | None,
    report: str,
    run_id: str,
) -> Message:
    icon = VERDICT_ICONS.get(verdict, "")
    text = f"{icon} Release {esc(release)}: {esc(verdict)}. Report: {esc(report)}"
    blocks: list[dict[str, Any]] = [
        _header(f"{icon} Release {release}: {verdict.upper()}"),
        _fields({"Target": target, "Verdict": verdict, "Report": report}),
    ]
    for name, summary in stages.items():
        fields = {"Stage": f"{name}: {summary.get('verdict', '—')}", **stage_figures(summary)}
        blocks.append(_fields(fields))
    if reasons:
        blocks.append(_context("\n".join(f"• {esc(r)}" for r in reasons[:8])))
    if rollback:
        outcome, action = rollback.get("outcome", "—"), rollback.get("action")
        blocks.append(_context(f"Rollback: {esc(outcome)} ({esc(action)})"))
    blocks.append(_context(f"loadgate run `{esc(run_id)}`"))
    return Message("final", text, blocks)


def task_failed_message(*, task_id: str, try_number: int, error: str, run_id: str) -> Message:
    text = f"❗ Task {esc(task_id)} failed (try {try_number}): {esc_clip(error, 200)}"
    blocks = [
        _header(f"❗ Task {task_id} failed"),
        {"type": "section", "text": {"type": "mrkdwn", "text": f"```{esc_clip(error, 1500)}```"}},
        _context(f"try {try_number} · loadgate run `{esc(run_id)}`"),
    ]
    return Message("task_failed", text, blocks)
