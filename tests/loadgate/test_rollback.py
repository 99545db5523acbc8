"""Rollback actions run for real and verify the target's health afterwards."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests
from pydantic import TypeAdapter, ValidationError

from loadgate.actions import RollbackAction, command, execute, webhook
from loadgate_syncbridge.rollback import Config as SyncbridgeRollback


def test_syncbridge_restores_previous_release(start_syncbridge, tmp_path) -> None:
    db = tmp_path / "sb.db"
    start_syncbridge(tmp_path / "a", release="v1", db_path=db).stop()
    svc = start_syncbridge(
        tmp_path / "b", release="v2", db_path=db, admin_token="adm", faults={"error_rate": 0.5}
    )
    outcome = execute(
        SyncbridgeRollback(),
        target_url=svc.url,
        release="v2",
        run_id="r",
        reasons=["x"],
        secret="adm",
    )
    assert outcome["outcome"] == "rolled back, target healthy", outcome
    assert outcome["restored_release"] == "v1"
    assert requests.get(f"{svc.url}/healthz", timeout=5).json()["release"] == "v1"
    assert svc.get_faults() == {}  # v1 had no faults
    assert "adm" not in json.dumps(outcome)


def test_command_action_gets_release_and_run(tmp_path) -> None:
    marker = tmp_path / "rolled"
    config = command.Config(
        command=["sh", "-c", f'echo "$LOADGATE_RELEASE $LOADGATE_RUN_ID" > {marker}'],
        verify_timeout_s=1,
    )
    outcome = execute(
        config, target_url="http://127.0.0.1:9", release="v7", run_id="run-1", reasons=[]
    )
    assert marker.read_text().strip() == "v7 run-1"
    assert outcome["exit_code"] == 0
    # the target is down: rolled back, but the health check says so
    assert outcome["outcome"] == "rolled back, target unhealthy"


def test_failing_command_is_a_failed_rollback() -> None:
    config = command.Config(command=["sh", "-c", "echo nope >&2; exit 4"])
    outcome = execute(config, target_url="http://127.0.0.1:9", release="v", run_id="r", reasons=[])
    assert outcome["outcome"] == "failed" and outcome["exit_code"] == 4
    assert "nope" in outcome["output_tail"]


def test_webhook_action_posts_and_scrubs_token() -> None:
    seen = []

    class Hook(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers["Authorization"], json.loads(body)))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = webhook.Config(
            url=f"http://127.0.0.1:{server.server_port}/rollback",
            verify_timeout_s=1,
        )
        outcome = execute(
            config,
            target_url="http://127.0.0.1:9",
            release="v2",
            run_id="r",
            reasons=["error rate 20%"],
            secret="hook-token",
        )
    finally:
        server.shutdown()
    assert seen == [
        ("Bearer hook-token", {"release": "v2", "run_id": "r", "reasons": ["error rate 20%"]})
    ]
    assert outcome["http_status"] == 202
    assert "hook-token" not in json.dumps(outcome)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "command"},
        {"type": "webhook"},
        {"type": "ssh"},
        {"type": "command", "command": ["x"], "extra": 1},
    ],
)
def test_bad_configs_are_refused(bad) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(RollbackAction).validate_python(bad)
