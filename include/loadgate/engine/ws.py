"""A lean RFC 6455 WebSocket client for the load engine.

:class:`WebSocket` is itself the ``asyncio.Protocol`` of its connection (one object per
connection, slotted): frames are parsed straight from the bytes the loop hands over, with no
read buffer of its own except for the tail of a frame split across reads. Sending is
synchronous: :meth:`WebSocket.send_text` masks and writes the frame at once, so a timestamp
taken just before it is the time the message went out (no batching).

Two ways to receive:

- callback mode, ``on_message=`` given: each complete message (``str`` for text, ``bytes`` for
  binary) is passed to the callback from the loop, synchronously, in order. No task is created
  per connection; this is the mode for 10,000 connections.
- pull mode, no callback: messages are queued and :meth:`WebSocket.recv` returns them. Past
  ``max_queue`` unread messages the client stops reading from the socket (TCP back-pressure)
  until the queue drains.

Protocol handling: the opening handshake (``Sec-WebSocket-Key`` / ``Sec-WebSocket-Accept``
checked, no extension accepted, so no per-message compression), masked client frames, text and
binary messages, fragmented messages (continuation frames) reassembled, 7/16/64-bit payload
lengths, a ping answered with a pong carrying its payload automatically, the closing handshake
in both directions, UTF-8 validation of text messages, and a ``max_size`` on messages.

Close codes: ``close_code`` is ``None`` while the connection is open; then the code of the
peer's close frame (1005 when that frame had no code), or, when we closed first, the code the
peer echoed; 1006 when the connection ended without a close frame (dropped, reset, or our
close timed out); 1002, 1007 or 1009 when we closed it because the peer broke the protocol, sent
invalid UTF-8 or a message over ``max_size``. ``on_close(code)`` is called once with it.

Errors are :class:`WsError` with ``kind``: ``"connect"`` (TCP/TLS connect failed),
``"handshake"`` (the server did not accept the upgrade; ``status`` holds its HTTP status),
``"timeout"``, ``"closed"`` (the connection is closed), ``"protocol"`` (the peer broke RFC 6455).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import os
import random
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from loadgate.engine._proto import default_ssl_context, mask_payload, open_connection

__all__ = ["WebSocket", "WsError"]

_perf = time.perf_counter
_getrandbits = random.getrandbits

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 16384

_CONNECTING, _HOLD, _OPEN, _CLOSING, _CLOSED = range(5)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_VALID_CLOSE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


class WsError(Exception):
    """A WebSocket failure; ``kind`` is ``"connect"``, ``"handshake"``, ``"timeout"``,
    ``"closed"`` or ``"protocol"``. ``status`` is the HTTP status of a refused handshake."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    def __repr__(self) -> str:
        return f"WsError({self.kind!r}, {self.args[0]!r})"


_targets: dict[str, tuple[bool, str, int, str, str]] = {}


def _target(url: str) -> tuple[bool, str, int, str, str]:
    """(secure, host, port, Host header, resource) of a ws(s):// URL; parsed once per URL (a
    ramp opens 10,000 connections to the same one)."""
    hit = _targets.get(url)
    if hit is not None:
        return hit
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"url must be ws(s)://host[:port][/path], got {url!r}")
    host = parts.hostname
    default_port = 443 if scheme == "wss" else 80
    port = parts.port or default_port
    hostport = f"[{host}]" if ":" in host else host
    if port != default_port:
        hostport = f"{hostport}:{port}"
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    if len(_targets) > 256:
        _targets.clear()
    target = _targets[url] = (scheme == "wss", host, port, hostport, resource)
    return target


def _frame(first: int, payload: bytes | bytearray) -> bytes:
    """A masked client frame: ``first`` is FIN|opcode."""
    n = len(payload)
    mask = _getrandbits(32).to_bytes(4, "big")
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0xFF)) + n.to_bytes(8, "big")
    if n:
        return head + mask + mask_payload(mask, payload)
    return head + mask


class WebSocket(asyncio.Protocol):
    """One client WebSocket connection; open it with :meth:`connect`.

    Attributes: ``url``; ``connect_s`` (TCP + TLS + upgrade handshake, seconds); ``closed``;
    ``close_code`` and ``close_reason`` (see the module docstring); ``subprotocol`` (the one the
    server chose, or ``None``); ``error`` (the :class:`WsError` that ended it, if any).
    """

    __slots__ = (
        "_buf",
        "_close_fut",
        "_frag",
        "_frag_op",
        "_frag_size",
        "_hs_fut",
        "_key",
        "_max_queue",
        "_max_size",
        "_need",
        "_on_close",
        "_on_message",
        "_paused",
        "_queue",
        "_state",
        "_transport",
        "_waiter",
        "close_code",
        "close_reason",
        "connect_s",
        "error",
        "subprotocol",
        "url",
    )

    def __init__(
        self,
        url: str,
        on_message: Callable[[str | bytes], None] | None,
        on_close: Callable[[int | None], None] | None,
        max_size: int,
        max_queue: int,
    ) -> None:
        self.url = url
        self._on_message = on_message
        self._on_close = on_close
        self._max_size = max_size
        self._max_queue = max_queue
        self._state = _CONNECTING
        self._transport: asyncio.Transport | None = None
        self._buf: bytearray | None = None
        self._need = 0
        self._frag: list[bytes] | None = None
        self._frag_op = 0
        self._frag_size = 0
        self._queue: collections.deque[str | bytes] | None = None
        self._waiter: asyncio.Future[str | bytes] | None = None
        self._close_fut: asyncio.Future[None] | None = None
        self._hs_fut: asyncio.Future[None] | None = None
        self._key = b""
        self._paused = False
        self.connect_s = 0.0
        self.close_code: int | None = None
        self.close_reason = ""
        self.subprotocol: str | None = None
        self.error: WsError | None = None

    # --- opening ------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        on_message: Callable[[str | bytes], None] | None = None,
        on_close: Callable[[int | None], None] | None = None,
        subprotocols: Sequence[str] | None = None,
        max_size: int = 16 * 1024 * 1024,
        max_queue: int = 1024,
    ) -> WebSocket:
        """Open ``url`` (``ws://`` or ``wss://``) and complete the upgrade handshake.

        ``timeout`` bounds connect, TLS and handshake together. ``headers`` are added to the
        upgrade request (e.g. ``Authorization``). Raises :class:`WsError` (``"connect"``,
        ``"handshake"``, ``"timeout"``).
        """
        secure, host, port, hostport, resource = _target(url)
        ctx = (ssl_context or default_ssl_context()) if secure else None
        key = base64.b64encode(os.urandom(16))
        lines = [
            f"GET {resource} HTTP/1.1",
            f"Host: {hostport}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key.decode('ascii')}",
            "Sec-WebSocket-Version: 13",
        ]
        if subprotocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
        names = set()
        for name, value in (headers or {}).items():
            value = str(value)
            if not name or any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
                raise ValueError(f"invalid header {name!r}: {value!r}")
            names.add(name.lower())
            lines.append(f"{name}: {value}")
        if "user-agent" not in names:
            lines.append("User-Agent: loadgate/0.1")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

        loop = asyncio.get_running_loop()
        ws = cls(url, on_message, on_close, max_size, max_queue)
        ws._key = key
        ws._hs_fut = loop.create_future()
        t0 = _perf()
        try:
            async with asyncio.timeout(timeout):
                try:
                    await open_connection(loop, lambda: ws, host, port, ctx)
                except (OSError, ssl.CertificateError) as exc:
                    raise WsError("connect", f"connect to {host}:{port}: {exc}") from exc
                ws._transport.write(request)  # type: ignore[union-attr]  # connected: set in connection_made
                await ws._hs_fut
        except TimeoutError:
            ws._abort()
            raise WsError("timeout", f"opening {url} timed out after {timeout:.3g}s") from None
        except BaseException:
            ws._abort()
            raise
        ws._hs_fut = None
        ws.connect_s = _perf() - t0
        offered = [p.strip() for p in subprotocols or ()]
        if ws.subprotocol is not None and ws.subprotocol not in offered:
            ws._abort()
            raise WsError("handshake", f"server chose a subprotocol not offered: {ws.subprotocol}")
        # Frames that came with the 101 (or after it) are parsed on the next loop turn, once
        # the caller holds this object: callbacks never run before connect() returned.
        loop.call_soon(ws._release)
        return ws

    def _release(self) -> None:
        """Leave _HOLD: parse what arrived after the 101 (called soon after connect returns)."""
        if self._state != _HOLD:
            return
        self._state = _OPEN
        buf = self._buf
        self._buf = None
        self._need = 0
        if buf:
            self._parse(bytes(buf))

    def _handshake(self, data: bytes) -> None:
        buf = self._buf
        if buf is None:
            buf = self._buf = bytearray()
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                self._hs_fail(WsError("handshake", "handshake response head too large"))
            return
        head = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 4]
        lines = head.split("\r\n")
        status_line = lines[0].split(" ", 2)
        try:
            status = int(status_line[1])
            if not status_line[0].startswith("HTTP/1."):
                raise ValueError
        except (IndexError, ValueError):
            self._hs_fail(WsError("handshake", f"malformed status line {lines[0][:80]!r}"))
            return
        hdrs: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self._hs_fail(WsError("handshake", f"malformed header line {line[:80]!r}"))
                return
            name = name.strip().lower()
            value = value.strip()
            hdrs[name] = f"{hdrs[name]}, {value}" if name in hdrs else value
        if status != 101:
            self._hs_fail(
                WsError("handshake", f"server answered {status} instead of 101", status=status)
            )
            return
        accept = base64.b64encode(hashlib.sha1(self._key + _GUID).digest()).decode("ascii")
        problem = None
        if hdrs.get("upgrade", "").lower() != "websocket":
            problem = "missing 'Upgrade: websocket'"
        elif "upgrade" not in [t.strip() for t in hdrs.get("connection", "").lower().split(",")]:
            problem = "missing 'Connection: Upgrade'"
        elif hdrs.get("sec-websocket-accept") != accept:
            problem = "wrong Sec-WebSocket-Accept"
        elif hdrs.get("sec-websocket-extensions"):
            problem = f"extension not requested: {hdrs['sec-websocket-extensions']}"
        if problem:
            self._hs_fail(WsError("handshake", problem, status=status))
            return
        self.subprotocol = hdrs.get("sec-websocket-protocol")
        self._state = _HOLD
        if not buf:
            self._buf = None
        fut = self._hs_fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _hs_fail(self, err: WsError) -> None:
        self.error = err
        fut = self._hs_fut
        if fut is not None and not fut.done():
            fut.set_exception(err)
        self._abort()

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # asyncio passes the base class; ours is a Transport

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state in (_OPEN, _CLOSING):
            buf = self._buf
            if buf is not None:
                buf += data
                if len(buf) < self._need:
                    return
                self._buf = None
                data = bytes(buf)
            self._parse(data)
        elif state == _HOLD:
            if self._buf is None:
                self._buf = bytearray(data)
            else:
                self._buf += data
        elif state == _CONNECTING:
            self._handshake(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == _CONNECTING:
            self._hs_fail(WsError("handshake", f"connection closed during the handshake ({exc})"))
        self._finish(1006, "", None)

    # --- frames in ----------------------------------------------------------------------

    def _parse(self, data: bytes) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            if n - pos < 2:
                self._keep(data, pos, 2)
                return
            b0 = data[pos]
            b1 = data[pos + 1]
            length = b1 & 0x7F
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    self._keep(data, pos, 4)
                    return
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                hdr = 4
            elif length == 127:
                if n - pos < 10:
                    self._keep(data, pos, 10)
                    return
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hdr = 10
            if b1 & 0x80:
                self._fail(1002, "masked frame from the server")
                return
            if length > self._max_size:
                self._fail(1009, f"frame of {length} bytes exceeds max_size")
                return
            end = pos + hdr + length
            if end > n:
                self._keep(data, pos, hdr + length)
                return
            payload = data[pos + hdr : end]
            pos = end
            if b0 == 0x81 and self._frag is None:  # fast path: a whole text message
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    self._fail(1007, "invalid UTF-8 in a text message")
                    return
                self._deliver(text)
            else:
                self._frame(b0, payload)
            if self._state == _CLOSED:
                return

    def _keep(self, data: bytes, pos: int, need: int) -> None:
        self._buf = bytearray(data[pos:])
        self._need = need

    def _frame(self, b0: int, payload: bytes) -> None:
        if b0 & 0x70:
            self._fail(1002, "reserved bits set (no extension was negotiated)")
            return
        fin = b0 & 0x80
        op = b0 & 0x0F
        if op in (OP_TEXT, OP_BINARY):
            if self._frag is not None:
                self._fail(1002, "new data frame inside a fragmented message")
                return
            if fin:
                self._message(op, payload)
            else:
                self._frag = [payload]
                self._frag_op = op
                self._frag_size = len(payload)
        elif op == OP_CONT:
            frag = self._frag
            if frag is None:
                self._fail(1002, "continuation frame without a message to continue")
                return
            frag.append(payload)
            self._frag_size += len(payload)
            if self._frag_size > self._max_size:
                self._fail(1009, "message exceeds max_size")
                return
            if fin:
                self._frag = None
                self._message(self._frag_op, b"".join(frag))
        elif op >= 0x8:
            if not fin or len(payload) > 125:
                self._fail(1002, "fragmented or oversized control frame")
                return
            if op == OP_PING:
                if self._state == _OPEN:
                    self._transport.write(_frame(0x80 | OP_PONG, payload))  # type: ignore[union-attr]  # connected: set in connection_made
            elif op == OP_CLOSE:
                self._on_close_frame(payload)
            elif op != OP_PONG:
                self._fail(1002, f"unknown control opcode {op:#x}")
        else:
            self._fail(1002, f"unknown opcode {op:#x}")

    def _message(self, op: int, payload: bytes) -> None:
        if op == OP_TEXT:
            try:
                self._deliver(payload.decode("utf-8"))
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in a text message")
        else:
            self._deliver(payload)

    def _deliver(self, msg: str | bytes) -> None:
        cb = self._on_message
        if cb is not None:
            try:
                cb(msg)
            except Exception as exc:  # a scenario bug must not kill the connection's parser
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "WebSocket on_message callback failed", "exception": exc}
                )
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(msg)
            return
        q = self._queue
        if q is None:
            q = self._queue = collections.deque()
        q.append(msg)
        if len(q) >= self._max_queue and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _on_close_frame(self, payload: bytes) -> None:
        if len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in the close reason")
                return
            if not (code in _VALID_CLOSE or 3000 <= code <= 4999):
                self._fail(1002, f"invalid close code {code}")
                return
        elif payload:
            self._fail(1002, "close frame with a 1-byte payload")
            return
        else:
            code, reason = 1005, ""
        transport = self._transport
        if self._state == _OPEN and transport is not None:
            # echo the peer's code (RFC 6455 §5.5.1), then close our side
            echo = payload[:2] if code != 1005 else b""
            transport.write(_frame(0x80 | OP_CLOSE, echo))
        self._finish(code, reason, None)
        if transport is not None:
            transport.close()

    def _fail(self, code: int, reason: str) -> None:
        """The peer broke the protocol: send a close frame with ``code`` and drop the link."""
        err = WsError("protocol", reason)
        self.error = err
        transport = self._transport
        if self._state in (_OPEN, _HOLD) and transport is not None:
            transport.write(_frame(0x80 | OP_CLOSE, code.to_bytes(2, "big")))
        self._finish(code, reason, err)
        if transport is not None:
            transport.close()

    def _finish(self, code: int, reason: str, err: WsError | None) -> None:
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._buf = None
        self._frag = None
        self.close_code = code
        self.close_reason = reason
        if err is None:
            err = WsError("closed", f"connection closed ({code}{' ' + reason if reason else ''})")
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_exception(err)
        fut = self._close_fut
        if fut is not None and not fut.done():
            fut.set_result(None)
        cb = self._on_close
        if cb is not None:
            self._on_close = None
            try:
                cb(code)
            except Exception as exc:
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "WebSocket on_close callback failed", "exception": exc}
                )

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake (a hard stop).

        ``close_code`` becomes 1006 and ``on_close(1006)`` is called (if not closed already).
        """
        self._abort()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        if self._state != _CONNECTING:
            self._finish(1006, "", None)
        else:
            self._state = _CLOSED
            self.close_code = 1006

    # --- public API ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection is closed or closing (no more sends)."""
        return self._state >= _CLOSING

    def send_text(self, data: str | bytes) -> None:
        """Send a text message now (``bytes`` are taken as UTF-8 already, e.g. from
        ``orjson.dumps``). Raises :class:`WsError` ``"closed"`` when the connection is closed."""
        if self._state != _OPEN and self._state != _HOLD:
            raise WsError("closed", "send on a closed WebSocket")
        if type(data) is str:
            data = data.encode("utf-8")
        self._transport.write(_frame(0x81, data))  # type: ignore[union-attr, arg-type]  # connected; bytes: encoded above

    def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message now; raises :class:`WsError` ``"closed"`` when closed."""
        if self._state != _OPEN and self._state != _HOLD:
            raise WsError("closed", "send on a closed WebSocket")
        self._transport.write(_frame(0x82, bytes(data)))  # type: ignore[union-attr]  # connected: set in connection_made

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping frame (the server answers with a pong, which is ignored)."""
        if self._state != _OPEN and self._state != _HOLD:
            raise WsError("closed", "ping on a closed WebSocket")
        if len(payload) > 125:
            raise ValueError("ping payload over 125 bytes")
        self._transport.write(_frame(0x80 | OP_PING, payload))  # type: ignore[union-attr]  # connected: set in connection_made

    async def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message (pull mode only): ``str`` for text, ``bytes`` for binary.

        Raises :class:`WsError` ``"timeout"`` (the connection stays open) or ``"closed"`` /
        ``"protocol"`` once the connection has ended and the queue is empty.
        """
        if self._on_message is not None:
            raise RuntimeError("recv() is not available with an on_message callback")
        q = self._queue
        if q:
            msg = q.popleft()
            if self._paused and len(q) <= self._max_queue // 2:
                self._paused = False
                if self._state < _CLOSED:
                    self._transport.resume_reading()  # type: ignore[union-attr]  # connected: set in connection_made
            return msg
        if self._state == _CLOSED:
            raise self.error if self.error is not None else WsError("closed", "WebSocket closed")
        if self._waiter is not None:
            raise RuntimeError("recv() is already being awaited")
        loop = asyncio.get_running_loop()
        fut = self._waiter = loop.create_future()
        handle = None
        if timeout is not None:
            handle = loop.call_later(timeout, _expire, fut)
        try:
            message: str | bytes = await fut
            return message
        finally:
            if self._waiter is fut:
                self._waiter = None
            if handle is not None:
                handle.cancel()

    async def close(self, code: int = 1000, reason: str = "", timeout: float = 5.0) -> None:
        """Start the closing handshake and wait (at most ``timeout``) for the peer's close."""
        if self._state == _HOLD:
            self._release()
        if self._state == _CLOSED:
            return
        if self._state == _OPEN:
            self._state = _CLOSING
            payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:123]
            self._transport.write(_frame(0x80 | OP_CLOSE, payload))  # type: ignore[union-attr]  # connected: set in connection_made
        loop = asyncio.get_running_loop()
        if self._close_fut is None:
            self._close_fut = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._close_fut
        except TimeoutError:
            self._abort()

    def __repr__(self) -> str:
        state = ("connecting", "open", "open", "closing", "closed")[self._state]
        return f"<WebSocket {self.url} {state} close_code={self.close_code}>"


def _expire(fut: asyncio.Future[str | bytes]) -> None:
    if not fut.done():
        fut.set_exception(WsError("timeout", "no message within the timeout"))
