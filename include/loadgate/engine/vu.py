"""The virtual-user context a scenario function receives.

A scenario is a plain ``async def scenario(vu: VU) -> None``: one iteration. What it may use:

- ``vu.http.get/post/put/patch/delete(path, json=..., name="/route/{template}", expected=...)``
  records latency and status under ``"METHOD name"`` and returns the response; a transport error
  returns a :class:`FailedResponse` (``status`` 0, ``error`` the kind) instead of raising.
  A response is *failed* when its status is not in ``expected`` (default: 200–399). A response
  keeps at most the stage's ``max_body_bytes`` of its body (1 MiB by default,
  :data:`loadgate.engine.http.MAX_BODY_BYTES`): the rest is read, timed and discarded, and
  ``resp.truncated`` is true (``resp.size`` is the whole body's length).
- ``vu.ws.connect(path)`` opens a WebSocket whose messages, errors and closes are recorded.
- ``await vu.sleep(s)`` sleeps ``s`` seconds (``interruptible=True`` returns early, with False,
  when the VU is asked to stop: for loops that hold a connection).
- ``vu.check(name, ok)`` counts a passed or failed check.
- ``vu.every(s, fn)`` calls ``fn()`` every ``s`` seconds until the iteration ends (one loop
  timer for the whole stage, see :mod:`loadgate.engine.schedule`), and ``await vu.hold()``
  waits until the VU is asked to stop or one of its WebSockets closes: with ``on_message``,
  the shape for a scenario that holds a connection and works from callbacks, with no task
  waking up for each send.
- ``vu.user`` (the seeded user, a dict; tokens never leave the process), ``vu.id`` (global VU
  index across shards), ``vu.iteration`` (0-based), ``vu.rng`` (seeded per VU and run; the
  methods of :class:`random.Random`, see :class:`VURandom`),
  ``vu.options`` (the scenario's plan options), ``vu.data`` (state kept across iterations),
  ``vu.stopping`` (a graceful stop was asked), ``vu.unique(prefix)`` (an id unique per run,
  shard, VU and iteration), ``vu.time_scale`` and ``vu.scale`` (the run's ``--time-scale`` and
  ``--scale``, for a scenario that wants to know them).

Pacing is the plan's: ``--time-scale`` compresses the stage's schedule (ramps, holds, durations,
start times, graceful stops: :mod:`loadgate.plan.profile`) and never a user's sleeps or
intervals, so each VU sends at the rate the plan says whatever the time scale, and the offered
load follows the number of VUs.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from random import Random
from typing import TYPE_CHECKING, Any

import orjson

from loadgate.engine.http import MAX_BODY_BYTES, HttpConnection, HttpError, Response
from loadgate.engine.schedule import Periodic, Scheduler
from loadgate.engine.window import Recorder
from loadgate.engine.ws import WebSocket, WsError

_perf = time.perf_counter
_NO_JSON: Any = object()

# ids the engine creates carry the run id; keep to characters any API accepts in an id
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9.-]+")


_M64 = (1 << 64) - 1


if TYPE_CHECKING:  # to a type checker it is a Random: it has the same methods, below
    _RandomAPI = Random
else:
    _RandomAPI = object


class VURandom(_RandomAPI):
    """A VU's random stream: :class:`random.Random`'s methods over SplitMix64 (64 bits of
    state). A ``random.Random`` carries the Mersenne Twister's 2.5 KB of state, 27 MB for
    10,000 VUs (a fifth of the engine's memory at that load); this costs about 100 bytes."""

    __slots__ = ("_state", "gauss_next")

    def __init__(self, seed: str) -> None:
        self._state = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
        self.gauss_next: float | None = None

    def _next(self) -> int:
        s = self._state = (self._state + 0x9E3779B97F4A7C15) & _M64
        s = ((s ^ (s >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        s = ((s ^ (s >> 27)) * 0x94D049BB133111EB) & _M64
        return s ^ (s >> 31)

    def random(self) -> float:
        """A float in [0, 1) with 53 random bits."""
        return (self._next() >> 11) * (1.0 / 9007199254740992.0)

    def getrandbits(self, k: int) -> int:
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        bits, value = 0, 0
        while bits < k:
            value = (value << 64) | self._next()
            bits += 64
        return value >> (bits - k)

    # the rest of the API is random.Random's own Python code, over random() and getrandbits()
    _randbelow = Random._randbelow_with_getrandbits  # type: ignore[attr-defined]  # private, not in typeshed
    uniform = Random.uniform
    randrange = Random.randrange
    randint = Random.randint
    choice = Random.choice
    choices = Random.choices
    shuffle = Random.shuffle
    sample = Random.sample
    randbytes = Random.randbytes
    triangular = Random.triangular
    normalvariate = Random.normalvariate
    gauss = Random.gauss
    lognormvariate = Random.lognormvariate
    expovariate = Random.expovariate
    paretovariate = Random.paretovariate
    weibullvariate = Random.weibullvariate


class FailedResponse:
    """What a request that got no HTTP response returns (``status`` 0)."""

    __slots__ = ("duration_s", "error", "message")
    status = 0
    body = b""
    size = 0
    truncated = False
    headers: list[tuple[bytes, bytes]] = []  # noqa: RUF012 - immutable by convention
    connect_s = 0.0

    def __init__(self, error: str, message: str, duration_s: float) -> None:
        self.error = error
        self.message = message
        self.duration_s = duration_s

    def json(self) -> Any:
        raise ValueError(f"no response ({self.error}: {self.message})")

    def header(self, name: str, default: str | None = None) -> str | None:
        return default

    def __repr__(self) -> str:
        return f"<FailedResponse {self.error}: {self.message}>"


class StageRuntime:
    """What all VUs of a stage share: the target, the recorder, the run's identity."""

    def __init__(
        self,
        *,
        base_url: str,
        recorder: Recorder,
        time_scale: float,
        run_id: str,
        scale: float = 1.0,
        shard_index: int,
        users: list[dict[str, Any]],
        ssl_context: Any = None,
        request_timeout: float = 60.0,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_base = "ws" + self.base_url[4:] if self.base_url.startswith("http") else base_url
        self.recorder = recorder
        self.time_scale = time_scale
        self.scale = scale
        self.run_id = run_id
        self.shard_index = shard_index
        self.users = users
        self.ssl_context = ssl_context
        self.request_timeout = request_timeout
        self.max_body_bytes = max_body_bytes  # what a response keeps of its body in memory
        self._scheduler: Scheduler | None = None

    @property
    def scheduler(self) -> Scheduler:
        """The stage's periodic callbacks (created on first use, on the running loop)."""
        if self._scheduler is None:
            self._scheduler = Scheduler(asyncio.get_running_loop(), self._periodic_failed)
        return self._scheduler

    def _periodic_failed(self, exc: BaseException, scenario: object) -> None:
        self.recorder.iteration_error(str(scenario))

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()


class VUHttp:
    """The VU's own keep-alive HTTP connection, recording every request."""

    __slots__ = ("_conn", "_vu")

    def __init__(self, vu: VU) -> None:
        self._vu = vu
        self._conn: HttpConnection | None = None

    def _connection(self) -> HttpConnection:
        conn = self._conn
        if conn is None:
            rt = self._vu._rt
            conn = self._conn = HttpConnection(
                rt.base_url, ssl_context=rt.ssl_context, max_body=rt.max_body_bytes
            )
        return conn

    def set_header(self, name: str, value: str | None) -> None:
        """A header sent with every later request of this VU (None removes it)."""
        self._connection().set_header(name, value)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = _NO_JSON,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        expected: Collection[int] | None = None,
        timeout: float | None = None,
    ) -> Response | FailedResponse:
        vu = self._vu
        rt = vu._rt
        conn = self._connection()
        kwargs: dict[str, Any] = {"body": body, "headers": headers}
        if json is not _NO_JSON:
            kwargs["json"] = json
        started = _perf()
        try:
            resp = await conn.request(method, path, timeout=timeout or rt.request_timeout, **kwargs)
        except asyncio.CancelledError:
            # stopped in flight (hard stop, or a graceful stop's grace ran out): sent, never
            # answered; counted so that the offered rate includes it
            rt.recorder.http_cancelled(vu.scenario)
            raise
        except HttpError as exc:
            elapsed = _perf() - started
            rt.recorder.http(vu.scenario, method, name or path, 0, None, True, exc.kind)
            return FailedResponse(exc.kind, str(exc), elapsed)
        status = resp.status
        failed = not 200 <= status < 400 if expected is None else status not in expected
        rt.recorder.http(vu.scenario, method, name or path, status, resp.duration_s, failed)
        return resp

    # get() and the like hand back request()'s own coroutine: one coroutine per request, not two
    def get(self, path: str, **kw: Any) -> Coroutine[Any, Any, Response | FailedResponse]:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Coroutine[Any, Any, Response | FailedResponse]:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Coroutine[Any, Any, Response | FailedResponse]:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Coroutine[Any, Any, Response | FailedResponse]:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Coroutine[Any, Any, Response | FailedResponse]:
        return self.request("DELETE", path, **kw)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class VUWebSocket:
    """A recorded WebSocket: JSON in and out, counted; unexpected closes and error replies are
    WebSocket errors. Set ``on_message`` to handle decoded messages as they come (callback
    mode, no task); without it, :meth:`receive` returns them in order."""

    __slots__ = ("_closing", "_queue", "_rt", "_scenario", "_vu", "_waiter", "on_message", "ws")

    def __init__(self, vu: VU) -> None:
        self._vu = vu
        self._rt = vu._rt
        self._scenario = vu.scenario
        self.ws: WebSocket | None = None
        self.on_message: Callable[[Any], None] | None = None
        self._queue: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closing = False

    def _message(self, raw: str | bytes) -> None:
        self._rt.recorder.ws_message_in(self._scenario)
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            msg = raw
        handler = self.on_message
        if handler is not None:
            handler(msg)
            return
        self._queue.append(msg)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _closed(self, code: int | None) -> None:
        self._rt.recorder.ws_closed(self._scenario, unexpected=not self._closing)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._vu._release_hold()

    @property
    def closed(self) -> bool:
        return self.ws is None or self.ws.closed

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code if self.ws is not None else None

    def send_json(self, obj: Any) -> bool:
        """Send a message now (False, and a send error recorded, when the socket is closed)."""
        ws = self.ws
        if ws is None:
            return False
        try:
            ws.send_text(orjson.dumps(obj))
        except WsError:
            self._rt.recorder.ws_send_error(self._scenario)
            return False
        self._rt.recorder.ws_message_out(self._scenario)
        return True

    async def receive(self, timeout: float) -> Any:
        """The next message (None on timeout or when the connection ended)."""
        if self._queue:
            return self._queue.popleft()
        if self.closed:
            return None
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            return None
        finally:
            self._waiter = None
        return self._queue.popleft() if self._queue else None

    def latency(self, name: str, seconds: float) -> None:
        """Record a round trip (e.g. ``heartbeat``) in seconds."""
        self._rt.recorder.ws_latency(self._scenario, name, seconds)

    def error_reply(self) -> None:
        """Count a reply that reports an error (``{type: "error"}``) as a WebSocket error."""
        self._rt.recorder.ws_error_reply(self._scenario)

    async def close(self, code: int = 1000) -> None:
        """Close on purpose (not an error)."""
        self._closing = True
        if self.ws is not None and not self.ws.closed:
            await self.ws.close(code, timeout=2.0)

    def abort(self) -> None:
        """Drop the connection at once (hard stop); counted as a close on purpose."""
        self._closing = True
        if self.ws is not None and not self.ws.closed:
            self.ws.abort()


class VUWs:
    __slots__ = ("_vu", "sockets")

    def __init__(self, vu: VU) -> None:
        self._vu = vu
        self.sockets: list[VUWebSocket] = []

    async def connect(
        self,
        path: str = "/ws",
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> VUWebSocket | None:
        """Open a WebSocket to the target (None, and a failed connect recorded, on failure)."""
        vu = self._vu
        rt = vu._rt
        wrapper = VUWebSocket(vu)
        url = rt.ws_base + (path if path.startswith("/") else "/" + path)
        try:
            ws = await WebSocket.connect(
                url,
                headers=headers,
                timeout=timeout,
                ssl_context=rt.ssl_context,
                on_message=wrapper._message,
                on_close=wrapper._closed,
            )
        except WsError:
            rt.recorder.ws_connect_failed(vu.scenario)
            return None
        wrapper.ws = ws
        rt.recorder.ws_connected(vu.scenario, ws.connect_s)
        self.sockets = [s for s in self.sockets if not s.closed]
        self.sockets.append(wrapper)
        return wrapper

    def abort_all(self) -> None:
        for sock in self.sockets:
            sock.abort()
        self.sockets.clear()


class VU:
    __slots__ = (
        "_holding",
        "_periodic",
        "_rt",
        "_stopping",
        "_waiter",
        "data",
        "http",
        "id",
        "iteration",
        "local_id",
        "options",
        "rng",
        "scenario",
        "user",
        "ws",
    )

    def __init__(
        self,
        rt: StageRuntime,
        *,
        scenario: str,
        vu_id: int,
        local_id: int,
        options: Mapping[str, Any],
    ) -> None:
        self._rt = rt
        self.scenario = scenario
        self.id = vu_id
        self.local_id = local_id
        self.options = options
        self.iteration = 0
        self.rng = VURandom(f"{rt.run_id}/{scenario}/{vu_id}")
        self.user: dict[str, Any] | None = (
            dict(rt.users[vu_id % len(rt.users)]) if rt.users else None
        )
        self.data: dict[str, Any] = {}
        self.http = VUHttp(self)
        self.ws = VUWs(self)
        self._stopping = False
        self._waiter: asyncio.Future[None] | None = None
        self._holding = False
        self._periodic: list[Periodic] | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def time_scale(self) -> float:
        """The run's ``--time-scale`` (it shortens the schedule; nothing here multiplies a sleep
        or an interval by it)."""
        return self._rt.time_scale

    @property
    def scale(self) -> float:
        """The run's ``--scale`` (for scenario options that are amounts of load)."""
        return self._rt.scale

    @property
    def run_id(self) -> str:
        return self._rt.run_id

    def unique(self, prefix: str) -> str:
        """An id no other VU, iteration, shard or run uses (``ss-<run>-<shard>-<vu>-<iter>``)."""
        run = _UNSAFE_ID.sub("-", self._rt.run_id)
        return f"{prefix}-{run}-{self._rt.shard_index}-{self.id}-{self.iteration}"

    def sleep(self, seconds: float, *, interruptible: bool = False) -> Awaitable[bool]:
        """Sleep ``seconds`` (await it; the plan's pacing, whatever the time scale); True unless
        interrupted by a stop request.

        A plain sleep is ``asyncio.sleep``'s own coroutine: no frame of ours stays with each of
        10,000 sleeping VUs."""
        if not interruptible:
            return asyncio.sleep(seconds if seconds > 0 else 0, True)
        return self._sleep_interruptible(seconds)

    async def _sleep_interruptible(self, delay: float) -> bool:
        if self._stopping:
            return False
        loop = asyncio.get_running_loop()
        self._waiter = fut = loop.create_future()
        handle = loop.call_later(max(delay, 0.0), _wake, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._waiter = None
        return not self._stopping

    def every(
        self, seconds: float, callback: Callable[[], None], *, first: float | None = None
    ) -> Periodic:
        """Call ``callback()`` every ``seconds`` (the first time after ``first`` seconds,
        default one interval) until cancelled or the iteration ends; the plan's pacing, whatever
        the time scale. A callback that raises is counted as an iteration error and not called
        again."""
        entry = self._rt.scheduler.every(seconds, callback, first, self.scenario)
        periodic = self._periodic
        if periodic is None:
            self._periodic = [entry]
        else:
            periodic.append(entry)
        return entry

    async def hold(self) -> None:
        """Wait until the VU is asked to stop or one of its WebSockets closes."""
        if self._stopping or any(sock.closed for sock in self.ws.sockets):
            return
        self._waiter = fut = asyncio.get_running_loop().create_future()
        self._holding = True
        try:
            await fut
        finally:
            self._waiter = None
            self._holding = False

    def _release_hold(self) -> None:
        waiter = self._waiter
        if self._holding and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def check(self, name: str, ok: bool) -> bool:
        self._rt.recorder.check(self.scenario, name, bool(ok))
        return bool(ok)

    def request_stop(self) -> None:
        """Graceful stop: the VU ends after its iteration; interruptible sleeps end now."""
        self._stopping = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end_iteration(self) -> None:
        """Cancel the callbacks of :meth:`every` and forget closed sockets (a closed socket
        of an earlier iteration must not end a later :meth:`hold` at once)."""
        periodic = self._periodic
        if periodic is not None:
            for entry in periodic:
                entry.cancel()
            self._periodic = None
        sockets = self.ws.sockets
        if sockets and any(sock.closed for sock in sockets):
            self.ws.sockets = [sock for sock in sockets if not sock.closed]

    def close(self) -> None:
        """Drop the VU's connections and periodic callbacks (at its end, or when cancelled)."""
        self.end_iteration()
        self.http.close()
        self.ws.abort_all()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
