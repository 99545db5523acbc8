"""The seed's SyncBridge scenarios (§3), as VU functions.

Each VU acts as its seeded user (``--users``; VU ``g`` is user ``g mod len(users)``): it takes
the file's tokens, or logs in before its first request, refreshes its access token shortly
before it expires, and on a 401 refreshes (or logs in again) and retries once. Those extra
requests are real requests and are recorded like any other. Requests are named by route
template; checks carry the seed's names.

Options (plan ``options``, all with the seed's values as defaults):

- ``api_mix``: ``mix`` {login, get_session, snapshot, devices, refresh} independent
  probabilities per iteration (0.2, 0.4, 0.15, 0.15, 0.1), ``think_time`` [0, 3] s.
- ``websocket``: ``path`` "/ws", ``heartbeat_interval`` 30 s, ``state_update_interval`` 5 s,
  ``state_update_connections`` 1000 (global connections 0…999 send updates; ×``--scale``),
  ``auth_timeout`` 10 s.
- ``session_state``: ``updates`` 10, ``update_interval`` 0.5 s, ``think_time`` [0, 2] s.
- ``handoff``: ``think_time`` [0, 3] s.

Sleeps and intervals are the plan's pacing, in real seconds: ``--time-scale`` shortens the
stage's schedule (ramps, holds, durations) and never a think time, a heartbeat or an update
interval (see :mod:`loadgate.engine.vu`), so each VU offers the load the seed describes. The
request-response scenarios declare that pacing (``@scenario(pacing=...)``: expected requests
and idle seconds per iteration, the idle seconds between an iteration's requests, and the
think time's standard deviation) for the summary's planned request rate; ``websocket`` holds a
connection and declares none (its sends are messages on timers, not requests).
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Mapping
from typing import Any

import orjson

from loadgate.engine.durations import parse_duration
from loadgate.engine.shard import scale_count
from loadgate.engine.vu import VU
from loadgate.scenarios import scenario

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
SESSIONS = "/api/v1/sessions"
SESSION = "/api/v1/sessions/{id}"
SNAPSHOT = "/api/v1/sessions/{id}/snapshot"
DEVICES = "/api/v1/sessions/{id}/devices"
HANDOFF = "/api/v1/sessions/{id}/handoff"
REFRESH_BEFORE_EXPIRY_S = 60.0
SLOW_MS = 500.0


def _now_ms() -> float:
    return time.time() * 1000.0


def _token_expiry(token: str) -> float | None:
    """The ``exp`` of a JWT (not verified: only to refresh in time), or None."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None
    except (IndexError, ValueError, AttributeError):
        return None


def _set_tokens(vu: VU, access: str, refresh: str | None, *, from_file: bool = False) -> None:
    vu.data["access"] = access
    vu.data["access_exp"] = _token_expiry(access)
    if refresh:
        vu.data["refresh"] = refresh
        vu.data["refresh_from_file"] = from_file
    vu.http.set_header("Authorization", f"Bearer {access}")


def _body(resp: Any) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _take_tokens(vu: VU, resp: Any) -> None:
    """Keep the tokens of a successful login or refresh."""
    if resp.status == 200:
        body = _body(resp)
        if isinstance(body.get("accessToken"), str):
            _set_tokens(vu, body["accessToken"], body.get("refreshToken"))


async def login(vu: VU) -> Any:
    user = vu.user or {}
    resp = await vu.http.post(
        LOGIN, json={"email": user.get("email"), "password": user.get("password")}, name=LOGIN
    )
    _take_tokens(vu, resp)
    return resp


async def refresh(vu: VU) -> Any:
    """Refresh the VU's tokens. The service rotates refresh tokens (one use each), so the users
    file's token may already be spent by an earlier execution of this test (a stage's re-run, a
    rerun from the UI, an earlier stage): its 401 is expected, not the release's failure, and
    the VU logs in and refreshes with a token of its own, whose answer counts as usual."""
    from_file = bool(vu.data.get("refresh_from_file"))
    resp = await vu.http.post(
        REFRESH,
        json={"refreshToken": vu.data.get("refresh", "")},
        name=REFRESH,
        expected=(200, 401) if from_file else None,
    )
    _take_tokens(vu, resp)
    if from_file and resp.status == 401:
        vu.data["refresh_from_file"] = False
        if (await login(vu)).status == 200:
            return await refresh(vu)
    return resp


async def ensure_auth(vu: VU) -> bool:
    """Tokens from the users file, else a login; a refresh when the access token nears expiry."""
    if "access" not in vu.data:
        user = vu.user or {}
        if vu.options.get("use_file_tokens", True) and isinstance(user.get("accessToken"), str):
            _set_tokens(vu, user["accessToken"], user.get("refreshToken"), from_file=True)
        else:
            await login(vu)
            return "access" in vu.data
    exp = vu.data.get("access_exp")
    if exp is not None and exp - time.time() < REFRESH_BEFORE_EXPIRY_S:
        resp = await refresh(vu)
        if resp.status != 200:
            await login(vu)
    return "access" in vu.data


async def authed(vu: VU, method: str, path: str, *, name: str, **kw: Any) -> Any:
    """A request as the VU's user; on 401: refresh (or log in again) and retry once."""
    await ensure_auth(vu)
    resp = await vu.http.request(method, path, name=name, **kw)
    if resp.status == 401:
        if (await refresh(vu)).status != 200:
            await login(vu)
        resp = await vu.http.request(method, path, name=name, **kw)
    return resp


def _seconds(vu: VU, key: str, default: float) -> float:
    """An option that is a duration ("30s", "10ms" or seconds)."""
    return parse_duration(vu.options.get(key, default))


def _think(vu: VU, default: tuple[float, float]) -> float:
    low, high = vu.options.get("think_time", default)
    return vu.rng.uniform(parse_duration(low), parse_duration(high))


def _mean_think(options: Mapping[str, Any], default: tuple[float, float]) -> float:
    low, high = options.get("think_time", default)
    return (parse_duration(low) + parse_duration(high)) / 2.0


def _think_sd(options: Mapping[str, Any], default: tuple[float, float]) -> float:
    """The standard deviation of a think time uniform in [low, high]."""
    low, high = options.get("think_time", default)
    return abs(parse_duration(high) - parse_duration(low)) / math.sqrt(12.0)


def _checks(vu: VU, label: str, resp: Any, status: int, slow_check: bool = True) -> None:
    vu.check(f"{label} status is {status}", resp.status == status)
    if slow_check:
        vu.check(
            f"{label} response time < 500ms",
            resp.status != 0 and resp.duration_s * 1000.0 < SLOW_MS,
        )


# --- §3.1 API load test ---------------------------------------------------------------------

DEFAULT_MIX = {"login": 0.2, "get_session": 0.4, "snapshot": 0.15, "devices": 0.15, "refresh": 0.1}


def _api_mix_pacing(options: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """Each request drawn with its probability: their sum per iteration, then the think time
    (its mean, all of it after the requests, and its standard deviation). (The users file's
    tokens spare a first login; a refresh before expiry, once per token lifetime, and a 401's
    retry are too rare to count.)"""
    mix = {**DEFAULT_MIX, **options.get("mix", {})}
    think = (0.0, 3.0)
    requests = sum(float(mix[k]) for k in DEFAULT_MIX)
    return requests, _mean_think(options, think), 0.0, _think_sd(options, think)


@scenario(needs_user=True, pacing=_api_mix_pacing)
async def api_mix(vu: VU) -> None:
    """One iteration of the seed's API test: each request drawn independently, then think."""
    mix = {**DEFAULT_MIX, **vu.options.get("mix", {})}
    rng = vu.rng
    user = vu.user or {}
    sid = user["sessionId"]
    await ensure_auth(vu)
    if rng.random() < mix["login"]:
        _checks(vu, "login", await login(vu), 200)
    if rng.random() < mix["get_session"]:
        resp = await authed(vu, "GET", f"{SESSIONS}/{sid}", name=SESSION)
        _checks(vu, "session", resp, 200)
    if rng.random() < mix["snapshot"]:
        resp = await authed(
            vu,
            "POST",
            f"{SESSIONS}/{sid}/snapshot",
            name=SNAPSHOT,
            json={
                "state": {"timestamp": int(_now_ms()), "data": f"test-data-{vu.id}"},
                "metadata": {"label": "load-test-snapshot", "deviceId": f"device-{vu.id}"},
            },
        )
        _checks(vu, "snapshot", resp, 201)
    if rng.random() < mix["devices"]:
        resp = await authed(vu, "GET", f"{SESSIONS}/{sid}/devices", name=DEVICES)
        _checks(vu, "devices", resp, 200)
    if rng.random() < mix["refresh"]:
        _checks(vu, "refresh", await refresh(vu), 200)
    await vu.sleep(_think(vu, (0.0, 3.0)))


# --- §3.2 WebSocket load test ---------------------------------------------------------------


@scenario(needs_user=True)
async def websocket(vu: VU) -> None:
    """Hold one authenticated connection until asked to stop: a heartbeat every 30 s (round
    trip from the echoed timestamp, taken just before the frame is written), and for the first
    1,000 connections a state update every 5 s on the user's session, versions from the acks.

    Written in callback mode: replies are handled by ``on_message`` and the sends run from
    ``vu.every`` (one loop timer for all connections of the stage) while the VU's task only
    waits in ``vu.hold()``; nothing wakes up per connection between messages, which is what
    keeps 10,000 held connections cheap."""
    opts = vu.options
    user = vu.user or {}
    sid = user["sessionId"]
    device = f"device-{vu.id}"
    # the first 1,000 of 10,000 connections: an amount of load, scaled like the connections
    updater = vu.id < scale_count(int(opts.get("state_update_connections", 1000)), vu.scale)
    if not await ensure_auth(vu):
        return
    version: int | None = None
    if updater:
        resp = await authed(vu, "GET", f"{SESSIONS}/{sid}", name=SESSION)
        version = _body(resp).get("version") if resp.status == 200 else None
    ws = await vu.ws.connect(opts.get("path", "/ws"))
    if ws is None:
        return
    ws.send_json({"type": "auth", "token": vu.data["access"], "deviceId": device, "sessionId": sid})
    reply = await ws.receive(timeout=_seconds(vu, "auth_timeout", 10.0))
    authed_ok = isinstance(reply, dict) and reply.get("type") == "auth_ok"
    vu.check("ws auth ok", authed_ok)
    if not authed_ok:
        if isinstance(reply, dict) and reply.get("type") == "error":
            ws.error_reply()
        await ws.close()
        return
    update_sent_at: float | None = None

    def on_message(msg: Any) -> None:
        nonlocal version, update_sent_at
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "heartbeat_ack":
            stamp = msg.get("timestamp")
            if isinstance(stamp, int | float):
                ws.latency("heartbeat", max(0.0, (_now_ms() - stamp) / 1000.0))
        elif kind == "state_ack" and msg.get("sessionId") == sid:
            if isinstance(msg.get("version"), int):
                version = msg["version"]
            if update_sent_at is not None:
                ws.latency("state_ack", time.perf_counter() - update_sent_at)
                update_sent_at = None
        elif kind == "error":
            ws.error_reply()
            if msg.get("code") == "version_conflict" and isinstance(msg.get("currentVersion"), int):
                version = msg["currentVersion"]
            update_sent_at = None

    def heartbeat() -> None:
        if not ws.closed:
            ws.send_json({"type": "heartbeat", "timestamp": _now_ms()})

    def state_update() -> None:
        nonlocal update_sent_at
        if ws.closed or version is None:
            return
        update_sent_at = time.perf_counter()
        ws.send_json(
            {
                "type": "state_update",
                "sessionId": sid,
                "delta": {
                    "operations": [
                        {
                            "op": "add",
                            "path": "/lastUpdate",
                            "value": {"data": "test", "at": int(_now_ms())},
                        }
                    ],
                    "version": version,
                },
            }
        )

    ws.on_message = on_message
    # the first send at a random point of its first interval (seeded per VU): the steady state
    # of connections opened at any time. A compressed ramp opens them all within a second, and
    # with a first send one whole interval later every heartbeat of the stage would fire in the
    # same instant, and a hold shorter than the interval would send none at all.
    beat = _seconds(vu, "heartbeat_interval", 30.0)
    vu.every(beat, heartbeat, first=vu.rng.uniform(0.0, beat))
    if updater:
        every = _seconds(vu, "state_update_interval", 5.0)
        vu.every(every, state_update, first=vu.rng.uniform(0.0, every))
    try:
        await vu.hold()
    finally:
        await ws.close()


# --- §3.3 session state and handoff ---------------------------------------------------------


def _session_state_pacing(options: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """A create, ``updates`` updates and a snapshot; the update intervals (between the first
    request and the snapshot, fixed) and the think time after the snapshot."""
    updates = int(options.get("updates", 10))
    between = updates * parse_duration(options.get("update_interval", 0.5))
    think = (0.0, 2.0)
    idle = between + _mean_think(options, think)
    return updates + 2.0, idle, between, _think_sd(options, think)


@scenario(needs_user=True, pacing=_session_state_pacing)
async def session_state(vu: VU) -> None:
    """Create a session of its own, update it 10 times 0.5 s apart, snapshot it, think."""
    opts = vu.options
    sid = vu.unique("ss")
    resp = await authed(
        vu,
        "POST",
        SESSIONS,
        name=SESSIONS,
        json={"sessionId": sid, "state": {"data": f"initial-state-{vu.id}"}},
    )
    vu.check("create session status is 201", resp.status == 201)
    for i in range(int(opts.get("updates", 10))):
        resp = await authed(
            vu,
            "PUT",
            f"{SESSIONS}/{sid}",
            name=SESSION,
            json={"state": {"data": f"state-update-{i}", "timestamp": int(_now_ms())}},
        )
        vu.check("update session status is 200", resp.status == 200)
        await vu.sleep(_seconds(vu, "update_interval", 0.5))
    resp = await authed(
        vu,
        "POST",
        f"{SESSIONS}/{sid}/snapshot",
        name=SNAPSHOT,
        json={
            "state": {"data": "snapshot-state", "timestamp": int(_now_ms())},
            "metadata": {"label": f"load-test-snapshot-{vu.id}"},
        },
    )
    vu.check("create snapshot status is 201", resp.status == 201)
    await vu.sleep(_think(vu, (0.0, 2.0)))


def _handoff_pacing(options: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """One handoff (and once per VU a read of the session, not counted), then think."""
    think = (0.0, 3.0)
    return 1.0, _mean_think(options, think), 0.0, _think_sd(options, think)


@scenario(needs_user=True, pacing=_handoff_pacing)
async def handoff(vu: VU) -> None:
    """Hand the VU's own session over between its two devices, alternating, then think.

    The first iteration reads the session's active device, as a client would; a 409 (another
    device took over) is a failed request, and the next handoff starts from the device the
    service named."""
    user = vu.user or {}
    sid = user["sessionId"]
    one, two = f"device-{vu.id}-1", f"device-{vu.id}-2"
    if "active" not in vu.data:
        resp = await authed(vu, "GET", f"{SESSIONS}/{sid}", name=SESSION)
        vu.data["active"] = _body(resp).get("activeDeviceId") or one
    source = vu.data["active"]
    target = one if source == two else two
    resp = await authed(
        vu,
        "POST",
        f"{SESSIONS}/{sid}/handoff",
        name=HANDOFF,
        json={"fromDeviceId": source, "toDeviceId": target, "handoffToken": f"test-token-{vu.id}"},
    )
    _checks(vu, "handoff", resp, 200, slow_check=False)
    vu.check("handoff latency < 500ms", resp.status != 0 and resp.duration_s * 1000.0 < SLOW_MS)
    body = _body(resp)
    if resp.status in (200, 409) and isinstance(body.get("activeDeviceId"), str):
        vu.data["active"] = body["activeDeviceId"]
    await vu.sleep(_think(vu, (0.0, 3.0)))
