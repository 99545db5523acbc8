"""The SyncBridge HTTP service: routes, handlers, middleware, start-up and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import os
import random
import signal
import socket
import sys
import time
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
import prometheus_client
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from . import storage
from .auth import Auth, AuthError
from .config import Config
from .faults import FaultController, FaultError, parse_faults
from .logs import JsonLog, bridge_stdlib_logging, iso_ts
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .openapi import openapi_spec
from .storage import Pool, StorageError
from .validation import (
    MAX_DEVICE_ID,
    MAX_NAME,
    MAX_PASSWORD,
    MAX_TOKEN,
    MIN_PASSWORD,
    ApiError,
    email_field,
    object_field,
    session_id_field,
    str_field,
    valid_session_id,
)
from .ws import WsHandler

_T = TypeVar("_T")
_JSON = "application/json"
_WS_ROUTE = "/ws"


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=_JSON)


_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


def _log_path(request: web.Request) -> str:
    """The request path as sent, without the query string (it could carry secrets)."""
    path = request.raw_path.partition("?")[0]
    return path if path.isascii() else quote(path, safe=_PATH_SAFE)


_REASONS = {
    400: "bad request",
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


class Service:
    def __init__(self, config: Config, log: JsonLog):
        self.config = config
        self.log = log
        self.started = time.time()
        self.release = config.release  # changes on POST /admin/rollback
        self.metrics = Metrics(
            config.release, config.memory_limit_bytes, config.cpu_limit_cores, config.pool_size
        )
        self.faults = FaultController(log, self.metrics, config.memory_limit_bytes)
        self.pool = Pool(
            config.db_path, config.pool_size, self.metrics, self.faults, config.pool_timeout
        )
        self.auth: Auth | None = None
        self.ws = WsHandler(self)
        self._tasks: list[asyncio.Task] = []
        self._openapi = orjson.dumps(openapi_spec(config.release))

    # ----------------------------------------------------------------------------- lifecycle

    async def startup(self) -> None:
        self.pool.open()
        secret = await self.pool.run(storage.load_or_create_secret, exempt=True)
        await self.pool.run(
            storage.record_deploy,
            self.config.release,
            self.config.faults.to_dict(),
            self.config.previous_release,
            exempt=True,
        )
        self.auth = Auth(
            secret,
            kdf_cost=self.config.kdf_cost,
            access_ttl=self.config.token_ttl,
            refresh_ttl=self.config.refresh_ttl,
        )
        self.faults.apply(self.config.faults)
        self.faults.start_watchdog()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._flush_logs()))
        self._tasks.append(loop.create_task(self._purge_tokens()))

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.ws.close_all(timeout=min(5.0, self.config.shutdown_timeout))

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.faults.stop()
        self.pool.close()
        if self.auth is not None:
            self.auth.close()

    async def _flush_logs(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.log.flush()

    async def _purge_tokens(self) -> None:
        while True:
            await asyncio.sleep(60)
            with contextlib.suppress(StorageError):
                await self.pool.run(storage.purge_expired_refresh_tokens)

    def make_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._middleware], client_max_size=self.config.max_body_bytes
        )
        r = app.router
        r.add_post("/api/v1/auth/register", self.register)
        r.add_post("/api/v1/auth/login", self.login)
        r.add_post("/api/v1/auth/refresh", self.refresh)
        r.add_post("/api/v1/sessions", self.create_session)
        r.add_get("/api/v1/sessions/{id}", self.get_session)
        r.add_put("/api/v1/sessions/{id}", self.put_session)
        r.add_post("/api/v1/sessions/{id}/snapshot", self.snapshot)
        r.add_get("/api/v1/sessions/{id}/devices", self.devices)
        r.add_post("/api/v1/sessions/{id}/handoff", self.handoff)
        r.add_get(_WS_ROUTE, self.ws.handle)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.metrics_handler)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/admin/faults", self.get_faults)
        r.add_put("/admin/faults", self.put_faults)
        r.add_get("/admin/release", self.get_release)
        r.add_post("/admin/rollback", self.rollback)
        app.on_shutdown.append(self._on_shutdown)
        return app

    # ---------------------------------------------------------------------------- middleware

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            faults = self.faults.current
            if faults.http_active and faults.touches(route):
                delay = faults.delay_ms(random, route)
                if delay > 0:
                    await asyncio.sleep(delay / 1000)
                if (
                    faults.error_rate
                    and faults.applies_to(route)
                    and random.random() < faults.error_rate
                ):
                    status = 503 if random.random() < 0.5 else 500
                    raise ApiError(status, "injected fault: service error")
            resp = await handler(request)
        except ApiError as exc:
            resp = json_response(exc.body(), exc.status)
        except web.HTTPException as exc:
            resp = json_response(
                {"error": _REASONS.get(exc.status, exc.reason.lower())}, exc.status
            )
            if exc.status == 405 and "Allow" in exc.headers:
                resp.headers["Allow"] = exc.headers["Allow"]
        except StorageError as exc:
            resp = json_response({"error": "storage unavailable", "detail": str(exc)}, 503)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.error(
                "unhandled error",
                route=route,
                method=request.method,
                exc=f"{type(exc).__name__}: {exc}",
            )
            resp = json_response({"error": "internal error"}, 500)
        elapsed = time.perf_counter() - t0
        status = resp.status
        if route == _WS_ROUTE:
            self.metrics.observe_request(route, request.method, status, None)
            if self.config.access_log:
                self.log.info(
                    "websocket closed",
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                )
        else:
            self.metrics.observe_request(route, request.method, status, elapsed)
            if self.config.access_log:
                self.log.info(
                    "request",
                    method=request.method,
                    route=route,
                    path=_log_path(request),
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                )
        return resp

    # ------------------------------------------------------------------------------- helpers

    async def _json_body(self, request: web.Request) -> dict:
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            raise ApiError(413, "request body too large", limit=self.config.max_body_bytes)
        body = await request.read()
        if not body:
            raise ApiError(400, "request body must be a JSON object")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ApiError(400, "malformed JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "request body must be a JSON object")
        return data

    def _user(self, request: web.Request) -> int:
        header = request.headers.get("Authorization")
        if not header:
            raise ApiError(401, "missing bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing bearer token")
        try:
            return self.auth.verify_access(token.strip())
        except AuthError as exc:
            raise ApiError(401, str(exc)) from None

    @staticmethod
    def _session_id(request: web.Request) -> str:
        sid = request.match_info["id"]
        if not valid_session_id(sid):
            raise ApiError(404, "session not found")
        return sid

    def _caller(self, request: web.Request) -> tuple[int, str]:
        """The authenticated user and the session the path names."""
        return self._user(request), self._session_id(request)

    @staticmethod
    def _found(result: _T | None) -> _T:
        """A storage result, or 404: storage answers None for a session the user does not own."""
        if result is None:
            raise ApiError(404, "session not found")
        return result

    def _tokens(self, user_id: int, refresh: str) -> dict[str, Any]:
        return {
            "accessToken": self.auth.issue_access(user_id),
            "refreshToken": refresh,
            "tokenType": "Bearer",
            "expiresIn": int(self.config.token_ttl),
        }

    # ---------------------------------------------------------------------------------- auth

    async def register(self, request: web.Request) -> web.Response:
        data = await self._json_body(request)
        email = email_field(data)
        password = str_field(data, "password", min_len=MIN_PASSWORD, max_len=MAX_PASSWORD)
        name = str_field(data, "name", max_len=MAX_NAME, required=False)
        if await self.pool.run(storage.user_exists, email):
            raise ApiError(409, "email already registered")
        pw_hash = await self.auth.hash_password(password)
        # The refresh token is recorded with the user, in one transaction, then signed.
        jti, exp = self.auth.new_refresh_id()
        user = await self.pool.run(storage.create_user, email, name, pw_hash, jti, exp)
        if user is None:
            raise ApiError(409, "email already registered")
        refresh = self.auth.sign_refresh(user["id"], jti, exp)
        return json_response({**self._tokens(user["id"], refresh), "user": user}, 201)

    async def login(self, request: web.Request) -> web.Response:
        data = await self._json_body(request)
        email = email_field(data)
        password = str_field(data, "password", max_len=MAX_PASSWORD)
        row = await self.pool.run(storage.get_user_by_email, email)
        if not await self.auth.verify_password(password, row[3] if row else None):
            raise ApiError(401, "invalid email or password")
        user_id = row[0]
        refresh, jti, exp = self.auth.issue_refresh(user_id)
        await self.pool.run(storage.add_refresh_token, jti, user_id, exp)
        user = {"id": user_id, "email": row[1], "name": row[2], "createdAt": row[4]}
        return json_response({**self._tokens(user_id, refresh), "user": user})

    async def refresh(self, request: web.Request) -> web.Response:
        data = await self._json_body(request)
        token = str_field(data, "refreshToken", max_len=MAX_TOKEN)
        try:
            user_id, old_jti = self.auth.verify_refresh(token)
        except AuthError as exc:
            raise ApiError(401, str(exc)) from None
        refresh, jti, exp = self.auth.issue_refresh(user_id)
        if not await self.pool.run(storage.rotate_refresh_token, old_jti, user_id, jti, exp):
            raise ApiError(401, "refresh token already used or revoked")
        return json_response(self._tokens(user_id, refresh))

    # ------------------------------------------------------------------------------ sessions

    async def create_session(self, request: web.Request) -> web.Response:
        user_id = self._user(request)
        data = await self._json_body(request)
        sid = session_id_field(data)
        state = object_field(data, "state", required=False)
        created = await self.pool.run(storage.create_session, user_id, sid, orjson.dumps(state))
        if created is None:
            raise ApiError(409, "session already exists", sessionId=sid)
        return json_response(
            {
                "sessionId": sid,
                "state": state,
                "version": 1,
                "activeDeviceId": None,
                "createdAt": created,
                "updatedAt": created,
            },
            201,
        )

    async def get_session(self, request: web.Request) -> web.Response:
        user_id, sid = self._caller(request)
        row = self._found(await self.pool.run(storage.get_session, user_id, sid))
        return json_response(
            {
                "sessionId": sid,
                "state": orjson.Fragment(row[0]),
                "version": row[1],
                "activeDeviceId": row[2],
                "updatedAt": row[3],
            }
        )

    async def put_session(self, request: web.Request) -> web.Response:
        user_id, sid = self._caller(request)
        data = await self._json_body(request)
        state = object_field(data, "state", required=True)
        version, updated = self._found(
            await self.pool.run(storage.replace_state, user_id, sid, orjson.dumps(state))
        )
        return json_response({"sessionId": sid, "version": version, "updatedAt": updated})

    async def snapshot(self, request: web.Request) -> web.Response:
        user_id, sid = self._caller(request)
        data = await self._json_body(request)
        state = object_field(data, "state", required=True)
        metadata = object_field(data, "metadata", required=False)
        snapshot_id, version, created = self._found(
            await self.pool.run(
                storage.create_snapshot, user_id, sid, orjson.dumps(state), orjson.dumps(metadata)
            )
        )
        return json_response(
            {"snapshotId": snapshot_id, "sessionId": sid, "version": version, "createdAt": created},
            201,
        )

    async def devices(self, request: web.Request) -> web.Response:
        user_id, sid = self._caller(request)
        active, rows = self._found(await self.pool.run(storage.list_devices, user_id, sid))
        devices = []
        for device_id, last_seen in rows:
            connected, seen = self.ws.hub.device_status(user_id, device_id)
            if seen is not None:
                last_seen = max(last_seen, iso_ts(seen))
            devices.append({"deviceId": device_id, "connected": connected, "lastSeen": last_seen})
        return json_response({"sessionId": sid, "activeDeviceId": active, "devices": devices})

    async def handoff(self, request: web.Request) -> web.Response:
        user_id, sid = self._caller(request)
        data = await self._json_body(request)
        from_device = str_field(data, "fromDeviceId", max_len=MAX_DEVICE_ID)
        to_device = str_field(data, "toDeviceId", max_len=MAX_DEVICE_ID)
        str_field(data, "handoffToken", max_len=MAX_TOKEN)
        outcome, active = await self.pool.run(storage.handoff, user_id, sid, from_device, to_device)
        if outcome == "not_found":
            raise ApiError(404, "session not found")
        if outcome == "conflict":
            raise ApiError(
                409, "fromDeviceId is not the session's active device", activeDeviceId=active
            )
        return json_response({"sessionId": sid, "activeDeviceId": active})

    # ------------------------------------------------------------------------- ops endpoints

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "status": "ok",
                "release": self.release,
                "uptimeSeconds": round(time.time() - self.started, 3),
            }
        )

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(2.0):
                await self.pool.check()
        except (StorageError, TimeoutError) as exc:
            return json_response(
                {"status": "unavailable", "error": str(exc) or "storage timeout"}, 503
            )
        return json_response({"status": "ready", "release": self.release})

    async def metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type=_JSON)

    def _check_admin(self, request: web.Request) -> None:
        expected = self.config.admin_token
        if not expected:
            raise ApiError(
                403,
                "admin API disabled: start with SYNCBRIDGE_ADMIN_TOKEN or --admin-token-file",
            )
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), expected.encode()
        ):
            raise ApiError(401, "invalid admin token")

    async def get_faults(self, request: web.Request) -> web.Response:
        self._check_admin(request)
        return json_response({"faults": self.faults.current.to_dict()})

    async def put_faults(self, request: web.Request) -> web.Response:
        self._check_admin(request)
        data = await self._json_body(request)
        try:
            faults = parse_faults(data)
        except FaultError as exc:
            raise ApiError(400, str(exc)) from None
        self.faults.apply(faults)
        return json_response({"faults": faults.to_dict()})

    async def get_release(self, request: web.Request) -> web.Response:
        self._check_admin(request)
        history, rolled_back = await self.pool.run(storage.release_history, exempt=True)
        return json_response(
            {"release": self.release, "history": history, "rolledBack": rolled_back}
        )

    async def rollback(self, request: web.Request) -> web.Response:
        """Restore the previous release: its id (healthz, build info) and its fault set."""
        self._check_admin(request)
        result = await self.pool.run(storage.rollback_release, exempt=True)
        if result is None:
            raise ApiError(409, "no previous release to restore")
        restored, rolled_back = result
        faults = parse_faults(restored["faults"])
        self.faults.apply(faults)
        self.metrics.set_release(self.release, restored["release"])
        self.log.warning(
            "rolled back", release=restored["release"], rolled_back=rolled_back["release"]
        )
        self.release = restored["release"]
        return json_response(
            {
                "release": restored["release"],
                "rolledBackFrom": rolled_back["release"],
                "faults": faults.to_dict(),
            }
        )


# ------------------------------------------------------------------------------------ server


def _json_protocol_errors(server: Server, service: Service) -> None:
    """Make aiohttp's own protocol-level errors (malformed HTTP, bad headers) JSON 4xx like
    every other error, logged as a warning and counted in the request metrics."""

    class _Handler(RequestHandler):
        def handle_error(self, request, status=500, exc=None, message=None):
            if request.writer.output_size > 0 or status >= 500:
                return super().handle_error(request, status, exc, message)
            reason = (message or (str(exc) if exc else "") or "bad request").splitlines()[0]
            service.log.warning("bad HTTP request", status=status, error=reason[:200])
            service.metrics.observe_request("unmatched", "INVALID", status, None)
            resp = json_response({"error": f"bad HTTP request: {reason[:200]}"}, status)
            resp.force_close()
            return resp

    class _Server(Server):
        def __call__(self) -> RequestHandler:
            return _Handler(self, loop=self._loop, **self._kwargs)

    if type(server) is Server:
        server.__class__ = _Server


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(f"{port}\n")
    os.replace(tmp, path)


async def run_server(config: Config) -> int:
    prometheus_client.disable_created_metrics()  # process-wide: only in the service process
    log = JsonLog.open(config.log_file, config.log_level)
    bridge_stdlib_logging(log)
    service = Service(config, log)
    try:
        sock = _bind(config.host, config.port, config.backlog)
        await service.startup()
    except Exception as exc:
        log.error("start-up failed", error=f"{type(exc).__name__}: {exc}")
        log.close()
        service.close()
        print(f"syncbridge: start-up failed: {exc}", file=sys.stderr)
        return 1
    runner = web.AppRunner(
        service.make_app(),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.shutdown_timeout,
        keepalive_timeout=75,
        read_bufsize=64 * 1024,  # per-connection read buffering bound (10k sockets)
    )
    await runner.setup()
    _json_protocol_errors(runner.server, service)
    site = web.SockSite(runner, sock, backlog=config.backlog)
    await site.start()
    port = sock.getsockname()[1]
    host = config.host if ":" not in config.host else f"[{config.host}]"
    listening = {
        "host": config.host,
        "port": port,
        "url": f"http://{host}:{port}",
        "release": config.release,
        "pid": os.getpid(),
        "faults": config.faults.to_dict(),
    }
    log.info("listening", **listening)
    log.flush()
    if not log.to_stdout:
        print(orjson.dumps({"ts": iso_ts(), "msg": "listening", **listening}).decode(), flush=True)
    if config.port_file:
        _write_port_file(config.port_file, port)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def _on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig)
    gc.collect()
    gc.freeze()  # start-up objects never become garbage: keep them out of GC passes
    await stop.wait()

    log.info("shutting down", signal=received[0] if received else None)
    log.flush()
    await runner.cleanup()
    service.close()
    log.info("stopped")
    log.close()
    return 0
