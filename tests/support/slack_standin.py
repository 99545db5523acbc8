"""A local stand-in for Slack's Web API and incoming webhooks, on loopback.

slack_sdk's WebClient and WebhookClient are pointed at it (``base_url``); it records every call
with its token and body, and can be told to fail. As Slack does, it keeps the channel's
messages: ``chat.postMessage`` answers a new ``ts`` and the channel's id, a reply names its
parent's ``thread_ts`` (an unknown one is ``thread_not_found``), ``chat.update`` replaces a
message it holds (an unknown one is ``message_not_found``), and blocks beyond Slack's limits
are ``invalid_blocks`` (50 blocks; a header's 150 characters; a section's 3,000 characters of
text, 10 fields of 2,000; 25 elements of an actions block; a button's http(s) URL of 3,000).
"""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHANNEL_ID = "C0DEPLOYS"


def block_problems(blocks: Any) -> list[str]:
    """What Slack would refuse in ``blocks`` (the limits this stand-in knows)."""
    if blocks is None:
        return []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    problems = []
    if not isinstance(blocks, list) or len(blocks) > 50:
        return ["blocks must be a list of at most 50"]
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                problems.append(f"block {i}: a header needs plain_text of 1-150 characters")
        elif kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if not text and not fields:
                problems.append(f"block {i}: a section needs text or fields")
            if text and not 0 < len(text.get("text", "")) <= 3000:
                problems.append(f"block {i}: section text of 1-3000 characters")
            if fields and (
                len(fields) > 10 or any(not 0 < len(f.get("text", "")) <= 2000 for f in fields)
            ):
                problems.append(f"block {i}: at most 10 fields of 1-2000 characters")
        elif kind == "actions":
            elements = block.get("elements") or []
            if not 0 < len(elements) <= 25:
                problems.append(f"block {i}: an actions block needs 1-25 elements")
            for element in elements:
                url = element.get("url", "")
                if element.get("type") == "button" and (
                    not url.startswith(("http://", "https://")) or len(url) > 3000
                ):
                    problems.append(f"block {i}: a button's url must be http(s), ≤ 3000")
        elif kind == "context":
            if not 0 < len(block.get("elements") or []) <= 10:
                problems.append(f"block {i}: a context needs 1-10 elements")
        elif kind not in ("divider", "image", "rich_text"):
            problems.append(f"block {i}: unknown block type {kind!r}")
    return problems


class SlackStandIn:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_with: int | None = None
        # the channel as Slack would show it: ts → the message as last posted or updated
        self.channel: dict[str, dict[str, Any]] = {}
        self._ts = itertools.count(1)
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                auth = self.headers.get("Authorization")
                with standin._lock:
                    standin.calls.append({"path": self.path, "auth": auth, "body": body})
                    if standin.fail_with:
                        self._reply(standin.fail_with, {"ok": False, "error": "fatal_error"})
                    elif self.path.startswith("/api/"):
                        if not (auth or "").startswith("Bearer xoxb-"):
                            self._reply(200, {"ok": False, "error": "invalid_auth"})
                        else:
                            self._reply(200, standin._api(self.path[5:], body))
                    else:
                        problems = block_problems(body.get("blocks"))
                        self._reply(400, "invalid_blocks") if problems else self._reply(200, None)

            def _reply(self, status: int, body: Any) -> None:
                if body is None or isinstance(body, str):
                    data = (body or "ok").encode()
                else:
                    data = json.dumps(body).encode()
                self.send_response(status)
                kind = "application/json" if isinstance(body, dict) else "text/plain"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _api(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        problems = block_problems(body.get("blocks"))
        if problems:
            return {"ok": False, "error": "invalid_blocks", "errors": problems}
        if method == "chat.postMessage":
            parent = body.get("thread_ts")
            if parent is not None and (
                body.get("channel") != CHANNEL_ID or parent not in self.channel
            ):
                return {"ok": False, "error": "thread_not_found"}
            ts = f"{1700000000 + next(self._ts)}.000100"
            self.channel[ts] = {**body, "ts": ts}
            return {"ok": True, "channel": CHANNEL_ID, "ts": ts, "message": {"ts": ts}}
        if method == "chat.update":
            ts = body.get("ts")
            if body.get("channel") != CHANNEL_ID or ts not in self.channel:
                return {"ok": False, "error": "message_not_found"}
            self.channel[ts] = {**self.channel[ts], **body, "edited": True}
            return {"ok": True, "channel": CHANNEL_ID, "ts": ts}
        return {"ok": False, "error": "unknown_method"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> SlackStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def messages(self) -> list[dict[str, Any]]:
        """The bodies of the messages posted (chat.postMessage, webhooks), in order."""
        return [c["body"] for c in self.calls if not c["path"].endswith("/chat.update")]

    def updates(self) -> list[dict[str, Any]]:
        """The bodies of chat.update calls, in order."""
        return [c["body"] for c in self.calls if c["path"].endswith("/chat.update")]
