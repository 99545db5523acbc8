"""Unit tests of the service's parts that need no server: faults, patches, KDF, pool."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest

from syncbridge import storage
from syncbridge.auth import Auth, AuthError, hash_password_sync, verify_password_sync
from syncbridge.faults import FaultError, Faults, parse_faults
from syncbridge.metrics import Metrics
from syncbridge.storage import Pool, StorageError, patch_state


def test_parse_faults_accepts_the_documented_keys():
    f = parse_faults(
        {
            "error_rate": 0.1,
            "latency_ms": 200,
            "latency_jitter_ms": 50,
            "ws_drop_rate": 0.01,
            "heartbeat_delay_ms": 100,
            "memory_growth_mb_per_s": 5,
            "crash_after_s": 0,
            "storage_failure_rate": 0.5,
            "routes": ["/api/v1/auth/login"],
        }
    )
    assert f.http_active
    assert f.applies_to("/api/v1/auth/login")
    assert not f.applies_to("/api/v1/sessions/{id}")
    assert not f.applies_to("/healthz")
    assert f.active()["crash_after_s"] is True  # 0 s is a valid (immediate) crash
    assert parse_faults({}) == Faults()
    assert not parse_faults({}).applies_to("/metrics")
    assert parse_faults({"error_rate": 0.2}).applies_to("/api/v1/sessions/{id}/devices")


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"nope": 1},
        {"error_rate": -0.1},
        {"error_rate": 2},
        {"error_rate": "x"},
        {"error_rate": True},
        {"latency_ms": float("nan")},
        {"routes": ["/healthz"]},
        {"routes": [1]},
        {"routes": "/api/v1/sessions"},
    ],
)
def test_parse_faults_rejects(bad):
    with pytest.raises(FaultError):
        parse_faults(bad)


def test_patch_state_applies_rfc6902():
    state = orjson.dumps({"items": [1], "a": {"b": 1}})
    ops = [
        {"op": "add", "path": "/items/-", "value": 2},
        {"op": "replace", "path": "/a/b", "value": 3},
        {"op": "test", "path": "/a/b", "value": 3},
        {"op": "move", "from": "/a", "path": "/c"},
    ]
    assert orjson.loads(patch_state(state, ops, 10_000)) == {"items": [1, 2], "c": {"b": 3}}


@pytest.mark.parametrize(
    "ops",
    [
        "x",
        [1],
        [{"op": "nope", "path": "/a"}],
        [{"op": "remove", "path": "/missing"}],
        [{"op": "add", "path": "/missing/deeper", "value": 1}],
        [{"op": "test", "path": "/a", "value": 2}],
        [{"op": "replace", "path": "", "value": [1]}],  # the state must stay an object
        [{"op": "add", "path": f"/k{i}", "value": i} for i in range(101)],
    ],
)
def test_patch_state_rejects(ops):
    with pytest.raises(Exception):  # noqa: B017 - any error means invalid_patch
        patch_state(orjson.dumps({"a": 1}), ops, 10_000)


def test_patch_state_bounds_copy_blowup():
    ops = [{"op": "add", "path": "/x", "value": "y" * 1000}]
    ops += [{"op": "copy", "from": "", "path": f"/c{i}"} for i in range(60)]
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="too large"):
        patch_state(orjson.dumps({}), ops, 1024 * 1024)
    assert time.perf_counter() - t0 < 2


def test_password_hashes_are_salted_and_carry_their_cost():
    h1 = hash_password_sync("secret-pass", 4)
    h2 = hash_password_sync("secret-pass", 4)
    assert h1 != h2
    assert h1.startswith("scrypt$4$8$1$")
    assert verify_password_sync("secret-pass", h1)
    assert not verify_password_sync("secret-pasS", h1)
    assert not verify_password_sync("secret-pass", "garbage")
    # a hash made at another cost still verifies
    assert verify_password_sync("pw", hash_password_sync("pw", 5))


def test_tokens_are_typed_and_signed():
    a = Auth("k1" * 16, kdf_cost=2, access_ttl=60)
    b = Auth("k2" * 16, kdf_cost=2, access_ttl=60)
    try:
        tok = a.issue_access(7)
        assert a.verify_access(tok) == 7
        with pytest.raises(AuthError):
            b.verify_access(tok)  # another secret
        refresh, jti, _ = a.issue_refresh(7)
        assert a.verify_refresh(refresh) == (7, jti)
        with pytest.raises(AuthError):
            a.verify_access(refresh)
        with pytest.raises(AuthError):
            a.verify_refresh(tok)
    finally:
        a.close()
        b.close()


class _FaultsStub:
    def __init__(self):
        self.current = Faults()


def _pool(tmp_path, size, timeout=5.0):
    metrics = Metrics("t", 2**30, 1.0, size)
    faults = _FaultsStub()
    pool = Pool(str(tmp_path / "p.db"), size, metrics, faults, acquire_timeout=timeout)
    pool.open()
    return pool, metrics, faults


def _gauge(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name)


def test_pool_bounds_concurrency_and_queues_waiters(tmp_path):
    pool, metrics, _ = _pool(tmp_path, 2)
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def work(conn, i):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.01)
        with lock:
            state["now"] -= 1
        return conn.execute("SELECT ?", (i,)).fetchone()[0]

    async def main():
        results = await asyncio.gather(*(pool.run(work, i) for i in range(20)))
        return results

    try:
        assert asyncio.run(main()) == list(range(20))
        assert state["max"] == 2
        assert pool.in_use == 0
        assert _gauge(metrics, "syncbridge_db_pool_in_use") == 0
        assert _gauge(metrics, "syncbridge_db_pool_size") == 2
    finally:
        pool.close()


def test_pool_timeout_counts_an_error_and_loses_no_connection(tmp_path):
    pool, metrics, _ = _pool(tmp_path, 1, timeout=0.1)

    async def main():
        blocker = asyncio.create_task(pool.run(lambda conn: time.sleep(0.4)))
        await asyncio.sleep(0.02)
        with pytest.raises(StorageError, match="timed out"):
            await pool.run(storage.ping)
        await blocker
        assert await pool.run(storage.ping)  # the connection came back
        # cancellation while waiting also gives the connection back
        blocker = asyncio.create_task(pool.run(lambda conn: time.sleep(0.05)))
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(pool.run(storage.ping))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await blocker
        assert await pool.run(storage.ping)

    try:
        asyncio.run(main())
        assert _gauge(metrics, "syncbridge_db_connection_errors_total") == 1
        assert pool.in_use == 0
    finally:
        pool.close()


def test_pool_storage_fault_fails_acquisitions_but_not_exempt_ones(tmp_path):
    pool, metrics, faults = _pool(tmp_path, 1)
    faults.current = Faults(storage_failure_rate=1.0)

    async def main():
        with pytest.raises(StorageError, match="lost"):
            await pool.run(storage.ping)
        assert await pool.run(storage.ping, exempt=True)

    try:
        asyncio.run(main())
        assert _gauge(metrics, "syncbridge_db_connection_errors_total") == 1
    finally:
        pool.close()
