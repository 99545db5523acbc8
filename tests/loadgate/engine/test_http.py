"""HttpConnection against real servers on loopback: aiohttp for the ordinary paths, raw asyncio
servers for the edge cases (chunked, EOF-delimited, interim 1xx, abrupt closes, timeouts,
malformed responses), and a TLS server with a certificate made here."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine

import orjson
import pytest
from aiohttp import web

from loadgate.engine.http import HttpConnection, HttpError, Response
from tests.support.aio import run
from tests.support.raw_servers import Handler, RawServer, serve_app, tls_contexts

pytestmark = pytest.mark.timeout(30)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# --- servers ------------------------------------------------------------------------------


async def echo_handler(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path_qs,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode(),
            "peer": request.transport.get_extra_info("peername")[1],
        }
    )


async def big_handler(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * (1 << 20))


async def chunked_handler(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(5):
        await resp.write(b"part%d;" % i)
        await asyncio.sleep(0.01)
    await resp.write(b"y" * 200_000)
    await resp.write_eof()
    return resp


async def status_handler(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(status=code, body=None if code in (204, 304) else b"status body")


async def slow_handler(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "0.2")))
    return web.Response(text="slow")


async def close_handler(request: web.Request) -> web.Response:
    return web.Response(text="bye", headers={"Connection": "close"})


async def start_aiohttp(
    host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/echo", echo_handler)
    app.router.add_route("*", "/api/echo", echo_handler)
    app.router.add_get("/big", big_handler)
    app.router.add_get("/chunked", chunked_handler)
    app.router.add_get("/status/{code}", status_handler)
    app.router.add_get("/slow", slow_handler)
    app.router.add_get("/close", close_handler)
    return await serve_app(app, host, ssl_context)


async def read_request(r: asyncio.StreamReader) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await r.readexactly(int(line.split(b":")[1]))
    return head


def respond(*pieces: bytes, gap: float = 0.0, hold: float = 0.0, requests: int = 1) -> Handler:
    """A raw handler that reads a request and writes ``pieces`` (``gap`` seconds apart),
    ``requests`` times over, then keeps the connection open for ``hold`` seconds."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for _ in range(requests):
            await read_request(r)
            for i, piece in enumerate(pieces):
                if i:
                    await asyncio.sleep(gap)
                w.write(piece)
                await w.drain()
        if hold:
            await asyncio.sleep(hold)

    return handler


# --- client harness -----------------------------------------------------------------------


async def with_aiohttp(
    check: Callable[[HttpConnection, int], Awaitable[None]],
    *,
    host: str = "127.0.0.1",
    url_host: str | None = None,
    server_ssl: ssl.SSLContext | None = None,
    path: str = "",
    **conn_kw: object,
) -> None:
    """Start the aiohttp server, run ``check(conn, port)`` with a connection to it, clean up."""
    runner, port = await start_aiohttp(host, server_ssl)
    name = url_host or (f"[{host}]" if ":" in host else host)
    scheme = "https" if server_ssl else "http"
    conn = HttpConnection(f"{scheme}://{name}:{port}{path}", **conn_kw)  # type: ignore[arg-type]
    try:
        await check(conn, port)
    finally:
        conn.close()
        await runner.cleanup()


def run_on_aiohttp(
    check: Callable[[HttpConnection, int], Awaitable[None]],
    *,
    loop_run: Callable[[Coroutine[object, object, None]], None] = run,
    **kw: object,
) -> None:
    loop_run(with_aiohttp(check, **kw))  # type: ignore[arg-type]


async def with_raw(
    handler: Handler, check: Callable[[HttpConnection, RawServer], Awaitable[None]]
) -> None:
    """Serve ``handler`` raw and run ``check(conn, server)`` with a connection to it."""
    async with RawServer(handler) as srv:
        conn = HttpConnection(srv.url)
        try:
            await check(conn, srv)
        finally:
            conn.close()


def run_on_raw(
    handler: Handler, check: Callable[[HttpConnection, RawServer], Awaitable[None]]
) -> None:
    run(with_raw(handler, check))


async def request_error(
    conn: HttpConnection, method: str = "GET", path: str = "/", **kw: object
) -> HttpError:
    """The HttpError that the request raises (it must raise one)."""
    with pytest.raises(HttpError) as ei:
        await conn.request(method, path, **kw)
    return ei.value


# --- ordinary paths -----------------------------------------------------------------------


def test_keep_alive_reuses_one_connection_and_times_it() -> None:
    async def check(conn: HttpConnection, port: int) -> None:
        r1 = await conn.request("GET", "/echo?a=1")
        r2 = await conn.request("GET", "/echo")
        assert isinstance(r1, Response)
        assert r1.status == 200 and r2.status == 200
        assert r1.json()["path"] == "/echo?a=1"
        assert r1.json()["peer"] == r2.json()["peer"]  # same client socket
        assert r1.connect_s > 0 and r2.connect_s == 0.0
        assert 0 < r1.duration_s < 5 and 0 < r2.duration_s < 5
        assert r1.header("content-type") == "application/json; charset=utf-8"
        assert r1.header("CONTENT-TYPE") == r1.header("Content-Type")
        assert r1.header("x-missing") is None
        assert any(k.lower() == b"content-length" for k, _ in r1.headers)
        assert conn.connected

    run_on_aiohttp(check)


def test_bodies_headers_and_prefix() -> None:
    async def check(conn: HttpConnection, port: int) -> None:
        r = await conn.request("POST", "/echo", body=b"raw-bytes")
        j = r.json()
        assert j["method"] == "POST" and j["path"] == "/api/echo"
        assert j["body"] == "raw-bytes"
        assert j["headers"]["content-length"] == "9"
        assert j["headers"]["host"] == f"127.0.0.1:{port}"
        assert j["headers"]["x-tenant"] == "t1"
        assert j["headers"]["user-agent"].startswith("loadgate/")

        r = await conn.request("PUT", "echo", json={"k": [1, 2]}, headers={"X-Req": "1"})
        j = r.json()
        assert j["path"] == "/api/echo" and orjson.loads(j["body"]) == {"k": [1, 2]}
        assert j["headers"]["content-type"] == "application/json"
        assert j["headers"]["x-req"] == "1" and j["headers"]["x-tenant"] == "t1"

        # per-request override of a default header; no duplicate
        r = await conn.request("POST", "/echo", headers={"x-tenant": "t2"})
        j = r.json()
        assert j["headers"]["x-tenant"] == "t2" and j["headers"]["content-length"] == "0"

        conn.set_header("Authorization", "Bearer abc")
        conn.set_header("X-Tenant", None)
        j = (await conn.request("DELETE", "/echo", body="é")).json()
        assert j["method"] == "DELETE" and j["body"] == "é"
        assert j["headers"]["authorization"] == "Bearer abc"
        assert "x-tenant" not in j["headers"]

        with pytest.raises(ValueError):
            await conn.request("GET", "/echo", headers={"X-Bad": "a\r\nInjected: 1"})
        with pytest.raises(ValueError):
            await conn.request("GET", "http://elsewhere/echo")

    run_on_aiohttp(check, path="/api/", default_headers={"X-Tenant": "t1"})


def test_set_header_is_per_connection() -> None:
    """Connections to one base URL share the parsed URL and encoded defaults; set_header must
    copy, not change them for the other VUs."""

    async def check(a: HttpConnection, port: int) -> None:
        base = f"http://127.0.0.1:{port}"
        b = HttpConnection(base, default_headers={"X-App": "1"})
        try:
            a.set_header("Authorization", "Bearer A")
            ja = (await a.request("GET", "/echo")).json()["headers"]
            jb = (await b.request("GET", "/echo")).json()["headers"]
            assert ja["authorization"] == "Bearer A" and ja["x-app"] == "1"
            assert "authorization" not in jb and jb["x-app"] == "1"
            # the per-request override path merges with this connection's defaults only
            jb = (await b.request("GET", "/echo", headers={"x-app": "2"})).json()["headers"]
            assert "authorization" not in jb and jb["x-app"] == "2"
            c = HttpConnection(base, default_headers={"X-App": "1"})
            jc = (await c.request("GET", "/echo")).json()["headers"]
            assert "authorization" not in jc
            c.close()
        finally:
            b.close()

    run_on_aiohttp(check, default_headers={"X-App": "1"})


def test_stray_bytes_after_a_response_drop_the_connection() -> None:
    async def check(conn: HttpConnection, srv: RawServer) -> None:
        r = await conn.request("GET", "/")
        assert r.body == b"ok"
        await asyncio.sleep(0.05)
        assert not conn.connected  # the garbage was not taken as the next response
        r = await conn.request("GET", "/")
        assert r.body == b"ok" and r.connect_s > 0 and srv.connections == 2

    run_on_raw(respond(OK + b"GARBAGE", hold=0.5), check)


def test_statuses_without_body_and_errors_as_responses() -> None:
    async def check(conn: HttpConnection, port: int) -> None:
        first = await conn.request("GET", "/status/204")
        assert first.status == 204 and first.body == b""
        r = await conn.request("GET", "/status/304")
        assert r.status == 304 and r.body == b"" and r.connect_s == 0.0
        r = await conn.request("GET", "/status/404")
        assert r.status == 404 and r.body == b"status body"
        r = await conn.request("GET", "/status/503")
        assert r.status == 503 and r.connect_s == 0.0
        # HEAD: Content-Length announced, no body, connection still usable
        r = await conn.request("HEAD", "/big")
        assert r.status == 200 and r.body == b""
        assert r.header("content-length") == str(1 << 20)
        r = await conn.request("GET", "/echo")
        assert r.status == 200 and r.connect_s == 0.0
        r = await conn.request("HEAD", "/status/404")
        assert r.status == 404 and r.body == b""
        r = await conn.request("GET", "/big")
        assert r.body == b"x" * (1 << 20) and r.connect_s == 0.0

    run_on_aiohttp(check)


def test_chunked_response_from_aiohttp() -> None:
    async def check(conn: HttpConnection, port: int) -> None:
        r = await conn.request("GET", "/chunked")
        assert r.header("transfer-encoding") == "chunked"
        assert r.body == b"part0;part1;part2;part3;part4;" + b"y" * 200_000
        r = await conn.request("GET", "/echo")
        assert r.status == 200 and r.connect_s == 0.0

    run_on_aiohttp(check)


def test_connection_close_header_reconnects() -> None:
    async def check(conn: HttpConnection, port: int) -> None:
        r = await conn.request("GET", "/close")
        assert r.body == b"bye" and not conn.connected
        r = await conn.request("GET", "/echo")
        assert r.status == 200 and r.connect_s > 0

    run_on_aiohttp(check)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def check(conn: HttpConnection, port: int) -> None:
        r = await conn.request("GET", "/echo")
        assert r.status == 200
        assert r.json()["headers"]["host"] == f"[::1]:{port}"

    run_on_aiohttp(check, host="::1")


def test_localhost_name_resolves() -> None:
    async def check(conn: HttpConnection, port: int) -> None:
        try:
            r = await conn.request("GET", "/echo")
        except HttpError as exc:  # localhost may resolve to ::1 first and not be served
            assert exc.kind == "connect"
        else:
            assert r.json()["headers"]["host"] == f"localhost:{port}"

    run_on_aiohttp(check, url_host="localhost")


def test_tls_with_self_signed_certificate(tmp_path) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)

    async def check(conn: HttpConnection, port: int) -> None:
        strict = HttpConnection(f"https://127.0.0.1:{port}")  # default context: not trusted
        try:
            r1 = await conn.request("GET", "/echo")
            r2 = await conn.request("GET", "/chunked")
            assert r1.status == 200 and r1.connect_s > 0
            assert r2.connect_s == 0.0 and r2.body.startswith(b"part0;")
            assert len(r2.body) == 30 + 200_000
            err = await request_error(strict, "GET", "/echo")
            assert err.kind == "connect"
            assert "certificate" in str(err).lower()
        finally:
            strict.close()

    run_on_aiohttp(check, server_ssl=server_ctx, ssl_context=client_ctx)


# --- raw-server edge cases ----------------------------------------------------------------


def test_raw_chunked_split_across_writes_with_trailer() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
    pieces = (head + b"4\r\nab", b"cd\r\n", b"A\r\n0123456789\r\n", b"0\r\nX-T: t\r\n\r\n")

    async def check(conn: HttpConnection, srv: RawServer) -> None:
        r1 = await conn.request("GET", "/")
        r2 = await conn.request("GET", "/")
        assert r1.body == b"abcd0123456789" == r2.body
        assert r2.connect_s == 0.0 and srv.connections == 1

    run_on_raw(respond(*pieces, gap=0.01, requests=2), check)


def test_eof_delimited_body_and_http10() -> None:
    eof_body = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-"

    async def eof_check(conn: HttpConnection, srv: RawServer) -> None:
        r = await conn.request("GET", "/")
        assert r.body == b"until-the-end" and r.status == 200
        r = await conn.request("GET", "/")
        assert r.body == b"until-the-end" and r.connect_s > 0
        assert srv.connections == 2

    async def http10_check(conn: HttpConnection, srv: RawServer) -> None:
        r = await conn.request("GET", "/")
        assert r.body == b"ok" and not conn.connected
        r = await conn.request("GET", "/")
        assert r.body == b"ok" and r.connect_s > 0

    async def body() -> None:
        await with_raw(respond(eof_body, b"the-end", gap=0.02), eof_check)
        # the client must close, not wait for the server
        http10 = respond(OK.replace(b"HTTP/1.1", b"HTTP/1.0"), hold=1)
        await with_raw(http10, http10_check)

    run(body())


def test_interim_100_continue_is_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
    final = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-Final: 1\r\n\r\ndone"

    async def check(conn: HttpConnection, srv: RawServer) -> None:
        r = await conn.request("POST", "/", body=b"{}")
        assert r.status == 201 and r.body == b"done"
        assert r.header("x-final") == "1" and r.header("x-interim") is None

    run_on_raw(respond(interim, final, gap=0.01, hold=0.5), check)


def test_server_closing_mid_response_is_an_error() -> None:
    async def reset(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        w.transport.abort()

    handlers = {
        "mid_body": respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"),
        "mid_chunked": respond(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        ),
        "mid_head": respond(b"HTTP/1.1 200 OK\r\nContent-Le"),
        "nothing": respond(),
        "reset": reset,
    }

    async def body() -> None:
        for name, handler in handlers.items():

            async def check(conn: HttpConnection, srv: RawServer, name: str = name) -> None:
                err = await request_error(conn)
                assert err.kind == "closed", (name, err)
                # a fresh connection's request is never retried
                assert srv.connections == 1, name
                assert not conn.connected

            await with_raw(handler, check)

    run(body())


def test_stale_keep_alive_retry_rule() -> None:
    """The server answers one request per connection, then closes the connection as the next
    request arrives without answering (the keep-alive race). GET is retried once on a fresh
    connection; POST is not."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await respond(OK)(r, w)
        await read_request(r)  # the second request on this connection: drop it unanswered

    async def check(conn: HttpConnection, srv: RawServer) -> None:
        assert (await conn.request("GET", "/")).body == b"ok"
        r = await conn.request("GET", "/")  # stale: retried on a new connection
        assert r.body == b"ok" and r.connect_s > 0
        assert srv.connections == 2
        err = await request_error(conn, "POST", "/", body=b"x")  # stale again: no retry
        assert err.kind == "closed"
        assert srv.connections == 2
        r = await conn.request("POST", "/", body=b"x")  # knows it is closed: reconnects
        assert r.body == b"ok" and r.connect_s > 0 and srv.connections == 3

    run_on_raw(handler, check)


def test_idle_connection_closed_by_server_reconnects_without_error() -> None:
    async def check(conn: HttpConnection, srv: RawServer) -> None:
        for _ in range(3):
            r = await conn.request("POST", "/", body=b"x")
            assert r.body == b"ok" and r.connect_s > 0
            await asyncio.sleep(0.1)
            assert not conn.connected
        assert srv.connections == 3

    run_on_raw(respond(OK, hold=0.02), check)  # keep-alive timeout of 20 ms, then close


def test_malformed_and_upgrade_responses_are_protocol_errors() -> None:
    cases = [
        b"HTTZ/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ]

    async def body() -> None:
        for raw in cases:

            async def check(conn: HttpConnection, srv: RawServer, raw: bytes = raw) -> None:
                err = await request_error(conn)
                assert err.kind == "protocol", (raw, err)
                assert not conn.connected

            await with_raw(respond(raw, hold=0.5), check)

    run(body())


def test_request_timeout_drops_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request(r)
            if b"/fast" in head:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast")
                await w.drain()
            else:
                await asyncio.sleep(5)

    async def check(conn: HttpConnection, srv: RawServer) -> None:
        t0 = time.monotonic()
        err = await request_error(conn, "GET", "/hang", timeout=0.2)
        elapsed = time.monotonic() - t0
        assert err.kind == "timeout"
        assert 0.18 < elapsed < 1.0
        assert not conn.connected
        r = await conn.request("GET", "/fast", timeout=2)
        assert r.body == b"fast" and r.connect_s > 0

    run_on_raw(handler, check)


def test_duration_covers_server_time() -> None:
    async def check(conn: HttpConnection, port: int) -> None:
        await conn.request("GET", "/echo")
        r = await conn.request("GET", "/slow?s=0.15")
        assert r.body == b"slow"
        assert 0.14 <= r.duration_s < 1.0  # the server sleeps 0.15 s (ms timers)

    run_on_aiohttp(check)


def test_connect_errors_and_connect_timeout() -> None:
    # a port with no listener: refused
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    # a listener that never accepts, its accept queue filled: further SYNs are dropped
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(blocker.getsockname())
        fillers.append(c)
    time.sleep(0.05)
    blocked_url = f"http://127.0.0.1:{blocker.getsockname()[1]}"

    async def body() -> None:
        conn = HttpConnection(f"http://127.0.0.1:{free_port}")
        assert (await request_error(conn)).kind == "connect"

        conn = HttpConnection(blocked_url, connect_timeout=0.2)
        t0 = time.monotonic()
        err = await request_error(conn, "GET", "/", timeout=5)
        assert err.kind == "connect" and "timed out" in str(err)
        assert time.monotonic() - t0 < 1.5

        conn = HttpConnection(blocked_url, connect_timeout=5)
        assert (await request_error(conn, "GET", "/", timeout=0.2)).kind == "timeout"

        conn = HttpConnection("http://no-such-host.invalid:80")
        assert (await request_error(conn, "GET", "/", timeout=5)).kind == "connect"

    try:
        run(body())
    finally:
        for c in fillers:
            c.close()
        blocker.close()


def test_one_request_at_a_time_and_cancellation() -> None:
    async def check(conn: HttpConnection, port: int) -> None:
        task = asyncio.ensure_future(conn.request("GET", "/slow?s=0.5"))
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError):
            await conn.request("GET", "/echo")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not conn.connected  # state unknown after a cancel: dropped
        r = await conn.request("GET", "/echo")
        assert r.status == 200 and r.connect_s > 0
        conn.close()
        assert not conn.connected
        r = await conn.request("GET", "/echo")  # reopens after close()
        assert r.status == 200 and r.connect_s > 0

    run_on_aiohttp(check)


def test_close_fails_request_in_flight() -> None:
    async def check(conn: HttpConnection, port: int) -> None:
        task = asyncio.ensure_future(conn.request("GET", "/slow?s=0.5"))
        await asyncio.sleep(0.05)
        conn.close()
        with pytest.raises(HttpError) as ei:
            await task
        assert ei.value.kind == "closed"

    run_on_aiohttp(check)


def test_works_on_the_default_asyncio_loop_too() -> None:
    async def check(conn: HttpConnection, port: int) -> None:
        r1 = await conn.request("GET", "/chunked")
        r2 = await conn.request("HEAD", "/big")
        r3 = await conn.request("GET", "/echo")
        assert len(r1.body) == 200_030 and r2.body == b"" and r3.connect_s == 0.0

    run_on_aiohttp(check, loop_run=lambda coro: asyncio.run(asyncio.wait_for(coro, 15)))


def test_bad_base_urls() -> None:
    for url in ("ftp://x", "http://", "127.0.0.1:80", "http://h/p?q=1"):
        with pytest.raises(ValueError):
            HttpConnection(url)
    with pytest.raises(ValueError):
        HttpConnection("http://h", default_headers={"X": "a\nb"})
