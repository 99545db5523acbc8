"""A lean HTTP/1.1 client for the load engine's hot path.

One :class:`HttpConnection` per virtual user: it owns one keep-alive connection, as a real
client (a browser tab, a phone app) has, so 10,000 VUs are 10,000 connections. It is built
straight on ``asyncio.Protocol`` (uvloop in the engine) with the ``httptools`` (llhttp) parser:
the request head is pre-encoded (host and default headers once per origin, shared by all its
connections), a request is one ``transport.write`` and one future, and the response is parsed
by callbacks into a slotted :class:`Response`. Nothing here creates a task.

What it does:

- keep-alive; responses delimited by Content-Length, by chunked transfer coding or (without
  either) by the end of the connection; ``Connection: close`` and HTTP/1.0 responses close the
  connection after the response; HEAD, 1xx, 204 and 304 responses carry no body; interim 1xx
  responses (``100 Continue``) are skipped.
- ``https://`` through an :class:`ssl.SSLContext` (a shared default context when none is given).
- IPv4 and IPv6 (``http://[::1]:8080``); host names are resolved once and cached for
  ``DNS_TTL_S`` seconds, shared by all connections of the process.
- timeouts: ``connect_timeout`` bounds opening the connection (TCP + TLS),
  ``request(timeout=...)`` bounds the whole request, connect included.
- bounded bodies: a response keeps at most ``max_body`` bytes of its body in memory
  (:data:`MAX_BODY_BYTES`, 1 MiB, by default); the rest is read and discarded, so the response
  is still timed to its last byte and the connection stays usable. ``Response.size`` is the
  whole body's length and ``Response.truncated`` says some of it was discarded.

Errors are :class:`HttpError` with a ``kind``:

- ``"connect"``: the connection could not be opened (refused, unreachable, DNS, TLS handshake or
  certificate failure, or ``connect_timeout`` expired);
- ``"timeout"``: the request's ``timeout`` expired (the connection is then dropped);
- ``"closed"``: the server closed or reset the connection before the response was complete;
- ``"protocol"``: the server's bytes were not valid HTTP/1.1 (or it answered with an upgrade).

An HTTP status is never an error: 4xx and 5xx are returned as responses. Nor is a redirect
ever followed: a 3xx is a response like any other, and no request (nor its ``Authorization``
header) goes to the host its ``Location`` names; a connection only ever talks to its origin.

Reconnect and retry rule: when the connection is known closed before a request (the server
closed an idle keep-alive connection, the previous response said ``Connection: close``, an
error dropped it), the request opens a new connection; nothing was sent, so this is no retry.
A retry happens only in the race where the server closes a *reused* idle connection just as the
request is written: if the connection then closes before a single byte of the response arrived
and the method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), the request is sent
once more on a fresh connection. A non-idempotent request (POST, PATCH) is never re-sent; it
fails with kind ``"closed"``. A request on a fresh connection is never re-sent.

Timing: ``duration_s`` runs from just before the request's first byte is written to the parse
of the response's last byte (k6's ``http_req_duration``); ``connect_s`` is the TCP(+TLS) connect
time when this request opened the connection and 0.0 when it reused one.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httptools
import orjson

from loadgate.engine._proto import DNS_TTL_S, default_ssl_context, open_connection

__all__ = ["DNS_TTL_S", "MAX_BODY_BYTES", "HttpConnection", "HttpError", "Response"]

_perf = time.perf_counter

# What a response may hold of its body in memory; the target decides how much it sends.
MAX_BODY_BYTES = 1024 * 1024

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
USER_AGENT = "loadgate/0.1"

# method -> b"METHOD " for the common ones; others are encoded on demand.
_METHOD_BYTES = {
    m: (m + " ").encode("ascii")
    for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
}
_HTTP11 = b" HTTP/1.1\r\n"
_CRLF = b"\r\n"
_CLEN0 = b"Content-Length: 0\r\n\r\n"
_CT_JSON = b"Content-Type: application/json\r\n"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_NO_JSON: Any = object()
_PATH_SAFE = "/:?#[]@!$&'()*+,;=%~-._"


class HttpError(Exception):
    """A request that got no complete HTTP response.

    ``kind`` is one of ``"connect"``, ``"timeout"``, ``"closed"``, ``"protocol"`` (see the module
    docstring); ``str(error)`` is a human-readable message.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __repr__(self) -> str:
        return f"HttpError({self.kind!r}, {self.args[0]!r})"


class Response:
    """One HTTP response.

    ``headers`` is the list of ``(name, value)`` byte pairs as received (order and case kept,
    repeated headers repeated); :meth:`header` looks one up case-insensitively. ``body`` is at
    most the connection's ``max_body`` bytes: ``size`` is the length of the whole body received
    and ``truncated`` is true when some of it was discarded.
    """

    __slots__ = ("body", "connect_s", "duration_s", "headers", "size", "status", "truncated")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        connect_s: float,
        duration_s: float,
        size: int | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.connect_s = connect_s
        self.duration_s = duration_s
        self.size = len(body) if size is None else size
        self.truncated = self.size > len(body)

    def json(self) -> Any:
        """The body parsed as JSON (orjson); raises ``orjson.JSONDecodeError`` (a ValueError),
        also for a truncated body (never parsed: a prefix of JSON may be valid JSON)."""
        if self.truncated:
            raise orjson.JSONDecodeError(
                f"response body truncated to {len(self.body)} of {self.size} bytes", "", 0
            )
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first header called ``name`` (case-insensitive), decoded as Latin-1."""
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k.lower() == key:
                return v.decode("latin-1")
        return default

    def __repr__(self) -> str:
        cut = f" of {self.size}B" if self.truncated else ""
        return (
            f"<Response {self.status} body={len(self.body)}B{cut} "
            f"connect={self.connect_s * 1e3:.2f}ms duration={self.duration_s * 1e3:.2f}ms>"
        )


class _StopParsing(Exception):
    """Raised from a parser callback to abandon the parser (after a HEAD response's head)."""


class _Proto(asyncio.Protocol):
    """One TCP (or TLS) connection and the state of the request in flight on it."""

    __slots__ = (
        "body",
        "closed",
        "fut",
        "got",
        "head_only",
        "headers",
        "kept",
        "max_body",
        "parser",
        "size",
        "status",
        "t0",
        "transport",
    )

    def __init__(self, max_body: int = MAX_BODY_BYTES) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None  # only while a request is out
        self.fut: asyncio.Future[Response] | None = None
        self.closed = False
        self.got = False
        self.head_only = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.max_body = max_body
        self.kept = 0  # bytes of the body in ``body``
        self.size = 0  # bytes of the body received
        self.t0 = 0.0

    # --- request side -------------------------------------------------------------------

    def send(self, fut: asyncio.Future[Response], data: bytes, head_only: bool) -> None:
        self.fut = fut
        self.got = False
        self.head_only = head_only
        self.status = 0
        self.headers = []
        self.body = []
        self.kept = self.size = 0
        # A fresh parser per response (0.3 µs): idle keep-alive connections hold none, and no
        # parser state can leak from one response into the next.
        self.parser = httptools.HttpResponseParser(self)
        self.t0 = _perf()
        self.transport.write(data)  # type: ignore[union-attr]  # connected: set in connection_made

    def fail(self, err: HttpError, *, abort: bool = True) -> None:
        """Fail the request in flight (if any) and drop the connection: aborted (a broken
        one), or closed once what is written is sent (``abort=False``, the client's close)."""
        self.closed = True
        fut = self.fut
        self.fut = None
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        if fut is not None and not fut.done():
            fut.set_exception(err)

    def on_timeout(self) -> None:
        self.fail(HttpError("timeout", "request timed out"))

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio passes the base class; ours is a Transport

    def data_received(self, data: bytes) -> None:
        if self.fut is None:
            # Bytes while no request is in flight: not HTTP/1.1 without pipelining.
            self.closed = True
            self.transport.abort()  # type: ignore[union-attr]  # connected: set in connection_made
            return
        self.got = True
        try:
            self.parser.feed_data(data)  # type: ignore[union-attr]  # set with fut, above
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _StopParsing):
                self.fail(HttpError("protocol", f"response handling failed: {exc.__context__!r}"))
        except httptools.HttpParserUpgrade:
            self.fail(HttpError("protocol", "unexpected protocol upgrade in response"))
        except httptools.HttpParserError as exc:
            self.fail(HttpError("protocol", f"malformed response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost settles the request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        fut = self.fut
        if fut is None:
            return
        self.fut = None
        if fut.done():
            return
        if self.status >= 200 and self._eof_delimited():
            fut.set_result(self._response())
            return
        if self.status:
            msg = "connection closed by the server in the middle of the response"
        elif self.got:
            msg = "connection closed by the server in the middle of the response head"
        else:
            msg = "connection closed by the server before any response"
        if exc is not None:
            msg += f" ({exc!r})"
        fut.set_exception(HttpError("closed", msg))

    # --- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()  # type: ignore[union-attr]  # connected: set in connection_made
        self.status = status
        if self.head_only and status >= 200:
            # llhttp cannot be told the request was HEAD: finish here, abandon this parser.
            self._complete()
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        room = self.max_body - self.kept
        if room <= 0:
            return  # read and discarded: the response is timed to its end all the same
        if len(body) > room:
            body = body[:room]
        self.body.append(body)
        self.kept += len(body)

    def on_message_complete(self) -> None:
        if self.status < 200:  # interim 1xx response: wait for the final one
            self.status = 0
            self.headers = []
            self.body = []
            self.kept = self.size = 0
            return
        self._complete()

    # --- helpers ------------------------------------------------------------------------

    def _response(self) -> Response:
        body = self.body
        n = len(body)
        data = body[0] if n == 1 else (b"".join(body) if n else b"")
        return Response(self.status, self.headers, data, 0.0, _perf() - self.t0, self.size)

    def _complete(self) -> None:
        resp = self._response()
        fut = self.fut
        self.fut = None
        keep_alive = self.parser.should_keep_alive()  # type: ignore[union-attr]  # connected: set in connection_made
        self.parser = None
        # None while idle: stray bytes after the response fail loudly in the callbacks
        # (HttpParserCallbackError -> connection dropped) instead of joining a later response.
        self.headers = self.body = None  # type: ignore[assignment]  # None while idle, as said above
        if not keep_alive:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]  # connected: set in connection_made
        if fut is not None and not fut.done():
            fut.set_result(resp)

    def _eof_delimited(self) -> bool:
        """Whether the response in flight has its body delimited by the connection's end."""
        if self.head_only or self.status in (204, 304):
            return False
        for k, _ in self.headers:
            if len(k) in (14, 17) and k.lower() in (b"content-length", b"transfer-encoding"):
                return False
        return True


def _check_header(name: str, value: str) -> None:
    if not name or any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
        raise ValueError(f"invalid HTTP header {name!r}: {value!r}")


def _encode_headers(headers: Mapping[str, str]) -> bytes:
    parts = []
    for name, value in headers.items():
        value = str(value)
        _check_header(name, value)
        parts.append(f"{name}: {value}\r\n")
    return "".join(parts).encode("latin-1")


class _Origin:
    """What the connections of one (base URL, TLS context, default headers) share: parsed once,
    so 10,000 VUs hold 10,000 references rather than 10,000 copies."""

    __slots__ = ("block", "defaults", "host", "port", "prefix", "ssl")

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None,
        default_headers: tuple[tuple[str, str], ...],
    ) -> None:
        parts = urlsplit(base_url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port][/path], got {base_url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"base_url must not have a query or fragment: {base_url!r}")
        self.host: str = parts.hostname
        default_port = 443 if scheme == "https" else 80
        self.port: int = parts.port or default_port
        self.ssl = (ssl_context or default_ssl_context()) if scheme == "https" else None
        self.prefix = quote(parts.path.rstrip("/"), safe=_PATH_SAFE).encode("ascii")
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != default_port:
            host = f"{host}:{self.port}"
        self.defaults: dict[str, tuple[str, str]] = {
            "host": ("Host", host),
            "user-agent": ("User-Agent", USER_AGENT),
        }
        for name, value in default_headers:
            _check_header(name, value)
            self.defaults[name.lower()] = (name, value)
        self.block = _encode_headers(dict(self.defaults.values()))


_origins: dict[tuple[Any, ...], _Origin] = {}


def _origin(
    base_url: str, ssl_context: ssl.SSLContext | None, headers: Mapping[str, str] | None
) -> _Origin:
    hdrs = tuple((k, str(v)) for k, v in headers.items()) if headers else ()
    key = (base_url, ssl_context, hdrs)
    origin = _origins.get(key)
    if origin is None:
        origin = _Origin(base_url, ssl_context, hdrs)
        if len(_origins) >= 256:
            _origins.clear()
        _origins[key] = origin
    return origin


class HttpConnection:
    """One virtual user's HTTP/1.1 connection to one origin (``base_url``).

    ``base_url`` is ``http://host[:port][/prefix]`` or ``https://…``; request paths are appended
    to the prefix. ``default_headers`` are sent with every request (``Host`` and ``User-Agent``
    are added unless given); :meth:`set_header` changes them later for this connection only
    (e.g. an ``Authorization`` token after login). The connection opens lazily on the first
    request and reopens when the server closed it; see the module docstring for the retry rule
    and error kinds. A response keeps at most ``max_body`` bytes of its body (the rest is read
    and discarded, the response marked ``truncated``).

    One request at a time: a VU is sequential. A second concurrent :meth:`request` raises
    ``RuntimeError``. Cancelling a request drops the connection (its state is unknown).

    Memory: an idle connection holds this object, its protocol object and the transport
    (about 2–3 KB with uvloop); the parsed URL and encoded default headers are shared by all
    connections made with the same arguments, and a response parser exists only while a
    request is in flight.
    """

    __slots__ = (
        "_block",
        "_busy",
        "_connect_timeout",
        "_defaults",
        "_max_body",
        "_origin",
        "_proto",
        "base_url",
    )

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        default_headers: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        if max_body < 0:
            raise ValueError(f"max_body must be at least 0, got {max_body}")
        self.base_url = base_url
        self._origin = _origin(base_url, ssl_context, default_headers)
        self._block = self._origin.block
        self._defaults = self._origin.defaults  # copied on the first set_header()
        self._connect_timeout = connect_timeout
        self._max_body = max_body
        self._proto: _Proto | None = None
        self._busy = False

    # --- headers ------------------------------------------------------------------------

    def set_header(self, name: str, value: str | None) -> None:
        """Set (or with ``None`` remove) a default header sent with every later request."""
        if self._defaults is self._origin.defaults:
            self._defaults = dict(self._defaults)
        key = name.lower()
        if value is None:
            self._defaults.pop(key, None)
        else:
            _check_header(name, str(value))
            self._defaults[key] = (name, str(value))
        self._block = _encode_headers(dict(self._defaults.values()))

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (it may still be closed by the server any time)."""
        return self._proto is not None and not self._proto.closed

    # --- requests -----------------------------------------------------------------------

    def _encode(
        self,
        method: str,
        path: str,
        body: bytes | bytearray | memoryview | str | None,
        headers: Mapping[str, str] | None,
        json: Any,
    ) -> bytes:
        mline = _METHOD_BYTES.get(method)
        if mline is None:
            if not method.isascii() or not method.isalpha():
                raise ValueError(f"invalid HTTP method {method!r}")
            mline = (method + " ").encode("ascii")
        try:
            pathb = path.encode("ascii")
        except UnicodeEncodeError:
            pathb = quote(path, safe=_PATH_SAFE).encode("ascii")
        if path[:1] != "/":
            if path.startswith(("http://", "https://")):
                raise ValueError(f"path must be relative to the base URL, got {path!r}")
            pathb = b"/" + pathb
        if b" " in pathb or b"\r" in pathb or b"\n" in pathb:
            pathb = quote(path, safe=_PATH_SAFE).encode("ascii")
        block = self._block
        prefix = self._origin.prefix
        extra = b""
        if json is not _NO_JSON:
            if body is not None:
                raise ValueError("give body or json, not both")
            body = orjson.dumps(json)
            if not headers or not any(k.lower() == "content-type" for k in headers):
                extra = _CT_JSON
        if headers:
            if any(k.lower() in self._defaults for k in headers):
                merged = dict(self._defaults)
                for k, v in headers.items():
                    merged[k.lower()] = (k, str(v))
                block = _encode_headers(dict(merged.values()))
            else:
                extra += _encode_headers(headers)
        if body is None:
            if method in _BODY_METHODS:
                return b"".join((mline, prefix, pathb, _HTTP11, block, extra, _CLEN0))
            return b"".join((mline, prefix, pathb, _HTTP11, block, extra, _CRLF))
        if isinstance(body, str):
            body = body.encode("utf-8")
        clen = b"Content-Length: %d\r\n\r\n" % len(body)
        return b"".join((mline, prefix, pathb, _HTTP11, block, extra, clen, body))

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | bytearray | memoryview | str | None = None,
        json: Any = _NO_JSON,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Response:
        """Send one request and read its whole response.

        ``method`` is upper case (``"GET"``); ``path`` is relative to the base URL and may carry
        a query string (``"/api/v1/sessions/42?x=1"``). ``body`` is sent as is (a ``str`` as
        UTF-8) with a Content-Length; ``json`` is serialised with orjson and sent with
        ``Content-Type: application/json``. ``headers`` are added to (or override) the default
        headers for this request only. ``timeout`` bounds the whole request, connect included.

        Returns a :class:`Response` for any HTTP status; raises :class:`HttpError`.
        """
        if self._busy:
            raise RuntimeError("HttpConnection: a request is already in flight (one per VU)")
        data = self._encode(method, path, body, headers, json)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        head_only = method == "HEAD"
        retried = False
        self._busy = True
        try:
            while True:
                proto = self._proto
                connect_s = 0.0
                reused = proto is not None and not proto.closed
                if proto is None or not reused:
                    t0 = _perf()
                    proto = await self._connect(loop, deadline)
                    connect_s = _perf() - t0
                fut = loop.create_future()
                timer = loop.call_at(deadline, proto.on_timeout)
                try:
                    proto.send(fut, data, head_only)
                    resp: Response = await fut
                except HttpError as exc:
                    if (
                        exc.kind == "closed"
                        and reused
                        and not proto.got
                        and not retried
                        and method in IDEMPOTENT_METHODS
                    ):
                        retried = True
                        continue
                    raise
                except BaseException:  # cancelled: the connection's state is unknown
                    proto.fail(HttpError("closed", "request cancelled"))
                    raise
                finally:
                    timer.cancel()
                resp.connect_s = connect_s
                return resp
        finally:
            self._busy = False

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Proto:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise HttpError("timeout", "request timed out before connecting")
        limit = min(self._connect_timeout, remaining)
        kind = "connect" if self._connect_timeout < remaining else "timeout"
        proto = _Proto(self._max_body)
        origin = self._origin
        try:
            async with asyncio.timeout(limit):
                await open_connection(loop, lambda: proto, origin.host, origin.port, origin.ssl)
        except TimeoutError:
            raise HttpError(
                kind, f"connect to {origin.host}:{origin.port} timed out after {limit:.3g}s"
            ) from None
        except (OSError, ssl.CertificateError) as exc:
            raise HttpError("connect", f"connect to {origin.host}:{origin.port}: {exc}") from exc
        self._proto = proto
        return proto

    def close(self) -> None:
        """Close the connection now (a request in flight fails with kind ``"closed"``)."""
        proto = self._proto
        self._proto = None
        if proto is not None:
            proto.fail(HttpError("closed", "connection closed by the client"), abort=False)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "idle"
        return f"<HttpConnection {self.base_url} {state}>"
