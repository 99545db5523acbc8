"""Operations: health, readiness, metrics, OpenAPI, logs, restart, shutdown, release rollback."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import aiohttp
import pytest

from syncbridge.launcher import start_syncbridge as start
from tests.syncbridge.sbtestlib import (
    API_ROUTES,
    PASSWORD,
    Api,
    metric,
    parse_metrics,
    run,
    scrape,
    ws_connect,
)

pytestmark = pytest.mark.timeout(60)


def test_health_and_readiness(api: Api):
    h = api.get("/healthz")
    assert h.status_code == 200
    assert h.json()["status"] == "ok"
    assert h.json()["release"] == "v1"
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"


def test_readyz_is_503_when_storage_is_gone(start_syncbridge, tmp_path):
    svc = start_syncbridge(tmp_path)
    api = Api(svc.url)
    assert api.get("/readyz").status_code == 200
    svc.set_faults({"storage_failure_rate": 1})
    assert api.get("/readyz").status_code == 503
    svc.set_faults({})
    assert api.get("/readyz").status_code == 200
    svc.db_path.unlink()  # the database is gone (open connections would still work)
    r = api.get("/readyz")
    assert r.status_code == 503
    assert "missing" in r.json()["error"]


REQUIRED_SERIES = [
    "syncbridge_http_requests_total",
    "syncbridge_http_request_duration_seconds_bucket",
    "syncbridge_http_request_duration_seconds_count",
    "syncbridge_http_request_duration_seconds_sum",
    "syncbridge_websocket_connections",
    "syncbridge_websocket_dropped_total",
    "syncbridge_db_pool_size",
    "syncbridge_db_pool_in_use",
    "syncbridge_db_connection_errors_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "syncbridge_memory_limit_bytes",
    "syncbridge_memory_utilization_ratio",
    "syncbridge_cpu_limit_cores",
    "syncbridge_build_info",
    "syncbridge_faults_active",
]


def test_metrics_exposition(api: Api):
    tok = api.register()["access"]
    api.get("/api/v1/sessions/abc", token=tok)  # 404 on a templated route
    api.get("/no/such/route")
    text = scrape(api)
    names = {name for name, _, _ in parse_metrics(text)}
    missing = [n for n in REQUIRED_SERIES if n not in names]
    assert not missing
    assert metric(text, "syncbridge_build_info", release="v1") == 1
    assert metric(text, "syncbridge_db_pool_size") == 8
    assert metric(text, "syncbridge_cpu_limit_cores") >= 1
    assert (
        metric(
            text,
            "syncbridge_http_requests_total",
            route="/api/v1/sessions/{id}",
            method="GET",
            status="404",
        )
        >= 1
    )
    assert metric(text, "syncbridge_http_requests_total", route="unmatched", status="404") >= 1
    assert (
        metric(
            text,
            "syncbridge_http_requests_total",
            route="/api/v1/auth/register",
            method="POST",
            status="201",
        )
        >= 1
    )
    # no raw paths as label values: the label set stays bounded
    routes = {lab.get("route") for n, lab, _ in parse_metrics(text) if "route" in lab}
    assert all(r == "unmatched" or r.startswith("/") for r in routes)
    assert "/api/v1/sessions/abc" not in routes
    assert "/no/such/route" not in routes
    assert {"syncbridge_faults_active"} <= names
    faults = {lab["fault"] for n, lab, _ in parse_metrics(text) if n == "syncbridge_faults_active"}
    assert faults == {
        "error_rate",
        "latency_ms",
        "latency_jitter_ms",
        "ws_drop_rate",
        "heartbeat_delay_ms",
        "memory_growth_mb_per_s",
        "crash_after_s",
        "storage_failure_rate",
        "tail_rate",
        "tail_ms",
    }


def test_openapi_describes_the_api(api: Api):
    r = api.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    for path in [
        *API_ROUTES,
        "/ws",
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/faults",
        "/admin/release",
        "/admin/rollback",
    ]:
        assert path in spec["paths"], path
    assert set(spec["paths"]["/api/v1/sessions/{id}"]) >= {"get", "put"}


def test_structured_logs_without_secrets(start_syncbridge, tmp_path):
    svc = start_syncbridge(tmp_path)
    api = Api(svc.url)
    user = api.register()
    api.post("/api/v1/auth/login", {"email": user["email"], "password": PASSWORD})
    api.post("/api/v1/auth/refresh", {"refreshToken": user["refresh"]})
    api.get("/api/v1/sessions/x", token=user["access"])
    api.get("/admin/faults", token=svc.admin_token)
    svc.set_faults({"latency_ms": 1})
    svc.stop()
    raw = svc.log_path.read_text()
    records = [json.loads(line) for line in raw.splitlines()]
    assert records
    for rec in records:
        assert {"ts", "level", "msg"} <= set(rec)
        assert rec["ts"].endswith("Z")
    requests_logged = [r for r in records if r["msg"] == "request"]
    assert any(
        r["route"] == "/api/v1/auth/login" and r["status"] == 200 and r["duration_ms"] >= 0
        for r in requests_logged
    )
    assert any(
        r["route"] == "/api/v1/sessions/{id}" and r["status"] == 404 for r in requests_logged
    )
    for secret in (PASSWORD, user["access"], user["refresh"], svc.admin_token):
        assert secret not in raw
    msgs = [r["msg"] for r in records]
    assert "listening" in msgs
    assert msgs[-1] == "stopped"


def test_port_zero_prints_the_port(tmp_path):
    svc = start(tmp_path)
    try:
        assert Api(svc.url).get("/healthz").status_code == 200
        out = next(tmp_path.glob("syncbridge-*.stdout")).read_text()
        first = json.loads(out.splitlines()[0])
        assert first["msg"] == "listening"
        assert first["port"] == svc.port
        assert first["url"] == svc.url
    finally:
        svc.stop()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_loopback(tmp_path):
    svc = start(tmp_path, host="::1")
    try:
        assert svc.url.startswith("http://[::1]:")
        assert Api(svc.url).get("/healthz").status_code == 200
    finally:
        svc.stop()


def test_restart_keeps_data_and_accepts_earlier_tokens(tmp_path):
    svc = start(tmp_path)
    api = Api(svc.url)
    user = api.register()
    api.create_session(user["access"], "persist", {"k": "v"})
    assert svc.stop() == 0
    svc2 = start(tmp_path, db_path=svc.db_path)
    try:
        api2 = Api(svc2.url)
        got = api2.get("/api/v1/sessions/persist", token=user["access"])
        assert got.status_code == 200
        assert got.json()["state"] == {"k": "v"}
        assert (
            api2.post("/api/v1/auth/refresh", {"refreshToken": user["refresh"]}).status_code == 200
        )
        login = api2.post("/api/v1/auth/login", {"email": user["email"], "password": PASSWORD})
        assert login.status_code == 200
    finally:
        svc2.stop()


def test_graceful_shutdown_closes_websockets_1001_and_finishes_requests(tmp_path):
    svc = start(tmp_path)
    api = Api(svc.url)
    tok = api.register()["access"]
    api.create_session(tok, "s")
    svc.set_faults({"latency_ms": 700})
    result = {}

    def slow_request():
        result["status"] = api.get("/api/v1/sessions/s", token=tok).status_code

    async def scenario():
        async with aiohttp.ClientSession() as s:
            ws = await ws_connect(s, svc.url, tok, "d")
            t = threading.Thread(target=slow_request)
            t.start()
            await asyncio.sleep(0.2)  # the request is in flight
            svc.proc.send_signal(signal.SIGTERM)
            msg = await ws.receive(timeout=5)
            await asyncio.get_running_loop().run_in_executor(None, t.join, 10)
            return msg.type, ws.close_code

    mtype, code = run(scenario())
    assert mtype == aiohttp.WSMsgType.CLOSE
    assert code == 1001
    assert result["status"] == 200
    assert svc.proc.wait(10) == 0
    msgs = [r["msg"] for r in svc.log_records()]
    assert "shutting down" in msgs
    assert msgs[-1] == "stopped"


def test_sigint_also_stops_cleanly(tmp_path):
    svc = start(tmp_path)
    svc.proc.send_signal(signal.SIGINT)
    assert svc.proc.wait(10) == 0


def test_release_history_and_rollback(tmp_path):
    svc = start(
        tmp_path, release="v2", extra_args=["--previous-release", "v1"], faults={"error_rate": 1.0}
    )
    try:
        api = Api(svc.url)
        adm = svc.admin_token
        assert api.get("/admin/release").status_code == 401
        info = api.get("/admin/release", token=adm).json()
        assert info["release"] == "v2"
        assert [h["release"] for h in info["history"]] == ["v1", "v2"]
        assert info["history"][-1]["faults"] == {"error_rate": 1.0}
        assert api.get("/healthz").json()["release"] == "v2"
        r = api.post("/api/v1/auth/register", {"email": "a@b.c", "password": PASSWORD})
        assert r.status_code >= 500

        rb = api.post("/admin/rollback", token=adm)
        assert rb.status_code == 200
        assert rb.json() == {"release": "v1", "rolledBackFrom": "v2", "faults": {}}
        assert api.get("/healthz").json()["release"] == "v1"
        text = scrape(api)
        assert metric(text, "syncbridge_build_info", release="v1") == 1
        assert 'release="v2"' not in text
        r = api.post("/api/v1/auth/register", {"email": "a@b.c", "password": PASSWORD})
        assert r.status_code == 201
        info = api.get("/admin/release", token=adm).json()
        assert [h["release"] for h in info["history"]] == ["v1"]
        assert [h["release"] for h in info["rolledBack"]] == ["v2"]
        assert api.post("/admin/rollback", token=adm).status_code == 409
    finally:
        svc.stop()


def test_rollback_works_while_storage_is_failing(tmp_path):
    svc = start(tmp_path, release="v2", extra_args=["--previous-release", "v1"])
    try:
        api = Api(svc.url)
        svc.set_faults({"storage_failure_rate": 1.0})
        assert api.get("/readyz").status_code == 503
        rb = api.post("/admin/rollback", token=svc.admin_token)
        assert rb.status_code == 200
        assert api.get("/readyz").status_code == 200
    finally:
        svc.stop()


def test_redeploy_on_the_same_database_appends_to_history(tmp_path):
    svc = start(tmp_path, release="v1")
    svc.stop()
    svc = start(tmp_path, release="v1", db_path=svc.db_path)  # a restart: not a new release
    svc.stop()
    svc = start(tmp_path, release="v2", db_path=svc.db_path)
    try:
        info = Api(svc.url).get("/admin/release", token=svc.admin_token).json()
        assert [h["release"] for h in info["history"]] == ["v1", "v2"]
    finally:
        svc.stop()


def test_cli_help_lists_the_contract_options():
    out = subprocess.run(
        [sys.executable, "-m", "syncbridge", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    for opt in [
        "--host",
        "--port",
        "--db",
        "--release",
        "--faults",
        "--admin-token",
        "--log-file",
        "--kdf-cost",
        "--token-ttl",
        "--pool-size",
        "--memory-limit-mb",
        "--cpu-limit-cores",
        "--port-file",
    ]:
        assert opt in out


@pytest.mark.slow
def test_login_does_not_block_other_requests(tmp_path):
    """scrypt runs off the event loop: health checks stay fast during expensive logins."""
    svc = start(tmp_path, kdf_cost=16)
    try:
        api = Api(svc.url)
        user = api.register()

        async def scenario():
            async with aiohttp.ClientSession() as s:

                async def login():
                    async with s.post(
                        svc.url + "/api/v1/auth/login",
                        json={"email": user["email"], "password": PASSWORD},
                    ) as r:
                        return r.status

                logins = [asyncio.create_task(login()) for _ in range(4)]
                await asyncio.sleep(0.05)
                worst = 0.0
                while not all(t.done() for t in logins):
                    t0 = time.perf_counter()
                    async with s.get(svc.url + "/healthz") as r:
                        assert r.status == 200
                    worst = max(worst, time.perf_counter() - t0)
                    await asyncio.sleep(0.01)
                return [t.result() for t in logins], worst

        statuses, worst = run(scenario())
        assert statuses == [200] * 4
        assert worst < 0.15, worst  # one scrypt at N=2^16 takes ~350 ms here
    finally:
        svc.stop()


def test_busy_port_fails_cleanly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "syncbridge",
                "serve",
                "--port",
                str(port),
                "--db",
                f"sqlite:///{tmp_path}/x.db",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    assert "Address already in use" in proc.stderr
    assert "Traceback" not in proc.stderr
