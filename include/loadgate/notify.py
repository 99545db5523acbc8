"""Team notifications: one Slack thread per run, sent once per key and kept in the artifacts.

The thread: the start message goes to the channel; each gate's verdict is a reply in its
thread; the final verdict is a reply also posted to the channel (``reply_broadcast``), and the
start message is then updated (``chat.update``) to show the verdict, so the channel reads one
line per run with its outcome and the thread holds the story. Every message carries buttons to
the Airflow run and, once it exists, to the report (:class:`Links`: http(s) URLs only, never a
local path), and the figures that fit its stage: requests, error rate and p95/p99 for HTTP
stages; connections, messages and the round trip's p95/p99 for WebSocket ones; the reasons of
any verdict but pass.

Every message is recorded in ``notifications.jsonl`` under the run root with a key that names it
(``start``, ``gate:api``, ``gate:api:attempt-2`` for an inconclusive stage's re-run, ``final``,
``final:start-updated``, ``task-failed:<task>:<try>``), with the ``channel`` and ``ts`` Slack
gave it: later tasks find the thread there. A message whose key was delivered already is not
sent again, so a retried or cleared and rerun task does not repeat itself. With no Slack
connection configured the file is the delivery, and the log says so.

An incoming webhook (:class:`SlackWebhookSender`) can neither reply in a thread nor update a
message: with it every message is posted to the webhook's channel on its own (each names its
release and stage), and the start message keeps its text; the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

from loadgate.run.artifacts import RunArtifacts

log = logging.getLogger(__name__)

LEDGER = "notifications.jsonl"
VERDICT_ICONS = {
    "pass": "✅",
    "investigate": "⚠️",
    "inconclusive": "❔",
    "rollback": "🛑",
    "invalid": "🚫",
    "error": "❗",
    "dry_run": "🧪",
}
START_UPDATED = "final:start-updated"
MAX_REASONS = 8


@dataclass(frozen=True)
class Message:
    kind: str
    text: str  # the plain-text fallback Slack shows in notifications
    blocks: list[dict[str, Any]]


@dataclass(frozen=True)
class Links:
    """Where a person acts on a run: its page in Airflow and its report (absolute http(s) URLs,
    or None where there is none)."""

    run: str | None = None
    report: str | None = None


def _http(url: str | None) -> str | None:
    return url if url and url.startswith(("http://", "https://")) and len(url) <= 3000 else None


def airflow_links(base_url: str | None, dag_id: str | None, run_id: str) -> Links:
    """The run's page in the Airflow UI (``{base_url}/dags/{dag_id}/runs/{run_id}``) and its
    report as the API server serves it (``{base_url}/loadgate/reports/{dag_id}/{run_id}``);
    none without an http(s) ``base_url`` (Airflow's ``[api] base_url``) or a DAG id."""
    base = (base_url or "").rstrip("/")
    if not dag_id or not _http(base):
        return Links()
    dag, run = quote(dag_id, safe=""), quote(run_id, safe="")
    return Links(
        run=_http(f"{base}/dags/{dag}/runs/{run}"),
        report=_http(f"{base}/loadgate/reports/{dag}/{run}"),
    )


@dataclass(frozen=True)
class Delivery:
    """Where Slack put a message: its channel (an id) and timestamp, when the sender knows."""

    channel: str | None = None
    ts: str | None = None


class Sender(Protocol):
    via: str
    threads: bool  # can reply in a thread and update a message

    def send(
        self, message: Message, *, thread: Delivery | None = None, broadcast: bool = False
    ) -> Delivery: ...

    def update(self, where: Delivery, message: Message) -> None: ...


class SlackApiSender:
    """chat.postMessage and chat.update through a slack_sdk WebClient (bot token)."""

    via = "slack"
    threads = True

    def __init__(self, client: Any, channel: str) -> None:
        self.client = client
        self.channel = channel

    def send(
        self, message: Message, *, thread: Delivery | None = None, broadcast: bool = False
    ) -> Delivery:
        args: dict[str, Any] = {"channel": self.channel, "text": message.text}
        if thread is not None and thread.ts:
            args.update(channel=thread.channel or self.channel, thread_ts=thread.ts)
            if broadcast:
                args["reply_broadcast"] = True
        response = self.client.chat_postMessage(
            **args, blocks=message.blocks, unfurl_links=False, unfurl_media=False
        )
        return Delivery(channel=response.get("channel"), ts=response.get("ts"))

    def update(self, where: Delivery, message: Message) -> None:
        self.client.chat_update(
            channel=where.channel or self.channel,
            ts=where.ts,
            text=message.text,
            blocks=message.blocks,
        )


class SlackWebhookSender:
    """An incoming webhook through a slack_sdk WebhookClient.

    A webhook posts to its one channel and answers no message timestamp: it cannot reply in a
    thread or update a message. Replies are posted to the channel as messages of their own, and
    the start message is not updated (:class:`Notifier` logs both)."""

    via = "slack-webhook"
    threads = False

    def __init__(self, client: Any) -> None:
        self.client = client

    def send(
        self, message: Message, *, thread: Delivery | None = None, broadcast: bool = False
    ) -> Delivery:
        response = self.client.send(text=message.text, blocks=message.blocks)
        if response.status_code != 200:
            raise RuntimeError(f"Slack webhook answered HTTP {response.status_code}")
        return Delivery()

    def update(self, where: Delivery, message: Message) -> None:
        raise NotImplementedError("an incoming webhook cannot update a message")


def _record(key: str, message: Message) -> dict[str, Any]:
    """A message as ``notifications.jsonl`` keeps it (under its once-only ``key``)."""
    return {
        "key": key,
        "kind": message.kind,
        "at": datetime.now(UTC).isoformat(),
        "text": message.text,
        "blocks": message.blocks,
    }


class Notifier:
    """Sends a run's messages once each, in one thread, and records them in the ledger.

    ``links``: the run's page and report, for the messages' buttons (the Airflow glue reads the
    API server's base URL; the core builds no URL of its own)."""

    def __init__(
        self, artifacts: RunArtifacts, sender: Sender | None, links: Links | None = None
    ) -> None:
        self.artifacts = artifacts
        self.sender = sender
        self.links = links or Links()

    def _delivered(self) -> dict[str, dict[str, Any]]:
        return {r["key"]: r for r in self.artifacts.read_jsonl(LEDGER) if r.get("delivered")}

    def delivered_keys(self) -> set[str]:
        return set(self._delivered())

    def thread(self) -> Delivery | None:
        """The run's thread: the start message, where Slack's API delivered it."""
        start = self._delivered().get("start")
        if not start or not start.get("ts") or self.sender is None:
            return None
        if start.get("via") != self.sender.via:
            return None
        return Delivery(channel=start.get("channel"), ts=start["ts"])

    def notify(
        self, key: str, message: Message, *, reply: bool = False, broadcast: bool = False
    ) -> str:
        """Send (or record) a message once; returns 'sent', 'recorded' or 'duplicate'.

        ``reply``: in the run's thread (when the start message is in Slack and the sender can
        thread; otherwise to the channel); ``broadcast``: a reply also shown in the channel."""
        if key in self.delivered_keys():
            log.info("notification %s was delivered before; not sending it again", key)
            return "duplicate"
        record = _record(key, message)
        if self.sender is None:
            log.info("Slack is not configured: notification %s written to %s", key, LEDGER)
            self.artifacts.append_jsonl(LEDGER, {**record, "via": "file", "delivered": True})
            return "recorded"
        thread = None
        if reply:
            if not self.sender.threads:
                log.info(
                    "the Slack webhook cannot reply in a thread: %s is posted to the channel", key
                )
            else:
                thread = self.thread()
                if thread is None:
                    log.info("no start message in Slack: %s is posted to the channel", key)
        if thread is not None:
            record["thread_ts"] = thread.ts
            record["broadcast"] = broadcast
        try:
            delivery = self.sender.send(message, thread=thread, broadcast=broadcast)
        except Exception as exc:
            # kept in the file all the same, so nothing is lost; the caller decides on retries
            error = f"{type(exc).__name__}: {exc}"
            self.artifacts.append_jsonl(
                LEDGER, {**record, "via": self.sender.via, "delivered": False, "error": error}
            )
            raise
        where = {"channel": delivery.channel, "ts": delivery.ts} if delivery.ts else {}
        self.artifacts.append_jsonl(
            LEDGER, {**record, **where, "via": self.sender.via, "delivered": True}
        )
        return "sent"

    def update_start(self, message: Message, key: str = START_UPDATED) -> str:
        """Replace the start message with ``message`` (once); returns 'updated', 'duplicate' or
        why not ('no thread': the start message is not in Slack, or the sender cannot update)."""
        if key in self.delivered_keys():
            log.info("the start message was updated before; not updating it again")
            return "duplicate"
        if self.sender is None:
            return "no thread"
        if not self.sender.threads:
            log.info("the Slack webhook cannot update a message: the start message stays as sent")
            return "no thread"
        thread = self.thread()
        if thread is None:
            log.info("no start message in Slack to update")
            return "no thread"
        record = {
            **_record(key, message),
            "channel": thread.channel,
            "ts": thread.ts,
            "via": self.sender.via,
        }
        try:
            self.sender.update(thread, message)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.artifacts.append_jsonl(LEDGER, {**record, "delivered": False, "error": error})
            raise
        self.artifacts.append_jsonl(LEDGER, {**record, "delivered": True})
        return "updated"


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


def _reasons(title: str, reasons: Sequence[str]) -> dict[str, Any]:
    """A section listing ``reasons`` (escaped here), within Slack's 3,000 characters: as many
    as fit of the first eight, each cut at 400 characters, and how many more the report has."""
    text, shown = f"*{title}*", 0
    for reason in reasons[:MAX_REASONS]:
        line = f"\n• {esc_clip(reason, 400)}"
        if len(text) + len(line) > 2900:
            break
        text, shown = text + line, shown + 1
    if len(reasons) > shown:
        text += f"\n… and {len(reasons) - shown} more (see the report)"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _buttons(links: Links | None, *, report: bool) -> list[dict[str, Any]]:
    """An actions block with a button per link: the Airflow run, and the report when
    ``report`` (it exists only once the run has built it)."""
    links = links or Links()
    pairs = [("airflow-run", "Airflow run", links.run)]
    if report:
        pairs.append(("report", "Report", links.report))
    elements = [
        {
            "type": "button",
            "action_id": action,
            "text": {"type": "plain_text", "text": label},
            "url": url,
        }
        for action, label, url in pairs
        if _http(url)
    ]
    return [{"type": "actions", "elements": elements}] if elements else []


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} ms" if value < 10 else f"{value:,.0f} ms"


def _count(value: Any) -> str:
    return f"{int(value or 0):,}"


def is_websocket(stage: Mapping[str, Any]) -> bool:
    """A stage whose load is WebSocket connections (its summary counts connections opened)."""
    return bool((stage.get("ws") or {}).get("connects"))


def stage_figures(stage: Mapping[str, Any]) -> dict[str, str]:
    """The figures an on-call reads first, as fits the stage: requests, error rate and p95/p99
    of an HTTP stage; connections, messages, error rate and round-trip p95/p99 of a WebSocket
    one (whose few HTTP requests are its logins)."""
    if is_websocket(stage):
        ws = stage["ws"]
        connections = (
            f"{_count(ws.get('max_connections'))} at peak · {_count(ws['connects'])} opened"
        )
        if ws.get("connect_failed"):
            connections += f" · {_count(ws['connect_failed'])} failed"
        return {
            "Connections": connections,
            "Messages": f"{_count(ws.get('messages_sent'))} sent · "
            f"{_count(ws.get('messages_received'))} received",
            "Error rate": _pct(ws.get("error_rate")),
            "RTT p95": _ms(ws.get("rtt_p95_ms")),
            "RTT p99": _ms(ws.get("rtt_p99_ms")),
        }
    return {
        "Requests": _count(stage.get("requests")),
        "Error rate": _pct(stage.get("error_rate")),
        "p95": _ms(stage.get("p95_ms")),
        "p99": _ms(stage.get("p99_ms")),
    }


def _run_context(run_id: str, extra: str = "") -> dict[str, Any]:
    return _context(f"loadgate run `{esc(run_id)}`{extra}")


def start_message(
    *,
    release: str,
    target: str,
    plan: str,
    stages: Sequence[str],
    scale: float,
    run_id: str,
    dry_run: bool,
    links: Links | None = None,
    verdict: str | None = None,
    reasons: Sequence[str] = (),
) -> Message:
    """The thread's first message; with ``verdict``, what it is updated to at the run's end
    (the verdict in its header and, for anything but pass, the reasons)."""
    what = "Dry run" if dry_run else "Load test"
    fields = {"Target": target, "Plan": plan, "Stages": ", ".join(stages), "Scale": f"{scale:g}"}
    if verdict is None:
        text = (
            f"{what} of release {esc(release)} starting on {esc(target)}: "
            f"stages {esc(', '.join(stages))}"
        )
        blocks = [_header(f"🚦 {what} starting: {release}"), _fields(fields)]
        blocks += _buttons(links, report=False)
        blocks.append(_run_context(run_id, " · each gate's verdict follows in the thread"))
        return Message("start", text, blocks)
    icon = VERDICT_ICONS.get(verdict, "")
    text = f"{icon} {what} of release {esc(release)} on {esc(target)}: {esc(verdict.upper())}"
    blocks = [_header(f"{icon} {what} of {release}: {verdict.upper()}"), _fields(fields)]
    if verdict != "pass" and reasons:
        blocks.append(_reasons("Why", reasons[:3]))
    blocks += _buttons(links, report=True)
    blocks.append(_run_context(run_id, " · the gates' verdicts are in the thread"))
    return Message("start_update", text, blocks)


def gate_message(
    *,
    stage: str,
    verdict: str,
    summary: Mapping[str, Any],
    reasons: Sequence[str],
    release: str,
    attempt: int = 1,
    links: Links | None = None,
) -> Message:
    """A gate's verdict (a reply in the run's thread): the stage's figures, and the reasons of
    any verdict but pass. Attempt 2 is the re-run of an inconclusive stage."""
    icon = VERDICT_ICONS.get(verdict, "")
    rerun = " (re-run)" if attempt > 1 else ""
    text = f"{icon} Gate {esc(stage)}{rerun}: {esc(verdict)} (release {esc(release)})"
    blocks = [_header(f"{icon} Gate {stage}{rerun}: {verdict.upper()}")]
    blocks.append(_fields(stage_figures(summary) if summary else {"Results": "none"}))
    if verdict != "pass" and reasons:
        blocks.append(_reasons("Why", reasons))
    if verdict != "pass":
        blocks += _buttons(links, report=False)
    context = f"release {esc(release)}"
    if attempt > 1:
        context += f" · decided on both attempts' evidence (attempt {attempt})"
    blocks.append(_context(context))
    return Message("gate", text, blocks)


def final_message(
    *,
    verdict: str,
    release: str,
    target: str,
    stages: Mapping[str, Mapping[str, Any]],
    reasons: Sequence[str],
    rollback: Mapping[str, Any] | None,
    run_id: str,
    links: Links | None = None,
) -> Message:
    """The run's verdict (a reply in its thread, also posted to the channel): each stage's
    verdict and figures, the reasons of anything but pass, the rollback, and the buttons."""
    icon = VERDICT_ICONS.get(verdict, "")
    text = f"{icon} Release {esc(release)}: {esc(verdict)} on {esc(target)}"
    blocks: list[dict[str, Any]] = [
        _header(f"{icon} Release {release}: {verdict.upper()}"),
        _fields({"Target": target, "Verdict": verdict.upper()}),
    ]
    for name, summary in stages.items():
        fields = {"Stage": f"{name}: {summary.get('verdict', '—')}", **stage_figures(summary)}
        blocks.append(_fields(fields))
    if verdict != "pass" and reasons:
        blocks.append(_reasons("Why", reasons))
    if rollback:
        outcome, action = rollback.get("outcome", "—"), rollback.get("action")
        blocks.append(_context(f"Rollback: {esc(outcome)} ({esc(action)})"))
    blocks += _buttons(links, report=True)
    if not _http((links or Links()).report):
        blocks.append(_context("The report is the run's Report tab in Airflow."))
    blocks.append(_run_context(run_id))
    return Message("final", text, blocks)


def task_failed_message(
    *, task_id: str, try_number: int, error: str, run_id: str, links: Links | None = None
) -> Message:
    text = f"❗ Task {esc(task_id)} failed (try {try_number}): {esc_clip(error, 200)}"
    blocks = [
        _header(f"❗ Task {task_id} failed"),
        {"type": "section", "text": {"type": "mrkdwn", "text": f"```{esc_clip(error, 1500)}```"}},
        *_buttons(links, report=False),
        _context(f"try {try_number} · loadgate run `{esc(run_id)}`"),
    ]
    return Message("task_failed", text, blocks)
