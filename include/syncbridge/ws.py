"""WebSocket endpoint ``/ws``: authentication, heartbeats and state sync between devices.

Protocol (JSON text frames):
- first message ``{type: "auth", token, deviceId, sessionId?}`` -> ``{type: "auth_ok", ...}``;
  anything else first, a bad token or no message within the auth timeout closes with 1008.
  With ``sessionId`` the connection subscribes to that (own) session and the device joins the
  session's device list.
- ``{type: "heartbeat", timestamp}`` -> ``{type: "heartbeat_ack", timestamp}`` (echoed).
- ``{type: "state_update", sessionId, delta: {operations, version}}``: the JSON Patch is applied
  atomically if ``version`` is the session's current version -> ``{type: "state_ack",
  sessionId, version}``; the update goes to the session's other subscribed devices as
  ``{type: "state_update", sessionId, version, delta, fromDeviceId}``. Errors come back as
  ``{type: "error", code, ...}`` with code version_conflict, invalid_patch, session_not_found,
  invalid_message, unknown_type or storage_unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from . import storage
from .auth import AuthError
from .storage import StorageError
from .validation import MAX_DEVICE_ID, valid_session_id

if TYPE_CHECKING:
    from .app import Service

_IN_TYPES = frozenset({"auth", "heartbeat", "state_update"})
_DATA_TYPES = (WSMsgType.TEXT, WSMsgType.BINARY)


class WsConn:
    __slots__ = ("device_id", "key", "subs", "user_id", "ws")

    def __init__(self, ws: web.WebSocketResponse, user_id: int, device_id: str):
        self.ws = ws
        self.user_id = user_id
        self.device_id = device_id
        self.key = (user_id, device_id)
        self.subs: set[str] = set()


class Hub:
    """Who is connected, and who is subscribed to which session (in memory)."""

    def __init__(self) -> None:
        self.sockets: set[web.WebSocketResponse] = set()  # every open socket, authed or not
        self._subs: dict[tuple[int, str], dict[WsConn, None]] = {}
        self._online: dict[tuple[int, str], list] = {}  # (user, device) -> [count, last seen]

    def add(self, conn: WsConn) -> None:
        entry = self._online.get(conn.key)
        if entry is None:
            self._online[conn.key] = [1, time.time()]
        else:
            entry[0] += 1
            entry[1] = time.time()

    def touch(self, conn: WsConn) -> None:
        self._online[conn.key][1] = time.time()

    def subscribe(self, conn: WsConn, session_id: str) -> None:
        if session_id in conn.subs:
            return
        conn.subs.add(session_id)
        self._subs.setdefault((conn.user_id, session_id), {})[conn] = None

    def peers(self, conn: WsConn, session_id: str) -> list[WsConn]:
        subs = self._subs.get((conn.user_id, session_id))
        if not subs:
            return []
        return [p for p in subs if p.device_id != conn.device_id]

    def remove(self, conn: WsConn) -> None:
        for sid in conn.subs:
            key = (conn.user_id, sid)
            subs = self._subs.get(key)
            if subs is not None:
                subs.pop(conn, None)
                if not subs:
                    del self._subs[key]
        conn.subs.clear()
        entry = self._online.get(conn.key)
        if entry is not None:
            entry[0] -= 1
            if entry[0] <= 0:
                del self._online[conn.key]

    def device_status(self, user_id: int, device_id: str) -> tuple[bool, float | None]:
        entry = self._online.get((user_id, device_id))
        if entry is None:
            return False, None
        return True, entry[1]


def _parse(data: Any) -> dict | None:
    try:
        obj = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError):
        return None
    return obj if isinstance(obj, dict) else None


class WsHandler:
    def __init__(self, service: Service):
        self.s = service
        self.hub = Hub()

    async def _send(self, ws: web.WebSocketResponse, obj: dict) -> None:
        await self._send_raw(ws, orjson.dumps(obj), obj["type"])

    async def _send_raw(self, ws: web.WebSocketResponse, frame: bytes, mtype: str) -> bool:
        if ws.closed:
            return False
        try:
            await ws.send_frame(frame, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            return False
        self.s.metrics.ws_message("out", mtype)
        return True

    def _maybe_drop(self, request: web.Request) -> bool:
        """The ws_drop_rate fault: abort the connection without a close handshake."""
        rate = self.s.faults.current.ws_drop_rate
        if rate and random.random() < rate:
            self.s.metrics.ws_dropped.inc()
            transport = request.transport
            if transport is not None:
                transport.abort()
            return True
        return False

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        cfg = self.s.config
        ws = web.WebSocketResponse(
            compress=False,
            autoping=True,
            heartbeat=None,
            max_msg_size=cfg.max_ws_message_bytes,
            writer_limit=64 * 1024,
            decode_text=False,
        )
        await ws.prepare(request)
        metrics = self.s.metrics
        metrics.ws_connections.inc()
        self.hub.sockets.add(ws)
        conn = None
        try:
            conn = await self._authenticate(request, ws)
            if conn is not None:
                await self._serve(request, conn)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:
            # The socket is upgraded: an HTTP error response is no longer possible.
            self.s.log.error("websocket handler error", exc=f"{type(exc).__name__}: {exc}")
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
        finally:
            self.hub.sockets.discard(ws)
            metrics.ws_connections.dec()
            if conn is not None:
                self.hub.remove(conn)
        return ws

    async def _reject(self, ws: web.WebSocketResponse, reason: str) -> None:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=reason.encode()[:120])

    async def _authenticate(self, request: web.Request, ws: web.WebSocketResponse) -> WsConn | None:
        try:
            msg = await ws.receive(timeout=self.s.config.ws_auth_timeout)
        except TimeoutError:
            await self._reject(ws, "authentication timeout")
            return None
        if msg.type not in _DATA_TYPES:
            return None  # closed or errored before authenticating
        data = _parse(msg.data)
        mtype = data.get("type") if data else None
        if not isinstance(mtype, str):
            mtype = None
        self.s.metrics.ws_message("in", mtype if mtype in _IN_TYPES else "unknown")
        if self._maybe_drop(request):
            return None
        if mtype != "auth":
            await self._reject(ws, "first message must be auth")
            return None
        token, device_id, session_id = (
            data.get("token"),
            data.get("deviceId"),
            data.get("sessionId"),
        )
        if not isinstance(device_id, str) or not 1 <= len(device_id) <= MAX_DEVICE_ID:
            await self._reject(ws, "deviceId must be a non-empty string")
            return None
        if session_id is not None and not valid_session_id(session_id):
            await self._reject(ws, "invalid sessionId")
            return None
        if not isinstance(token, str):
            await self._reject(ws, "token required")
            return None
        try:
            user_id = self.s.auth.verify_access(token)
        except AuthError as exc:
            await self._reject(ws, str(exc))
            return None
        conn = WsConn(ws, user_id, device_id)
        self.hub.add(conn)
        reply: dict[str, Any] = {"type": "auth_ok", "deviceId": device_id, "userId": user_id}
        if session_id is not None:
            try:
                await self.s.pool.run(storage.join_device, user_id, session_id, device_id)
            except StorageError:
                await self._send(ws, {"type": "error", "code": "storage_unavailable"})
                await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"storage unavailable")
                return conn
            self.hub.subscribe(conn, session_id)
            reply["sessionId"] = session_id
        await self._send(ws, reply)
        return conn

    async def _serve(self, request: web.Request, conn: WsConn) -> None:
        ws = conn.ws
        metrics = self.s.metrics
        hub = self.hub
        while not ws.closed:
            msg = await ws.receive()
            if msg.type not in _DATA_TYPES:
                break  # close, closing, closed or error
            hub.touch(conn)
            data = _parse(msg.data)
            mtype = data.get("type") if data else None
            if not isinstance(mtype, str):
                mtype = None
            metrics.ws_message("in", mtype if mtype in _IN_TYPES else "unknown")
            if self._maybe_drop(request):
                return
            if data is None:
                await self._send(ws, {"type": "error", "code": "invalid_message"})
            elif mtype == "heartbeat":
                delay = self.s.faults.current.heartbeat_delay_ms
                if delay:
                    await asyncio.sleep(delay / 1000)
                await self._send(
                    ws,
                    {
                        "type": "heartbeat_ack",
                        "timestamp": data.get("timestamp"),
                        "serverTime": int(time.time() * 1000),
                    },
                )
            elif mtype == "state_update":
                await self._state_update(conn, data)
            elif mtype == "auth":
                await self._send(ws, {"type": "error", "code": "already_authenticated"})
            else:
                await self._send(ws, {"type": "error", "code": "unknown_type"})

    async def _state_update(self, conn: WsConn, data: dict) -> None:
        ws = conn.ws
        sid = data.get("sessionId")
        delta = data.get("delta")
        if not valid_session_id(sid):
            await self._send(
                ws, {"type": "error", "code": "invalid_message", "message": "invalid sessionId"}
            )
            return
        version = delta.get("version") if isinstance(delta, dict) else None
        if not isinstance(delta, dict) or isinstance(version, bool) or not isinstance(version, int):
            await self._send(
                ws,
                {
                    "type": "error",
                    "code": "invalid_message",
                    "sessionId": sid,
                    "message": "delta must be {operations: [...], version: int}",
                },
            )
            return
        try:
            outcome, value = await self.s.pool.run(
                storage.apply_delta,
                conn.user_id,
                sid,
                conn.device_id,
                delta.get("operations"),
                version,
                self.s.config.max_body_bytes,
            )
        except StorageError:
            await self._send(ws, {"type": "error", "code": "storage_unavailable", "sessionId": sid})
            return
        if outcome == "conflict":
            await self._send(
                ws,
                {
                    "type": "error",
                    "code": "version_conflict",
                    "sessionId": sid,
                    "currentVersion": value,
                },
            )
            return
        if outcome == "not_found":
            await self._send(ws, {"type": "error", "code": "session_not_found", "sessionId": sid})
            return
        if outcome == "invalid_patch":
            await self._send(
                ws, {"type": "error", "code": "invalid_patch", "sessionId": sid, "message": value}
            )
            return
        self.hub.subscribe(conn, sid)
        await self._send(ws, {"type": "state_ack", "sessionId": sid, "version": value})
        peers = self.hub.peers(conn, sid)
        if peers:
            frame = orjson.dumps(
                {
                    "type": "state_update",
                    "sessionId": sid,
                    "version": value,
                    "delta": delta,
                    "fromDeviceId": conn.device_id,
                }
            )
            for peer in peers:
                await self._send_raw(peer.ws, frame, "state_update")

    async def close_all(self, timeout: float) -> None:
        """Graceful shutdown: close every socket with 1001 (going away)."""
        sockets = list(self.hub.sockets)
        if not sockets:
            return

        async def _close(ws: web.WebSocketResponse) -> None:
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(_close(ws) for ws in sockets))
        except TimeoutError:
            pass
