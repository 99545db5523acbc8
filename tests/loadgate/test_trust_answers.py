"""A target's answers are evidence: no call loadgate makes to it follows a redirect, and a bad
answer (a /healthz that is not a JSON object, too large, not JSON) is "unhealthy", never a
crash. Rollback evidence and outcomes never show the webhook's path or any secret the action
knows of.

The targets here are real HTTP servers on loopback: one answers as scripted (a 307 to another
loopback port, odd /healthz bodies); the other stands where a redirect points and records every
request it receives, so "not followed" is checked where it matters: nothing arrived there.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadgate.actions import RollbackError, command, execute, validate, webhook
from loadgate.actions.base import wait_healthy
from loadgate.engine.http import HttpConnection
from loadgate.metrics.scrape import ScrapeSource
from loadgate.plan.model import ScrapeSpec
from loadgate.run import checklist as cl
from loadgate.run.seeding import SeedingError, password_for, seed_users
from loadgate_syncbridge.rollback import Config as SyncbridgeRollback

TOKENS = {"accessToken": "acc", "refreshToken": "ref"}
Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Server:
    """A loopback HTTP server: ``reply(method, path) -> (status, headers, body)``; every
    request it got is in ``calls`` as (method, path, headers, body)."""

    reply: Callable[[str, str], Reply]
    calls: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[str, str], Reply]], Server]]:
    servers: list[ThreadingHTTPServer] = []

    def start(reply: Callable[[str, str], Reply]) -> Server:
        state = Server(reply)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                state.calls.append((self.command, self.path, dict(self.headers), body))
                status, headers, data = state.reply(self.command, self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _any

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        state.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def elsewhere(serve) -> Server:
    """Where redirects point: answers like a willing API (201 with tokens, a healthy /healthz)
    and records everything, so a followed redirect would succeed there, and show."""

    def reply(method: str, path: str) -> Reply:
        if path == "/healthz":
            return 200, {}, b'{"status": "ok", "release": "elsewhere"}'
        if method == "POST":
            return 201, {"Content-Type": "application/json"}, json.dumps(TOKENS).encode()
        return 200, {}, b'{"history": [{"release": "a"}, {"release": "b"}]}'

    return serve(reply)


@pytest.fixture
def redirecting(serve, elsewhere) -> Server:
    """A target that answers every request with a 307 to ``elsewhere`` (same path)."""
    return serve(lambda method, path: (307, {"Location": f"{elsewhere.url}{path}"}, b""))


def _where(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


# --- no redirect is followed ----------------------------------------------------------------


def test_seeding_stops_at_a_redirect_and_sends_no_password_there(
    redirecting, elsewhere, tmp_path
) -> None:
    out = tmp_path / "users.jsonl"
    with pytest.raises(SeedingError, match="HTTP 307") as err:
        asyncio.run(seed_users(redirecting.url, 20, out, secret="s", concurrency=4))
    assert _where(elsewhere) in str(err.value) and "never follows a redirect" in str(err.value)
    assert elsewhere.calls == []
    # it stopped at once: far fewer than the 20 users' registrations reached the target
    assert 1 <= len(redirecting.calls) <= 4
    assert password_for("loadtest0@loadgate.test", "s") not in str(err.value)
    assert out.exists() and out.read_text() == ""


@pytest.mark.slow
def test_seed_command_reports_the_redirect(redirecting, elsewhere, tmp_path) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "loadgate", "seed", "--target", redirecting.url),
            *("--count", "3", "--out", str(tmp_path / "u.jsonl")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "HTTP 307" in proc.stderr and _where(elsewhere) in proc.stderr
    assert "Traceback" not in proc.stderr and elsewhere.calls == []


def test_checklist_items_fail_on_a_redirect_naming_where_it_pointed(redirecting, elsewhere) -> None:
    specs = {"m": ScrapeSpec(metric="x")}
    checks = [
        cl.check_deployment(redirecting.url, "elsewhere"),
        cl.check_health(redirecting.url),
        cl.check_monitoring(redirecting.url, None, specs),
        cl.check_rollback(SyncbridgeRollback(), redirecting.url, "admin-token"),
    ]
    for check in checks:
        assert check.status == "fail", check
        assert "307" in check.evidence and _where(elsewhere) in check.evidence, check
    assert elsewhere.calls == []  # nor the admin token, nor anything else


def test_rollback_requests_and_health_checks_never_follow_a_redirect(
    redirecting, elsewhere
) -> None:
    with pytest.raises(RollbackError, match="307"):
        validate(SyncbridgeRollback(), redirecting.url, "admin-token")
    outcome = execute(
        SyncbridgeRollback(verify_timeout_s=1),
        target_url=redirecting.url,
        release="v2",
        run_id="r",
        reasons=[],
        secret="admin-token",
    )
    assert outcome["outcome"] == "failed" and "307" in outcome["error"], outcome
    health = wait_healthy(redirecting.url, timeout_s=0)
    assert health["healthy"] is False and _where(elsewhere) in health["error"], health
    hook = webhook.Config(url=f"{redirecting.url}/hook", verify_timeout_s=1)
    outcome = execute(
        hook, target_url=redirecting.url, release="v", run_id="r", reasons=[], secret="tok"
    )
    assert outcome["outcome"] == "failed" and "307" in outcome["error"], outcome
    assert elsewhere.calls == []


def test_metrics_scrape_does_not_follow_a_redirect(redirecting, elsewhere) -> None:
    source = ScrapeSource(f"{redirecting.url}/metrics", {})
    assert source.scrape() is None
    assert elsewhere.calls == []


def test_the_load_engine_returns_a_redirect_as_a_response(redirecting, elsewhere) -> None:
    async def go() -> int:
        conn = HttpConnection(redirecting.url, default_headers={"Authorization": "Bearer t"})
        try:
            return (await conn.request("POST", "/api/v1/auth/login", json={"p": 1})).status
        finally:
            conn.close()

    assert asyncio.run(go()) == 307
    assert len(redirecting.calls) == 1 and elsewhere.calls == []


# --- bad /healthz answers are evidence --------------------------------------------------------

BAD_BODIES = {
    "a list": (b'["ok"]', "JSON list, not an object"),
    "a string": (b'"ok"', "JSON str, not an object"),
    "invalid JSON": (b"{ok", "not JSON"),
    "huge": (b'{"pad": "' + b"x" * 200_000 + b'"}', "larger than"),
    "a number release": (b'{"release": 5}', "'release' is a JSON int"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_a_bad_healthz_body_is_unhealthy_not_a_crash(serve, name: str) -> None:
    body, reason = BAD_BODIES[name]
    target = serve(lambda method, path: (200, {}, body if path == "/healthz" else b"ok"))
    health = wait_healthy(target.url, timeout_s=0)
    assert health["healthy"] is False, health
    assert health["error"].startswith("unhealthy: ") and reason in health["error"], health
    deployment = cl.check_deployment(target.url, "v1")
    assert deployment.status == "fail"
    if name != "a number release":
        assert reason in deployment.evidence, deployment
    # a rollback whose action ran still records its outcome: the target is unhealthy
    outcome = execute(
        command.Config(command=["true"], verify_timeout_s=0.01),
        target_url=target.url,
        release="v",
        run_id="r",
        reasons=[],
    )
    assert outcome["outcome"] == "rolled back, target unhealthy", outcome


def test_a_bad_admin_answer_is_a_clear_rollback_check_failure(serve) -> None:
    target = serve(lambda method, path: (200, {}, b'{"history": "v1"}'))
    check = cl.check_rollback(SyncbridgeRollback(), target.url, "adm")
    assert check.status == "fail" and "not a list of releases" in check.evidence


# --- rollback evidence and outcomes keep secrets out ----------------------------------------

HOOK_SECRET = "T0001/B0002/Zx9SecretPath"  # made up


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webhook_shows_only_scheme_and_host(serve) -> None:
    hook = serve(lambda method, path: (202, {}, b""))
    config = webhook.Config(url=f"{hook.url}/services/{HOOK_SECRET}")
    check = cl.check_rollback(config, "http://127.0.0.1:9", None)
    assert check.status == "pass" and check.evidence == f"webhook: webhook {hook.url}"
    down = webhook.Config(
        url=f"http://127.0.0.1:{_closed_port()}/services/{HOOK_SECRET}",
        verify_timeout_s=1,
    )
    outcome = execute(
        down, target_url="http://127.0.0.1:9", release="v", run_id="r", reasons=[], secret="t"
    )
    assert outcome["outcome"] == "failed" and "ConnectionError" in outcome["error"]
    assert "Zx9SecretPath" not in json.dumps(outcome), outcome


def _run_command(script: str, **kwargs: object) -> dict:
    return execute(
        command.Config(command=["sh", "-c", script], verify_timeout_s=0.01),
        target_url="http://127.0.0.1:9",
        release="v",
        run_id="r",
        reasons=[],
        **kwargs,  # type: ignore[arg-type]
    )


def test_command_output_is_scrubbed_of_every_secret_it_knows(monkeypatch) -> None:
    monkeypatch.setenv("DEPLOY_API_TOKEN", "worker-env-secret-1")
    admin = "admin-token-secret-3"
    outcome = _run_command(
        'echo "$DEPLOY_API_TOKEN $ROLLBACK_PASSWORD"; echo "' + admin + '" >&2; '
        "echo https://bot:hunter22@deploy.example.com/x",
        secret=admin,
        env={"ROLLBACK_PASSWORD": "passed-env-secret-2"},
    )
    text = json.dumps(outcome)
    assert outcome["exit_code"] == 0 and "deploy.example.com/x" in outcome["output_tail"]
    for value in ("worker-env-secret-1", "passed-env-secret-2", "hunter22", admin):
        assert value not in text, value
    assert outcome["output_tail"].count("***") == 4, outcome["output_tail"]


def test_a_secret_cut_by_the_output_tail_is_not_half_shown() -> None:
    admin = "admin-token-secret-3"
    # 2,010 characters: the 2,000-character tail starts in the middle of the token
    outcome = _run_command(
        f"printf '%s' {admin}; head -c 1990 /dev/zero | tr '\\0' x", secret=admin
    )
    assert outcome["output_tail"].endswith("x" * 1990)
    assert admin[-6:] not in outcome["output_tail"], outcome["output_tail"][:20]
