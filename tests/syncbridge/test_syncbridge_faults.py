"""Each injected fault, observed from outside the way the real failure would look."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import aiohttp
import pytest
import requests

from tests.support.helpers import wait_for
from tests.syncbridge.sbtestlib import Api, metric, run, scrape, ws_connect, ws_url

pytestmark = pytest.mark.timeout(60)

SESSION = "/api/v1/sessions/s1"


@pytest.fixture
def svc(start_syncbridge, tmp_path):
    return start_syncbridge(tmp_path)


def _user_with_session(api: Api) -> str:
    tok = api.register()["access"]
    api.create_session(tok, "s1", {"data": 1})
    return tok


def test_error_rate_gives_that_fraction_of_5xx_and_metrics_count_them(svc):
    api = Api(svc.url)
    tok = _user_with_session(api)
    assert svc.set_faults({"error_rate": 0.2}) == {"error_rate": 0.2}
    statuses = [api.get(SESSION, token=tok).status_code for _ in range(400)]
    errors = sum(1 for s in statuses if s >= 500)
    assert set(statuses) <= {200, 500, 503}
    # binomial(400, 0.2): mean 80, sd 8; +-4 sd
    assert 48 <= errors <= 112, errors
    text = scrape(api)
    counted = sum(
        metric(text, "syncbridge_http_requests_total", route="/api/v1/sessions/{id}", status=s)
        for s in ("500", "503")
        if f'status="{s}"' in text
    )
    assert counted == errors
    # health, readiness and metrics are never faulted
    assert all(api.get("/healthz").status_code == 200 for _ in range(30))
    assert all(api.get("/readyz").status_code == 200 for _ in range(10))
    assert svc.set_faults({}) == {}
    assert all(api.get(SESSION, token=tok).status_code == 200 for _ in range(50))


def test_routes_scope_http_faults(svc):
    api = Api(svc.url)
    tok = _user_with_session(api)
    svc.set_faults({"error_rate": 1.0, "routes": ["/api/v1/sessions/{id}"]})
    assert all(api.get(SESSION, token=tok).status_code >= 500 for _ in range(20))
    assert all(api.get(SESSION + "/devices", token=tok).status_code == 200 for _ in range(20))
    assert api.post("/api/v1/auth/login", {"email": "x@y.z", "password": "p"}).status_code == 401


def test_faults_given_at_start(start_syncbridge, tmp_path):
    svc = start_syncbridge(tmp_path, faults={"error_rate": 1.0, "routes": ["/api/v1/sessions"]})
    api = Api(svc.url)
    tok = api.register()["access"]
    r = api.post("/api/v1/sessions", {"sessionId": "a", "state": {}}, token=tok)
    assert r.status_code in (500, 503)
    assert r.json()["error"].startswith("injected fault")
    assert svc.get_faults() == {"error_rate": 1.0, "routes": ["/api/v1/sessions"]}
    text = scrape(api)
    assert metric(text, "syncbridge_faults_active", fault="error_rate") == 1
    assert metric(text, "syncbridge_faults_active", fault="latency_ms") == 0


def test_invalid_faults_at_start_exit_with_an_error(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncbridge",
            "serve",
            "--port",
            "0",
            "--db",
            f"sqlite:///{tmp_path}/x.db",
            "--faults",
            '{"error_rat": 0.1}',
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "unknown fault keys: error_rat" in proc.stderr


@pytest.mark.slow
def test_latency_with_jitter(svc):
    api = Api(svc.url)
    tok = _user_with_session(api)
    svc.set_faults({"latency_ms": 150, "latency_jitter_ms": 50})
    took = []
    for _ in range(15):
        t0 = time.perf_counter()
        assert api.get(SESSION, token=tok).status_code == 200
        took.append(time.perf_counter() - t0)
    assert min(took) >= 0.095
    assert 0.11 <= sum(took) / len(took) <= 0.4
    t0 = time.perf_counter()
    api.get("/healthz")
    assert time.perf_counter() - t0 < 0.09
    # the service's own histogram shows it
    text = scrape(api)
    total = metric(
        text,
        "syncbridge_http_request_duration_seconds_sum",
        route="/api/v1/sessions/{id}",
        method="GET",
    )
    assert total >= 15 * 0.099


def test_storage_failures_give_503_and_count_as_connection_errors(svc):
    api = Api(svc.url)
    tok = _user_with_session(api)
    before = metric(scrape(api), "syncbridge_db_connection_errors_total")
    svc.set_faults({"storage_failure_rate": 1.0})
    r = api.get(SESSION, token=tok)
    assert r.status_code == 503
    assert r.json()["error"] == "storage unavailable"
    assert api.get("/readyz").status_code == 503
    assert api.get("/healthz").status_code == 200  # alive, not ready
    for _ in range(8):
        assert api.get(SESSION, token=tok).status_code == 503
    after = metric(scrape(api), "syncbridge_db_connection_errors_total")
    assert after - before >= 10

    svc.set_faults({"storage_failure_rate": 0.5})
    statuses = [api.get(SESSION, token=tok).status_code for _ in range(200)]
    failed = statuses.count(503)
    assert set(statuses) <= {200, 503}
    assert 60 <= failed <= 140, failed
    svc.set_faults({})
    assert api.get("/readyz").status_code == 200
    assert api.get(SESSION, token=tok).status_code == 200


def test_storage_failure_reaches_websocket_updates(svc):
    api = Api(svc.url)
    tok = _user_with_session(api)

    async def scenario():
        async with aiohttp.ClientSession() as s:
            ws = await ws_connect(s, svc.url, tok, "d")
            svc.set_faults({"storage_failure_rate": 1.0})
            op = [{"op": "replace", "path": "/data", "value": 2}]
            await ws.send_json(
                {
                    "type": "state_update",
                    "sessionId": "s1",
                    "delta": {"operations": op, "version": 1},
                }
            )
            reply = await ws.receive_json(timeout=5)
            await ws.close()
            return reply

    assert run(scenario())["code"] == "storage_unavailable"


def _rss(api: Api) -> float:
    return metric(scrape(api), "process_resident_memory_bytes")


def test_memory_growth_raises_rss_and_utilization(start_syncbridge, tmp_path):
    svc = start_syncbridge(tmp_path, memory_limit_mb=2048)
    api = Api(svc.url)
    text = scrape(api)
    assert metric(text, "syncbridge_memory_limit_bytes") == 2048 * 1024 * 1024
    rss0 = metric(text, "process_resident_memory_bytes")
    ratio0 = metric(text, "syncbridge_memory_utilization_ratio")
    assert 0 < ratio0 < 0.2
    svc.set_faults({"memory_growth_mb_per_s": 100})

    def grown() -> str | None:
        text = scrape(api)
        grew = metric(text, "process_resident_memory_bytes") - rss0 >= 80 * 1024 * 1024
        return text if grew else None

    text = wait_for(grown, timeout=1.5) or scrape(api)  # 80 MB take 0.8 s at 100 MB/s
    rss1 = metric(text, "process_resident_memory_bytes")
    ratio1 = metric(text, "syncbridge_memory_utilization_ratio")
    assert rss1 - rss0 >= 80 * 1024 * 1024, (rss0, rss1)
    assert ratio1 > ratio0 + 0.035
    assert abs(ratio1 - rss1 / (2048 * 1024 * 1024)) < 0.02
    # clearing the fault releases what it held
    svc.set_faults({})
    wait_for(lambda: _rss(api) < rss1 - 60 * 1024 * 1024, timeout=2)
    assert _rss(api) < rss1 - 60 * 1024 * 1024


def test_memory_past_the_limit_kills_like_oom(start_syncbridge, tmp_path):
    svc = start_syncbridge(tmp_path, memory_limit_mb=160)
    svc.set_faults({"memory_growth_mb_per_s": 200})
    assert svc.proc.wait(10) == 137
    assert any("memory limit exceeded" in r["msg"] for r in svc.log_records())


@pytest.mark.slow
def test_crash_after_s_kills_the_process(start_syncbridge, tmp_path):
    svc = start_syncbridge(tmp_path, faults={"crash_after_s": 2.0})
    t0 = time.monotonic()
    code = svc.proc.wait(10)
    assert code not in (0, None)
    assert time.monotonic() - t0 < 6
    with pytest.raises(requests.ConnectionError):
        requests.get(svc.url + "/healthz", timeout=2)


@pytest.mark.slow
def test_crash_fault_set_live_and_cleared_in_time(svc):
    svc.set_faults({"crash_after_s": 0.8})
    svc.set_faults({})  # cleared before it fires: no crash
    time.sleep(1.2)
    assert svc.alive()
    svc.set_faults({"crash_after_s": 0.3})
    assert svc.proc.wait(10) == 70


def test_ws_drop_rate_drops_connections_abruptly(svc):
    api = Api(svc.url)
    tok = api.register()["access"]
    svc.set_faults({"ws_drop_rate": 1.0})

    async def dropped_once():
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(ws_url(svc.url))
            await ws.send_json({"type": "auth", "token": tok, "deviceId": "d"})
            msg = await ws.receive(timeout=5)
            return msg.type, ws.close_code

    mtype, code = run(dropped_once())
    assert mtype in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert code != 1000  # no close handshake: abnormal closure
    assert metric(scrape(api), "syncbridge_websocket_dropped_total") >= 1

    svc.set_faults({"ws_drop_rate": 0.3})

    async def many():
        dropped = 0
        async with aiohttp.ClientSession() as s:
            for _ in range(80):
                ws = await s.ws_connect(ws_url(svc.url))
                await ws.send_json({"type": "auth", "token": tok, "deviceId": "d"})
                msg = await ws.receive(timeout=5)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await ws.close()
                else:
                    dropped += 1
        return dropped

    dropped = run(many())
    assert 8 <= dropped <= 44, dropped  # binomial(80, 0.3): mean 24, sd 4.1


def test_heartbeat_delay(svc):
    api = Api(svc.url)
    tok = api.register()["access"]

    async def rtt() -> float:
        async with aiohttp.ClientSession() as s:
            ws = await ws_connect(s, svc.url, tok, "d")
            t0 = time.perf_counter()
            await ws.send_json({"type": "heartbeat", "timestamp": 42})
            ack = await ws.receive_json(timeout=5)
            took = time.perf_counter() - t0
            assert ack["timestamp"] == 42
            await ws.close()
            return took

    assert run(rtt()) < 0.1
    svc.set_faults({"heartbeat_delay_ms": 300})
    delayed = run(rtt())
    assert 0.29 <= delayed < 2


def test_admin_api_auth_and_validation(svc):
    api = Api(svc.url)
    assert api.get("/admin/faults").status_code == 401
    assert api.get("/admin/faults", token="wrong").status_code == 401
    assert api.put("/admin/faults", {}, token="wrong").status_code == 401
    adm = svc.admin_token
    for body in [
        b"{nope",
        b"[]",
        b'{"error_rat": 0.1}',
        b'{"error_rate": 1.5}',
        b'{"error_rate": "0.1"}',
        b'{"error_rate": true}',
        b'{"latency_ms": -1}',
        b'{"routes": ["/healthz"]}',
        b'{"routes": "/api/v1/sessions"}',
    ]:
        r = api.call("PUT", "/admin/faults", data=body, token=adm)
        assert r.status_code == 400, body
        assert r.json()["error"]
    assert api.get("/admin/faults", token=adm).json() == {"faults": {}}
    faults = {"latency_ms": 1, "ws_drop_rate": 0.0, "routes": ["/api/v1/auth/login"]}
    r = api.put("/admin/faults", faults, token=adm)
    assert r.status_code == 200
    assert r.json()["faults"] == {"latency_ms": 1.0, "routes": ["/api/v1/auth/login"]}
    text = scrape(api)
    assert metric(text, "syncbridge_faults_active", fault="latency_ms") == 1
    assert metric(text, "syncbridge_faults_active", fault="ws_drop_rate") == 0
    assert api.put("/admin/faults", {}, token=adm).json() == {"faults": {}}
    assert metric(scrape(api), "syncbridge_faults_active", fault="latency_ms") == 0


def test_admin_disabled_without_a_token(start_syncbridge, tmp_path):
    svc = start_syncbridge(tmp_path, admin_token="")
    api = Api(svc.url)
    assert api.get("/admin/faults").status_code == 403
    assert api.get("/admin/faults", token="anything").status_code == 403
    assert api.put("/admin/faults", {"error_rate": 1}, token="").status_code == 403


def test_faults_do_not_stop_graceful_shutdown(svc):
    svc.set_faults({"latency_ms": 100, "memory_growth_mb_per_s": 10})
    assert svc.stop() == 0


def test_pool_exhaustion_times_out_as_storage_error(start_syncbridge, tmp_path):
    """A tiny pool under concurrent slow writes: waiters queue, in-use shows on /metrics."""
    svc = start_syncbridge(tmp_path, pool_size=1)
    api = Api(svc.url)
    tok = _user_with_session(api)
    text = scrape(api)
    assert metric(text, "syncbridge_db_pool_size") == 1
    assert metric(text, "syncbridge_db_pool_in_use") == 0

    async def burst():
        async with aiohttp.ClientSession() as s:

            async def one(i):
                async with s.put(
                    svc.url + SESSION,
                    json={"state": {"i": i, "pad": "x" * 20000}},
                    headers={"Authorization": f"Bearer {tok}"},
                ) as r:
                    return r.status

            return await asyncio.gather(*(one(i) for i in range(100)))

    statuses = run(burst())
    assert statuses.count(200) == 100  # queued, not failed: the pool waits up to 5 s
    got = api.get(SESSION, token=tok).json()
    assert got["version"] == 101


def _timed_gets(api: Api, path: str, tok: str, n: int) -> list[float]:
    took = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert api.get(path, token=tok).status_code == 200
        took.append(time.perf_counter() - t0)
    return took


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


@pytest.mark.slow
def test_tail_fault_slows_that_fraction_of_requests_and_leaves_the_median(svc):
    """A slow tail seen from outside: about tail_rate of real requests are tail_ms slower, the
    others (and so the median) are as before the fault."""
    api = Api(svc.url)
    tok = _user_with_session(api)
    before = _timed_gets(api, SESSION, tok, 100)
    assert _median(before) < 0.05
    tail_s = 0.25  # far above any unfaulted request's time on loopback
    assert svc.set_faults({"tail_rate": 0.1, "tail_ms": tail_s * 1000}) == {
        "tail_rate": 0.1,
        "tail_ms": 250.0,
    }
    took = _timed_gets(api, SESSION, tok, 400)
    slow = [t for t in took if t >= tail_s]
    # binomial(400, 0.1): mean 40, sd 6; +-4 sd (the service draws with its own unseeded RNG)
    assert 16 <= len(slow) <= 64, len(slow)
    fast = [t for t in took if t < tail_s]
    # the fast ones are unchanged: nothing between an ordinary request and the tail (but for a
    # stall of the busy machine, which can hold any one request for a few hundred ms: seen 680
    # ms for a tail request, so a count, not the max)
    assert sum(t >= tail_s - 0.1 for t in fast) <= 2, sorted(fast)[-5:]
    assert _median(took) < _median(before) + 0.03, (_median(before), _median(took))
    # the tail is tail_ms on top of an ordinary request (every request answered 200: no error
    # or timeout), not more
    assert _median(slow) < tail_s + 0.1, sorted(slow)
    assert sum(t >= tail_s + 0.2 for t in slow) <= 2, sorted(slow)[-5:]
    text = scrape(api)
    assert metric(text, "syncbridge_faults_active", fault="tail_rate") == 1
    assert metric(text, "syncbridge_faults_active", fault="tail_ms") == 1
    svc.set_faults({})
    assert max(_timed_gets(api, SESSION, tok, 50)) < tail_s


def test_tail_fault_honours_routes_and_adds_to_latency(svc):
    api = Api(svc.url)
    tok = _user_with_session(api)
    svc.set_faults(
        {"latency_ms": 30, "tail_rate": 1.0, "tail_ms": 100, "routes": ["/api/v1/sessions/{id}"]}
    )
    faulted = _timed_gets(api, SESSION, tok, 10)
    assert min(faulted) >= 0.125  # 30 ms + 100 ms, every request (tail_rate 1)
    other = _timed_gets(api, SESSION + "/devices", tok, 10)
    assert max(other) < 0.1  # another route: untouched
    t0 = time.perf_counter()
    assert api.get("/healthz").status_code == 200
    assert time.perf_counter() - t0 < 0.09  # health is never faulted


def test_tail_fault_validation(svc):
    api = Api(svc.url)
    adm = svc.admin_token
    for body in (
        {"tail_rate": 1.5},
        {"tail_rate": -0.1},
        {"tail_rate": "0.1"},
        {"tail_ms": -1},
        {"tail_ms": 200_000},
        {"tail_ms": True},
    ):
        r = api.put("/admin/faults", body, token=adm)
        assert r.status_code == 400, body
        assert "tail_" in r.json()["error"]
    assert svc.get_faults() == {}


def test_tail_delay_draws_with_the_given_rng():
    import random

    from syncbridge.faults import parse_faults

    faults = parse_faults(
        {"latency_ms": 20, "latency_jitter_ms": 2, "tail_rate": 0.05, "tail_ms": 40}
    )
    assert faults.http_active
    delays = [faults.delay_ms(random.Random(7)) for _ in range(3)]
    assert delays[0] == delays[1] == delays[2]  # the same seed, the same draw
    rng = random.Random(1234)
    drawn = [faults.delay_ms(rng) for _ in range(20_000)]
    slow = sum(1 for d in drawn if d >= 58)
    assert all(18 <= d <= 22 or 58 <= d <= 62 for d in drawn)
    # binomial(20000, 0.05): mean 1000, sd 31
    assert 876 <= slow <= 1124, slow
    assert not parse_faults({"tail_rate": 0.5}).http_active  # no tail_ms: nothing to wait


@pytest.mark.slow
def test_tail_routes_slow_one_endpoint_over_a_base_latency(svc):
    """Every API route keeps a base latency; tail_routes with tail_rate 1 adds to one only."""
    api = Api(svc.url)
    tok = _user_with_session(api)
    svc.set_faults(
        {
            "latency_ms": 40,
            "tail_rate": 1.0,
            "tail_ms": 100,
            "tail_routes": ["/api/v1/sessions/{id}/devices"],
        }
    )
    assert svc.get_faults()["tail_routes"] == ["/api/v1/sessions/{id}/devices"]
    base = _timed_gets(api, SESSION, tok, 10)
    slowed = _timed_gets(api, SESSION + "/devices", tok, 10)
    # latency only adds: the lower bounds hold on any machine; a busy one may stall a request,
    # so the base route's upper bound is on its median (a tail would put every one >= 140 ms)
    assert min(base) >= 0.038 and _median(base) < 0.125, base
    assert min(slowed) >= 0.138, slowed
    bad = api.put("/admin/faults", {"tail_routes": ["/healthz"]}, token=svc.admin_token)
    assert bad.status_code == 400 and "tail_routes" in bad.json()["error"]
