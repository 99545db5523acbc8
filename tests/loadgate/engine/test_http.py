"""HttpConnection against real servers on loopback: aiohttp for the ordinary paths, raw asyncio
servers for the edge cases (chunked, EOF-delimited, interim 1xx, abrupt closes, timeouts,
malformed responses), and a TLS server with a certificate made here."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

import orjson
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loadgate.engine.http import HttpConnection, HttpError, Response
from tests.support.aio import run

pytestmark = pytest.mark.timeout(30)


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


async def start_aiohttp(host: str = "127.0.0.1", ssl_context=None) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_route("*", "/echo", echo_handler)
    app.router.add_route("*", "/api/echo", echo_handler)
    app.router.add_get("/big", big_handler)
    app.router.add_get("/chunked", chunked_handler)
    app.router.add_get("/status/{code}", status_handler)
    app.router.add_get("/slow", slow_handler)
    app.router.add_get("/close", close_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A scripted HTTP server: ``handler`` gets each connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        async def wrapped(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(r, w)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                w.close()

        self.server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


async def read_request(r: asyncio.StreamReader) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await r.readexactly(int(line.split(b":")[1]))
    return head


# --- TLS ----------------------------------------------------------------------------------


def make_cert(tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


# --- ordinary paths -----------------------------------------------------------------------


def test_keep_alive_reuses_one_connection_and_times_it() -> None:
    async def body() -> None:
        runner, port = await start_aiohttp()
        conn = HttpConnection(f"http://127.0.0.1:{port}")
        try:
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
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


def test_bodies_headers_and_prefix() -> None:
    async def body() -> None:
        runner, port = await start_aiohttp()
        conn = HttpConnection(f"http://127.0.0.1:{port}/api/", default_headers={"X-Tenant": "t1"})
        try:
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
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


def test_set_header_is_per_connection() -> None:
    """Connections to one base URL share the parsed URL and encoded defaults; set_header must
    copy, not change them for the other VUs."""

    async def body() -> None:
        runner, port = await start_aiohttp()
        base = f"http://127.0.0.1:{port}"
        a = HttpConnection(base, default_headers={"X-App": "1"})
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
            a.close()
            b.close()
            await runner.cleanup()

    run(body())


def test_stray_bytes_after_a_response_drop_the_connection() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE")
        await w.drain()
        await asyncio.sleep(0.5)

    async def body() -> None:
        async with RawServer(handler) as srv:
            conn = HttpConnection(srv.url)
            r = await conn.request("GET", "/")
            assert r.body == b"ok"
            await asyncio.sleep(0.05)
            assert not conn.connected  # the garbage was not taken as the next response
            r = await conn.request("GET", "/")
            assert r.body == b"ok" and r.connect_s > 0 and srv.connections == 2
            conn.close()

    run(body())


def test_statuses_without_body_and_errors_as_responses() -> None:
    async def body() -> None:
        runner, port = await start_aiohttp()
        conn = HttpConnection(f"http://127.0.0.1:{port}")
        try:
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
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


def test_chunked_response_from_aiohttp() -> None:
    async def body() -> None:
        runner, port = await start_aiohttp()
        conn = HttpConnection(f"http://127.0.0.1:{port}")
        try:
            r = await conn.request("GET", "/chunked")
            assert r.header("transfer-encoding") == "chunked"
            assert r.body == b"part0;part1;part2;part3;part4;" + b"y" * 200_000
            r = await conn.request("GET", "/echo")
            assert r.status == 200 and r.connect_s == 0.0
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


def test_connection_close_header_reconnects() -> None:
    async def body() -> None:
        runner, port = await start_aiohttp()
        conn = HttpConnection(f"http://127.0.0.1:{port}")
        try:
            r = await conn.request("GET", "/close")
            assert r.body == b"bye" and not conn.connected
            r = await conn.request("GET", "/echo")
            assert r.status == 200 and r.connect_s > 0
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def body() -> None:
        runner, port = await start_aiohttp("::1")
        conn = HttpConnection(f"http://[::1]:{port}")
        try:
            r = await conn.request("GET", "/echo")
            assert r.status == 200
            assert r.json()["headers"]["host"] == f"[::1]:{port}"
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


def test_localhost_name_resolves() -> None:
    async def body() -> None:
        runner, port = await start_aiohttp()
        conn = HttpConnection(f"http://localhost:{port}")
        try:
            try:
                r = await conn.request("GET", "/echo")
            except HttpError as exc:  # localhost may resolve to ::1 first and not be served
                assert exc.kind == "connect"
            else:
                assert r.json()["headers"]["host"] == f"localhost:{port}"
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


def test_tls_with_self_signed_certificate(tmp_path) -> None:
    cert, key = make_cert(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)

    async def body() -> None:
        runner, port = await start_aiohttp(ssl_context=server_ctx)
        conn = HttpConnection(f"https://127.0.0.1:{port}", ssl_context=client_ctx)
        strict = HttpConnection(f"https://127.0.0.1:{port}")  # default context: not trusted
        try:
            r1 = await conn.request("GET", "/echo")
            r2 = await conn.request("GET", "/chunked")
            assert r1.status == 200 and r1.connect_s > 0
            assert r2.connect_s == 0.0 and r2.body.startswith(b"part0;")
            assert len(r2.body) == 30 + 200_000
            with pytest.raises(HttpError) as ei:
                await strict.request("GET", "/echo")
            assert ei.value.kind == "connect"
            assert "certificate" in str(ei.value).lower()
        finally:
            conn.close()
            strict.close()
            await runner.cleanup()

    run(body())


# --- raw-server edge cases ----------------------------------------------------------------


def test_raw_chunked_split_across_writes_with_trailer() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n")
            for piece in (b"4\r\nab", b"cd\r\n", b"A\r\n0123456789\r\n", b"0\r\nX-T: t\r\n\r\n"):
                w.write(piece)
                await w.drain()
                await asyncio.sleep(0.01)

    async def body() -> None:
        async with RawServer(handler) as srv:
            conn = HttpConnection(srv.url)
            r1 = await conn.request("GET", "/")
            r2 = await conn.request("GET", "/")
            conn.close()
        assert r1.body == b"abcd0123456789" == r2.body
        assert r2.connect_s == 0.0 and srv.connections == 1

    run(body())


def test_eof_delimited_body_and_http10() -> None:
    async def eof_handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-")
        await w.drain()
        await asyncio.sleep(0.02)
        w.write(b"the-end")
        await w.drain()

    async def http10_handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        await asyncio.sleep(1)  # the client must close, not wait for us

    async def body() -> None:
        async with RawServer(eof_handler) as srv:
            conn = HttpConnection(srv.url)
            r = await conn.request("GET", "/")
            assert r.body == b"until-the-end" and r.status == 200
            r = await conn.request("GET", "/")
            assert r.body == b"until-the-end" and r.connect_s > 0
            conn.close()
            assert srv.connections == 2
        async with RawServer(http10_handler) as srv:
            conn = HttpConnection(srv.url)
            r = await conn.request("GET", "/")
            assert r.body == b"ok" and not conn.connected
            r = await conn.request("GET", "/")
            assert r.body == b"ok" and r.connect_s > 0
            conn.close()

    run(body())


def test_interim_100_continue_is_skipped() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.01)
        w.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-Final: 1\r\n\r\ndone")
        await w.drain()
        await asyncio.sleep(0.5)

    async def body() -> None:
        async with RawServer(handler) as srv:
            conn = HttpConnection(srv.url)
            r = await conn.request("POST", "/", body=b"{}")
            conn.close()
        assert r.status == 201 and r.body == b"done"
        assert r.header("x-final") == "1" and r.header("x-interim") is None

    run(body())


def test_server_closing_mid_response_is_an_error() -> None:
    async def mid_body(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await w.drain()

    async def mid_chunked(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await w.drain()

    async def mid_head(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await w.drain()

    async def nothing(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)

    async def reset(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        w.transport.abort()

    async def body() -> None:
        for handler in (mid_body, mid_chunked, mid_head, nothing, reset):
            async with RawServer(handler) as srv:
                conn = HttpConnection(srv.url)
                with pytest.raises(HttpError) as ei:
                    await conn.request("GET", "/")
                assert ei.value.kind == "closed", (handler.__name__, ei.value)
                # a fresh connection's request is never retried
                assert srv.connections == 1, handler.__name__
                assert not conn.connected
                conn.close()

    run(body())


def test_stale_keep_alive_retry_rule() -> None:
    """The server answers one request per connection, then closes the connection as the next
    request arrives without answering (the keep-alive race). GET is retried once on a fresh
    connection; POST is not."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        await read_request(r)  # the second request on this connection: drop it unanswered

    async def body() -> None:
        async with RawServer(handler) as srv:
            conn = HttpConnection(srv.url)
            assert (await conn.request("GET", "/")).body == b"ok"
            r = await conn.request("GET", "/")  # stale: retried on a new connection
            assert r.body == b"ok" and r.connect_s > 0
            assert srv.connections == 2
            with pytest.raises(HttpError) as ei:
                await conn.request("POST", "/", body=b"x")  # stale again: no retry
            assert ei.value.kind == "closed"
            assert srv.connections == 2
            r = await conn.request("POST", "/", body=b"x")  # knows it is closed: reconnects
            assert r.body == b"ok" and r.connect_s > 0 and srv.connections == 3
            conn.close()

    run(body())


def test_idle_connection_closed_by_server_reconnects_without_error() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        await asyncio.sleep(0.02)  # keep-alive timeout of 20 ms, then close

    async def body() -> None:
        async with RawServer(handler) as srv:
            conn = HttpConnection(srv.url)
            for _ in range(3):
                r = await conn.request("POST", "/", body=b"x")
                assert r.body == b"ok" and r.connect_s > 0
                await asyncio.sleep(0.1)
                assert not conn.connected
            conn.close()
            assert srv.connections == 3

    run(body())


def test_malformed_and_upgrade_responses_are_protocol_errors() -> None:
    def responder(raw: bytes):
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(raw)
            await w.drain()
            await asyncio.sleep(0.5)

        return handler

    cases = [
        b"HTTZ/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ]

    async def body() -> None:
        for raw in cases:
            async with RawServer(responder(raw)) as srv:
                conn = HttpConnection(srv.url)
                with pytest.raises(HttpError) as ei:
                    await conn.request("GET", "/")
                assert ei.value.kind == "protocol", (raw, ei.value)
                assert not conn.connected
                conn.close()

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

    async def body() -> None:
        async with RawServer(handler) as srv:
            conn = HttpConnection(srv.url)
            t0 = time.monotonic()
            with pytest.raises(HttpError) as ei:
                await conn.request("GET", "/hang", timeout=0.2)
            elapsed = time.monotonic() - t0
            assert ei.value.kind == "timeout"
            assert 0.18 < elapsed < 1.0
            assert not conn.connected
            r = await conn.request("GET", "/fast", timeout=2)
            assert r.body == b"fast" and r.connect_s > 0
            conn.close()

    run(body())


def test_duration_covers_server_time() -> None:
    async def body() -> None:
        runner, port = await start_aiohttp()
        conn = HttpConnection(f"http://127.0.0.1:{port}")
        try:
            await conn.request("GET", "/echo")
            r = await conn.request("GET", "/slow?s=0.15")
            assert r.body == b"slow"
            assert 0.14 <= r.duration_s < 1.0  # the server sleeps 0.15 s (ms timers)
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


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
        with pytest.raises(HttpError) as ei:
            await conn.request("GET", "/")
        assert ei.value.kind == "connect"

        conn = HttpConnection(blocked_url, connect_timeout=0.2)
        t0 = time.monotonic()
        with pytest.raises(HttpError) as ei:
            await conn.request("GET", "/", timeout=5)
        assert ei.value.kind == "connect" and "timed out" in str(ei.value)
        assert time.monotonic() - t0 < 1.5

        conn = HttpConnection(blocked_url, connect_timeout=5)
        with pytest.raises(HttpError) as ei:
            await conn.request("GET", "/", timeout=0.2)
        assert ei.value.kind == "timeout"

        conn = HttpConnection("http://no-such-host.invalid:80")
        with pytest.raises(HttpError) as ei:
            await conn.request("GET", "/", timeout=5)
        assert ei.value.kind == "connect"

    try:
        run(body())
    finally:
        for c in fillers:
            c.close()
        blocker.close()


def test_one_request_at_a_time_and_cancellation() -> None:
    async def body() -> None:
        runner, port = await start_aiohttp()
        conn = HttpConnection(f"http://127.0.0.1:{port}")
        try:
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
        finally:
            conn.close()
            await runner.cleanup()

    run(body())


def test_close_fails_request_in_flight() -> None:
    async def body() -> None:
        runner, port = await start_aiohttp()
        conn = HttpConnection(f"http://127.0.0.1:{port}")
        try:
            task = asyncio.ensure_future(conn.request("GET", "/slow?s=0.5"))
            await asyncio.sleep(0.05)
            conn.close()
            with pytest.raises(HttpError) as ei:
                await task
            assert ei.value.kind == "closed"
        finally:
            await runner.cleanup()

    run(body())


def test_works_on_the_default_asyncio_loop_too() -> None:
    async def body() -> None:
        runner, port = await start_aiohttp()
        conn = HttpConnection(f"http://127.0.0.1:{port}")
        try:
            r1 = await conn.request("GET", "/chunked")
            r2 = await conn.request("HEAD", "/big")
            r3 = await conn.request("GET", "/echo")
            assert len(r1.body) == 200_030 and r2.body == b"" and r3.connect_s == 0.0
        finally:
            conn.close()
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(body(), 15))


def test_bad_base_urls() -> None:
    for url in ("ftp://x", "http://", "127.0.0.1:80", "http://h/p?q=1"):
        with pytest.raises(ValueError):
            HttpConnection(url)
    with pytest.raises(ValueError):
        HttpConnection("http://h", default_headers={"X": "a\nb"})
