"""WebSocket client against real servers on loopback: an aiohttp WebSocket server for the
ordinary paths and a raw asyncio server that writes frames by hand for the edge cases."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import loadgate
from loadgate.engine._proto import _find_c_mask, _mask_int, mask_payload
from loadgate.engine.ws import WebSocket, WsError
from tests.support.aio import run
from tests.support.raw_servers import Handler, RawServer, serve_app, tls_contexts

pytestmark = pytest.mark.timeout(30)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SEEN = web.AppKey("seen", list)
CLOSE_CODES = web.AppKey("close_codes", list)


# --- aiohttp server -----------------------------------------------------------------------


async def echo_ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    request.app[SEEN].append(
        {"auth": request.headers.get("Authorization"), "query": request.query_string}
    )
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            if msg.data == "close-me":
                await ws.close(code=4001, message=b"bye")
                break
            await ws.send_str(msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    request.app[CLOSE_CODES].append(ws.close_code)
    return ws


async def burst_ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    n = int(request.query.get("n", "50"))
    for i in range(n):
        await ws.send_str(f"m{i}")
    if request.query.get("close"):
        await ws.close(code=4001, message=b"bye")
    else:
        async for _ in ws:
            pass
    return ws


async def ping_ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(autoping=False)
    await ws.prepare(request)
    await ws.ping(b"xyz")
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.PONG:
            await ws.send_str("pong:" + msg.data.decode())
        elif msg.type == aiohttp.WSMsgType.CLOSE:
            await ws.close()
    return ws


async def plain(request: web.Request) -> web.Response:
    return web.Response(text="not ws")


async def start_ws_server(ssl_context=None) -> tuple[web.AppRunner, web.Application, int]:
    app = web.Application()
    app[SEEN] = []
    app[CLOSE_CODES] = []
    app.router.add_get("/echo", echo_ws)
    app.router.add_get("/burst", burst_ws)
    app.router.add_get("/ping", ping_ws)
    app.router.add_get("/plain", plain)
    runner, port = await serve_app(app, ssl_context=ssl_context)
    return runner, app, port


async def with_ws_server(
    check: Callable[[str, web.Application], Awaitable[None]],
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Start the aiohttp server and run ``check(base URL, app)`` against it, then clean up."""
    runner, app, port = await start_ws_server(ssl_context)
    try:
        await check(f"{'wss' if ssl_context else 'ws'}://127.0.0.1:{port}", app)
    finally:
        await runner.cleanup()


def run_on_ws_server(
    check: Callable[[str, web.Application], Awaitable[None]],
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    run(with_ws_server(check, ssl_context))


# --- raw server ---------------------------------------------------------------------------


def server_frame(op: int, payload: bytes, fin: bool = True, rsv: int = 0, masked=False) -> bytes:
    b0 = (0x80 if fin else 0) | rsv | op
    n = len(payload)
    if n < 126:
        head = bytes((b0, (0x80 if masked else 0) | n))
    elif n < 65536:
        head = bytes((b0, (0x80 if masked else 0) | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, (0x80 if masked else 0) | 127)) + n.to_bytes(8, "big")
    if masked:
        mask = b"\x01\x02\x03\x04"
        return head + mask + _mask_int(mask, payload)
    return head + payload


async def read_frame(r: asyncio.StreamReader) -> tuple[bool, int, bytes, bytes]:
    """(fin, opcode, unmasked payload, mask) of one client frame."""
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await r.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await r.readexactly(8), "big")
    assert b1 & 0x80, "client frames must be masked"
    mask = await r.readexactly(4)
    data = await r.readexactly(n)
    return bool(b0 & 0x80), b0 & 0x0F, bytes(_mask_int(mask, data)), mask


async def accept(
    r: asyncio.StreamReader, w: asyncio.StreamWriter, *, bad_accept=False, extra_hdr=b"", tail=b""
) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    key = b""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"sec-websocket-key:"):
            key = line.split(b":", 1)[1].strip()
    acc = base64.b64encode(hashlib.sha1(key + (b"x" if bad_accept else GUID)).digest())
    w.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + acc + b"\r\n" + extra_hdr + b"\r\n" + tail
    )
    await w.drain()
    return head


def raw_ws(handler: Handler) -> RawServer:
    """A raw server for ``handler``; its handlers must not fail."""
    return RawServer(handler, scheme="ws", path="/raw", check_errors=True)


def run_on_raw_ws(handler: Handler, check: Callable[[RawServer], Awaitable[None]]) -> None:
    async def body() -> None:
        async with raw_ws(handler) as srv:
            await check(srv)

    run(body())


async def wait_until(done: Callable[[], object], tries: int = 100) -> None:
    """Poll ``done`` every 10 ms, at most ``tries`` times; the caller asserts afterwards."""
    for _ in range(tries):
        if done():
            break
        await asyncio.sleep(0.01)


async def ws_error(aw: Awaitable[object]) -> WsError:
    """The WsError that awaiting ``aw`` raises (it must raise one)."""
    with pytest.raises(WsError) as ei:
        await aw
    return ei.value


# --- tests --------------------------------------------------------------------------------


def test_echo_pull_mode_and_client_close() -> None:
    async def check(base: str, app: web.Application) -> None:
        ws = await WebSocket.connect(f"{base}/echo?room=7", headers={"Authorization": "Bearer t"})
        assert ws.connect_s > 0 and not ws.closed and ws.close_code is None
        ws.send_text("hello")
        ws.send_text(b'{"a":1}')
        ws.send_bytes(b"\x00\x01\xff")
        ws.send_text("üñí")
        assert await ws.recv(timeout=2) == "hello"
        assert await ws.recv(timeout=2) == '{"a":1}'
        got = await ws.recv(timeout=2)
        assert got == b"\x00\x01\xff" and isinstance(got, bytes)
        assert await ws.recv(timeout=2) == "üñí"
        assert app[SEEN] == [{"auth": "Bearer t", "query": "room=7"}]
        await ws.close()
        assert ws.closed and ws.close_code == 1000
        with pytest.raises(WsError) as ei:
            ws.send_text("late")
        assert ei.value.kind == "closed"
        assert (await ws_error(ws.recv(timeout=1))).kind == "closed"
        await wait_until(lambda: app[CLOSE_CODES], tries=50)
        assert app[CLOSE_CODES] == [1000]

    run_on_ws_server(check)


def test_payload_lengths_7_16_64_bit_both_ways() -> None:
    async def check(base: str, app: web.Application) -> None:
        ws = await WebSocket.connect(f"{base}/echo")
        rnd = random.Random(1)
        for n in (0, 1, 125, 126, 127, 65535, 65536, 300_000):
            text = "".join(rnd.choice("abcé€") for _ in range(n))[:n]
            ws.send_text(text)
            assert await ws.recv(timeout=5) == text
            data = rnd.randbytes(n)
            ws.send_bytes(data)
            assert await ws.recv(timeout=5) == data
        await ws.close()

    run_on_ws_server(check)


def test_callback_mode_server_close_no_task() -> None:
    async def check(base: str, app: web.Application) -> None:
        got: list[str | bytes] = []
        closes: list[int | None] = []
        tasks_before = asyncio.all_tasks()
        ws = await WebSocket.connect(
            f"{base}/burst?n=200&close=1", on_message=got.append, on_close=closes.append
        )
        new = asyncio.all_tasks() - tasks_before  # the server's handler task among them
        # no task of the engine's own (the test's and the server's are elsewhere, wherever the
        # checkout lives: its folder may well be named "loadgate")
        engine = str(Path(loadgate.__file__).parent) + os.sep
        assert not [t for t in new if t.get_coro().cr_code.co_filename.startswith(engine)]
        await wait_until(lambda: closes, tries=200)
        assert got == [f"m{i}" for i in range(200)]
        assert closes == [4001]
        assert ws.close_code == 4001 and ws.close_reason == "bye" and ws.closed
        with pytest.raises(RuntimeError):
            await ws.recv()
        await ws.close()  # already closed: no-op
        assert closes == [4001]

    run_on_ws_server(check)


def test_server_ping_is_answered_with_pong() -> None:
    async def check(base: str, app: web.Application) -> None:
        ws = await WebSocket.connect(f"{base}/ping")
        assert await ws.recv(timeout=2) == "pong:xyz"
        await ws.close()
        assert ws.close_code == 1000

    run_on_ws_server(check)


def test_wss_with_self_signed_certificate(tmp_path) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)

    async def check(base: str, app: web.Application) -> None:
        ws = await WebSocket.connect(f"{base}/echo", ssl_context=client_ctx)
        ws.send_text("secure" * 5000)
        assert await ws.recv(timeout=2) == "secure" * 5000
        await ws.close()
        assert ws.close_code == 1000
        err = await ws_error(WebSocket.connect(f"{base}/echo"))  # not trusted
        assert err.kind == "connect"

    run_on_ws_server(check, ssl_context=server_ctx)


def test_frames_sent_with_the_101_arrive_after_connect_returns() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tail = server_frame(0x1, b"first") + server_frame(0x1, b"second")
        await accept(r, w, tail=tail)
        await asyncio.sleep(0.3)

    async def check(srv: RawServer) -> None:
        holder: list[WebSocket] = []
        seen: list[tuple[bool, str | bytes]] = []
        ws = await WebSocket.connect(srv.url, on_message=lambda m: seen.append((bool(holder), m)))
        holder.append(ws)
        assert seen == []
        await asyncio.sleep(0.05)
        assert seen == [(True, "first"), (True, "second")]
        ws2 = await WebSocket.connect(srv.url)  # pull mode
        assert await ws2.recv(timeout=1) == "first"
        assert await ws2.recv(timeout=1) == "second"

    run_on_raw_ws(handler, check)


def test_fragmentation_with_interleaved_ping() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> object:
        await accept(r, w)
        w.write(server_frame(0x1, "hé".encode()[:2], fin=False))  # splits the é
        w.write(server_frame(0x9, b"p1"))
        await w.drain()
        await asyncio.sleep(0.01)
        w.write(server_frame(0x0, "é".encode()[1:] + b"llo", fin=False))
        w.write(server_frame(0x0, b" world", fin=True))
        w.write(server_frame(0x2, b"\x00\x01", fin=False))
        w.write(server_frame(0x0, b"\x02", fin=True))
        # one frame fed in 1-byte pieces
        for byte in server_frame(0x1, b"x" * 300):
            w.write(bytes([byte]))
            await w.drain()
        fin, op, payload, _ = await read_frame(r)
        return fin, op, payload

    async def check(srv: RawServer) -> None:
        ws = await WebSocket.connect(srv.url)
        assert await ws.recv(timeout=2) == "héllo world"
        assert await ws.recv(timeout=2) == b"\x00\x01\x02"
        assert await ws.recv(timeout=2) == "x" * 300
        await wait_until(lambda: srv.result is not None)
        assert srv.result == (True, 0xA, b"p1")  # the automatic pong

    run_on_raw_ws(handler, check)


def test_client_frames_are_masked_with_fresh_keys() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> object:
        head = await accept(r, w)
        assert b"Sec-WebSocket-Version: 13" in head
        assert b"Upgrade: websocket" in head and b"Connection: Upgrade" in head
        frames = [await read_frame(r) for _ in range(4)]
        return frames

    async def check(srv: RawServer) -> None:
        ws = await WebSocket.connect(srv.url)
        ws.send_text("abc")
        ws.send_text("abc")
        ws.send_bytes(b"\x00" * 70_000)
        ws.ping(b"pp")
        await wait_until(lambda: srv.result is not None)
        frames = srv.result
        assert [(f[0], f[1], f[2]) for f in frames] == [
            (True, 0x1, b"abc"),
            (True, 0x1, b"abc"),
            (True, 0x2, b"\x00" * 70_000),
            (True, 0x9, b"pp"),
        ]
        assert len({f[3] for f in frames}) == 4  # a fresh masking key per frame

    run_on_raw_ws(handler, check)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([server_frame(0x1, b"hi", masked=True)], 1002),
        ([server_frame(0x1, b"hi", rsv=0x40)], 1002),
        ([server_frame(0x1, b"\xff\xfe")], 1007),
        ([server_frame(0x0, b"orphan")], 1002),
        ([server_frame(0x9, b"p", fin=False)], 1002),
        ([server_frame(0x3, b"")], 1002),
        ([server_frame(0x1, b"a", fin=False), server_frame(0x1, b"b")], 1002),
        ([server_frame(0x2, b"z" * 2000)], 1009),
        ([server_frame(0x2, b"z" * 600, fin=False), server_frame(0x0, b"z" * 600)], 1009),
        ([server_frame(0x8, b"\x03")], 1002),
        ([server_frame(0x8, (999).to_bytes(2, "big"))], 1002),
    ],
)
def test_protocol_violations_close_with_the_right_code(frames: list[bytes], code: int) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> object:
        await accept(r, w)
        await asyncio.sleep(0.02)
        for f in frames:
            w.write(f)
        await w.drain()
        _fin, op, payload, _ = await read_frame(r)
        return op, int.from_bytes(payload[:2], "big")

    async def check(srv: RawServer) -> None:
        closes: list[int | None] = []
        ws = await WebSocket.connect(srv.url, max_size=1000, on_close=closes.append)
        await wait_until(lambda: closes and srv.result is not None)
        assert closes == [code]
        assert ws.close_code == code and ws.closed
        assert ws.error is not None and ws.error.kind == "protocol"
        assert srv.result == (0x8, code)  # we told the server why

    run_on_raw_ws(handler, check)


def test_abrupt_close_is_1006() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accept(r, w)
        w.write(server_frame(0x1, b"last words"))
        await w.drain()
        await asyncio.sleep(0.05)
        w.transport.abort()

    async def check(srv: RawServer) -> None:
        closes: list[int | None] = []
        ws = await WebSocket.connect(srv.url, on_close=closes.append)
        ws2 = await WebSocket.connect(srv.url)
        await wait_until(lambda: closes and ws2.closed)
        assert closes == [1006] and ws.close_code == 1006
        assert await ws2.recv(timeout=1) == "last words"  # queued before the drop
        assert (await ws_error(ws2.recv(timeout=1))).kind == "closed"
        with pytest.raises(WsError):
            ws.send_text("x")

    run_on_raw_ws(handler, check)


def test_abort_is_a_hard_stop() -> None:
    async def check(base: str, app: web.Application) -> None:
        closes: list[int | None] = []
        ws = await WebSocket.connect(f"{base}/echo", on_close=closes.append)
        ws.abort()
        assert ws.closed and ws.close_code == 1006 and closes == [1006]
        with pytest.raises(WsError):
            ws.send_text("x")
        ws.abort()  # idempotent
        await ws.close()  # no-op once closed
        assert closes == [1006]
        # the server saw the connection go, without a close frame
        await wait_until(lambda: app[CLOSE_CODES])
        assert app[CLOSE_CODES] and app[CLOSE_CODES][0] != 1000

    run_on_ws_server(check)


def test_handshake_failures() -> None:
    def accept_then_wait(**accept_kw: bytes | bool) -> Handler:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await accept(r, w, **accept_kw)  # type: ignore[arg-type]
            await asyncio.sleep(0.5)

        return handler

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        await asyncio.sleep(2)

    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"SSH-2.0-nope\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.5)

    handlers = {
        "bad_accept": accept_then_wait(bad_accept=True),
        "extension": accept_then_wait(
            extra_hdr=b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
        ),
        "garbage": garbage,
    }

    async def http_statuses(base: str, app: web.Application) -> None:
        err = await ws_error(WebSocket.connect(f"{base}/nope"))
        assert err.kind == "handshake" and err.status == 404
        err = await ws_error(WebSocket.connect(f"{base}/plain"))
        assert err.kind == "handshake" and err.status == 200

    async def body() -> None:
        await with_ws_server(http_statuses)
        for name, handler in handlers.items():
            async with raw_ws(handler) as srv:
                assert (await ws_error(WebSocket.connect(srv.url))).kind == "handshake", name
        async with raw_ws(silent) as srv:
            t0 = time.monotonic()
            err = await ws_error(WebSocket.connect(srv.url, timeout=0.2))
            assert err.kind == "timeout" and time.monotonic() - t0 < 1.5
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        assert (await ws_error(WebSocket.connect(f"ws://127.0.0.1:{free}/"))).kind == "connect"
        with pytest.raises(ValueError):
            await WebSocket.connect("http://127.0.0.1/")

    run(body())


def test_recv_timeout_keeps_the_connection() -> None:
    async def check(base: str, app: web.Application) -> None:
        ws = await WebSocket.connect(f"{base}/echo")
        err = await ws_error(ws.recv(timeout=0.1))
        assert err.kind == "timeout" and not ws.closed
        ws.send_text("still here")
        assert await ws.recv(timeout=2) == "still here"
        ws.send_text("close-me")
        err = await ws_error(ws.recv(timeout=2))
        assert err.kind == "closed" and ws.close_code == 4001

    run_on_ws_server(check)


def test_close_times_out_when_the_peer_never_answers() -> None:
    frames: list[tuple[bool, int, bytes, bytes]] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accept(r, w)
        frames.append(await read_frame(r))
        await asyncio.sleep(1)

    async def check(srv: RawServer) -> None:
        ws = await WebSocket.connect(srv.url)
        t0 = time.monotonic()
        await ws.close(4000, "done", timeout=0.2)
        assert 0.15 < time.monotonic() - t0 < 1.0
        assert ws.close_code == 1006 and ws.closed

    run_on_raw_ws(handler, check)
    assert len(frames) == 1
    fin, op, payload, _ = frames[0]
    assert fin and op == 0x8 and payload == (4000).to_bytes(2, "big") + b"done"


def test_pull_mode_back_pressure_keeps_order() -> None:
    async def check(base: str, app: web.Application) -> None:
        for max_queue in (1, 4):
            ws = await WebSocket.connect(f"{base}/burst?n=500", max_queue=max_queue)
            await asyncio.sleep(0.1)
            got = [await ws.recv(timeout=2) for _ in range(500)]
            assert got == [f"m{i}" for i in range(500)]
            await ws.close()

    run_on_ws_server(check)


def test_mask_implementations_agree() -> None:
    # aiohttp is imported by this module, so its C masking is found (whichever way the
    # process imported loadgate first, mask_payload is one of the two)
    c_mask = _find_c_mask()
    assert c_mask is not None
    rnd = random.Random(7)
    for n in [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 125, 126, 1000, 65537]:
        data = rnd.randbytes(n)
        mask = os.urandom(4)
        expected = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        assert _mask_int(mask, data) == expected
        assert bytes(mask_payload(mask, data)) == expected
        buf = bytearray(data)
        c_mask(mask, buf)
        assert bytes(buf) == expected
