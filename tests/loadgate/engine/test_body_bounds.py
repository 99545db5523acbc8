"""A response keeps at most ``max_body`` bytes of its body: the target decides how much it
sends, not how much memory a VU holds. The rest is read and discarded, the response is timed to
its last byte and marked truncated, and the connection stays usable."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiohttp import web

from loadgate.engine.http import MAX_BODY_BYTES, HttpConnection
from loadgate.engine.vu import VU, StageRuntime
from loadgate.engine.window import Recorder
from tests.support.aio import run
from tests.support.raw_servers import RawServer, serve_app

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


async def huge(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * (3 * MIB))


async def huge_json(request: web.Request) -> web.Response:
    # a valid JSON document whose first bytes are valid JSON too ("1111…")
    return web.Response(body=b"1" * (2 * MIB), content_type="application/json")


async def chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for _ in range(40):
        await resp.write(b"c" * 50_000)
    await resp.write_eof()
    return resp


async def slow_tail(request: web.Request) -> web.StreamResponse:
    """1.5 MiB at once, then the last bytes 0.3 s later."""
    resp = web.StreamResponse(headers={"Content-Length": str(int(1.5 * MIB) + 10)})
    await resp.prepare(request)
    await resp.write(b"s" * int(1.5 * MIB))
    await asyncio.sleep(0.3)
    await resp.write(b"t" * 10)
    await resp.write_eof()
    return resp


async def small(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def start() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/huge", huge)
    app.router.add_get("/huge.json", huge_json)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/slow-tail", slow_tail)
    app.router.add_get("/small", small)
    runner, port = await serve_app(app)
    return runner, f"http://127.0.0.1:{port}"


def test_a_big_body_is_cut_at_one_mib_and_the_connection_goes_on() -> None:
    async def body() -> None:
        runner, url = await start()
        conn = HttpConnection(url)
        try:
            resp = await conn.request("GET", "/huge")
            assert resp.status == 200
            assert len(resp.body) == MAX_BODY_BYTES == MIB
            assert resp.size == 3 * MIB and resp.truncated
            assert "of 3145728B" in repr(resp)
            # the whole response was read: the next request reuses the connection
            after = await conn.request("GET", "/small")
            assert after.json() == {"ok": True} and after.connect_s == 0.0
            assert after.size == len(after.body) and not after.truncated
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


def test_a_truncated_body_is_never_parsed() -> None:
    async def body() -> None:
        runner, url = await start()
        conn = HttpConnection(url)
        try:
            resp = await conn.request("GET", "/huge.json")
            assert resp.truncated
            with pytest.raises(orjson.JSONDecodeError, match="truncated to 1048576 of 2097152"):
                resp.json()
            with pytest.raises(ValueError):  # what scenarios catch
                resp.json()
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


def test_chunked_and_connection_delimited_bodies_are_bounded_too() -> None:
    async def eof_delimited(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for _ in range(20):
            w.write(b"e" * 10_000)
            await w.drain()

    async def body() -> None:
        runner, url = await start()
        conn = HttpConnection(url, max_body=1000)
        try:
            resp = await conn.request("GET", "/chunked")
            assert resp.body == b"c" * 1000 and resp.size == 2_000_000 and resp.truncated
        finally:
            conn.close()
            await runner.cleanup()
        async with RawServer(eof_delimited) as srv:
            conn = HttpConnection(srv.url, max_body=123)
            try:
                resp = await conn.request("GET", "/")
                assert resp.body == b"e" * 123 and resp.size == 200_000 and resp.truncated
            finally:
                conn.close()

    run(body())


def test_the_whole_response_is_timed() -> None:
    async def body() -> None:
        runner, url = await start()
        conn = HttpConnection(url)
        try:
            started = time.perf_counter()
            resp = await conn.request("GET", "/slow-tail")
            took = time.perf_counter() - started
            assert resp.truncated and resp.size == int(1.5 * MIB) + 10
            assert resp.duration_s >= 0.3 and took >= 0.3
            assert resp.body == b"s" * MIB
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


def test_max_body_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_body"):
        HttpConnection("http://127.0.0.1:1", max_body=-1)


def test_a_vu_keeps_the_stages_bound_and_the_request_counts_as_answered() -> None:
    async def body() -> None:
        runner, url = await start()
        recorder = Recorder(0)
        rt = StageRuntime(
            base_url=url,
            recorder=recorder,
            time_scale=1.0,
            run_id="t",
            shard_index=0,
            users=[],
            max_body_bytes=4096,
        )
        vu = VU(rt, scenario="s", vu_id=0, local_id=0, options={})
        try:
            resp = await vu.http.get("/huge", name="/huge")
            assert resp.status == 200 and resp.truncated
            assert len(resp.body) == 4096 and resp.size == 3 * MIB
        finally:
            vu.close()
            await runner.cleanup()
        # no response at all (the server is gone): nothing kept, nothing cut
        again = VU(rt, scenario="s", vu_id=1, local_id=1, options={})
        failed = await again.http.get("/huge", timeout=2, name="/huge")
        again.close()
        assert failed.status == 0 and failed.size == 0 and failed.truncated is False
        default = StageRuntime(
            base_url=url, recorder=recorder, time_scale=1.0, run_id="t", shard_index=0, users=[]
        )
        assert default.max_body_bytes == MAX_BODY_BYTES

    run(body())
