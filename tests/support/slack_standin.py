"""A local stand-in for Slack's Web API and incoming webhooks, on loopback.

slack_sdk's WebClient and WebhookClient are pointed at it (``base_url``); it records every call
with its token and body, and can be told to fail.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SlackStandIn:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_with: int | None = None
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
                standin.calls.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if standin.fail_with:
                    self._reply(standin.fail_with, {"ok": False, "error": "fatal_error"})
                elif self.path.startswith("/api/"):
                    ok = self.headers.get("Authorization", "").startswith("Bearer xoxb-")
                    reply = {"ok": ok, "ts": f"{len(standin.calls)}.0001", "channel": "C1"}
                    self._reply(200, reply if ok else {"ok": False, "error": "invalid_auth"})
                else:
                    self._reply(200, None)

            def _reply(self, status: int, body: Any) -> None:
                data = b"ok" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if body else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

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
        return [c["body"] for c in self.calls]
