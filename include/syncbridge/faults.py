"""Fault injection: the service can be made to behave like a really bad release.

A fault set is parsed from JSON (``--faults`` at start, ``PUT /admin/faults`` live). Unknown
keys, wrong types and out-of-range values are rejected. ``{}`` clears every fault.

Each fault shows the way the real failure would:
- ``error_rate``: that fraction of API requests is answered 500/503 inside the request path,
  so it is counted as 5xx in ``syncbridge_http_requests_total``.
- ``latency_ms`` / ``latency_jitter_ms``: each API request waits latency ± jitter (uniform).
- ``tail_rate`` / ``tail_ms``: that fraction of API requests (each drawn independently) waits
  ``tail_ms`` more, on top of any latency: a slow tail (p99 up) with the median unchanged.
  ``tail_routes`` scopes it on its own (absent: ``routes``), so that one endpoint can be made
  slower than the others while all keep a base latency (``tail_rate`` 1: every request).
- ``ws_drop_rate``: on that fraction of inbound WebSocket messages the connection is aborted
  (no close frame; the client sees 1006), counted in ``syncbridge_websocket_dropped_total``.
- ``heartbeat_delay_ms``: heartbeat acks are sent that much later.
- ``memory_growth_mb_per_s``: memory is really allocated, touched and held, so the resident
  set grows; crossing the memory limit kills the process like a container's OOM killer.
- ``crash_after_s``: the process exits abruptly (code 70) that many seconds after the fault
  is set.
- ``storage_failure_rate``: that fraction of storage acquisitions fails like a lost
  connection (counted in ``syncbridge_db_connection_errors_total``; the request gets 503).
- ``routes``: route templates that the HTTP faults apply to (absent: every API route).
  Health, readiness, metrics, OpenAPI and admin routes are never faulted.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass, fields
from typing import Any

API_ROUTES: tuple[str, ...] = (
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/sessions",
    "/api/v1/sessions/{id}",
    "/api/v1/sessions/{id}/snapshot",
    "/api/v1/sessions/{id}/devices",
    "/api/v1/sessions/{id}/handoff",
)
_API_ROUTE_SET = frozenset(API_ROUTES)

# name -> (minimum, maximum)
_NUMERIC: dict[str, tuple[float, float]] = {
    "error_rate": (0.0, 1.0),
    "latency_ms": (0.0, 120_000.0),
    "latency_jitter_ms": (0.0, 120_000.0),
    "tail_rate": (0.0, 1.0),
    "tail_ms": (0.0, 120_000.0),
    "ws_drop_rate": (0.0, 1.0),
    "heartbeat_delay_ms": (0.0, 120_000.0),
    "memory_growth_mb_per_s": (0.0, 1024.0),
    "crash_after_s": (0.0, 7 * 86400.0),
    "storage_failure_rate": (0.0, 1.0),
}
FAULT_NAMES: tuple[str, ...] = tuple(_NUMERIC)
CRASH_EXIT_CODE = 70
OOM_EXIT_CODE = 137
MIB = 1024 * 1024
# Memory growth never holds more than this, whatever the limit: the machine is shared.
GROWTH_SAFETY_CEILING = 4 * 1024 * MIB


class FaultError(ValueError):
    """An invalid fault set."""


@dataclass(frozen=True, slots=True)
class Faults:
    error_rate: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    tail_rate: float = 0.0
    tail_ms: float = 0.0
    ws_drop_rate: float = 0.0
    heartbeat_delay_ms: float = 0.0
    memory_growth_mb_per_s: float = 0.0
    crash_after_s: float | None = None
    storage_failure_rate: float = 0.0
    routes: frozenset[str] | None = None
    tail_routes: frozenset[str] | None = None

    @property
    def http_active(self) -> bool:
        return (
            self.error_rate > 0
            or self.latency_ms > 0
            or self.latency_jitter_ms > 0
            or (self.tail_rate > 0 and self.tail_ms > 0)
        )

    def tail_applies_to(self, route: str) -> bool:
        if route not in _API_ROUTE_SET:
            return False
        scope = self.tail_routes if self.tail_routes is not None else self.routes
        return scope is None or route in scope

    def touches(self, route: str) -> bool:
        """Some HTTP fault applies to ``route``."""
        return self.applies_to(route) or (
            self.tail_rate > 0 and self.tail_ms > 0 and self.tail_applies_to(route)
        )

    def delay_ms(self, rng: Any, route: str | None = None) -> float:
        """How long one API request of ``route`` waits: latency ± jitter, plus ``tail_ms`` for a
        ``tail_rate`` fraction of requests (``rng``: ``random`` or a ``random.Random``;
        ``route`` None: as if every fault applied)."""
        delay = 0.0
        if (self.latency_ms or self.latency_jitter_ms) and (
            route is None or self.applies_to(route)
        ):
            jitter = self.latency_jitter_ms
            delay = self.latency_ms + rng.uniform(-jitter, jitter)
        if (
            self.tail_rate
            and self.tail_ms
            and (route is None or self.tail_applies_to(route))
            and rng.random() < self.tail_rate
        ):
            delay += self.tail_ms
        return delay

    def applies_to(self, route: str) -> bool:
        if route not in _API_ROUTE_SET:
            return False
        return self.routes is None or route in self.routes

    def active(self) -> dict[str, bool]:
        out = {}
        for name in FAULT_NAMES:
            value = getattr(self, name)
            out[name] = value is not None and (name == "crash_after_s" or value > 0)
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("routes", "tail_routes"):
                if value is not None:
                    out[f.name] = sorted(value)
            elif f.name == "crash_after_s":
                if value is not None:
                    out[f.name] = value
            elif value:
                out[f.name] = value
        return out


def parse_faults(obj: Any) -> Faults:
    """Validate a decoded JSON fault set; raise FaultError with a clear message."""
    if not isinstance(obj, dict):
        raise FaultError("faults must be a JSON object")
    unknown = sorted(set(obj) - set(_NUMERIC) - {"routes", "tail_routes"})
    if unknown:
        raise FaultError(
            f"unknown fault keys: {', '.join(unknown)}; "
            f"known: {', '.join(FAULT_NAMES)}, routes, tail_routes"
        )
    values: dict[str, Any] = {}
    for name, (lo, hi) in _NUMERIC.items():
        if name not in obj or obj[name] is None:
            continue
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FaultError(f"{name} must be a number")
        value = float(value)
        if math.isnan(value) or not lo <= value <= hi:
            raise FaultError(f"{name} must be between {lo:g} and {hi:g}")
        values[name] = value
    for key in ("routes", "tail_routes"):
        if obj.get(key) is None:
            continue
        routes = obj[key]
        if not isinstance(routes, list) or not all(isinstance(r, str) for r in routes):
            raise FaultError(f"{key} must be a list of route templates")
        bad = sorted(set(routes) - _API_ROUTE_SET)
        if bad:
            raise FaultError(
                f"unknown {key}: {', '.join(bad)}; API routes: {', '.join(API_ROUTES)}"
            )
        values[key] = frozenset(routes)
    return Faults(**values)


class FaultController:
    """Holds the current fault set and runs the faults that act on their own."""

    def __init__(self, log, metrics, memory_limit_bytes: int):
        self.current = Faults()
        self._log = log
        self._metrics = metrics
        self._memory_limit = memory_limit_bytes
        self._ceiling = min(memory_limit_bytes, GROWTH_SAFETY_CEILING)
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._grow_task: asyncio.Task | None = None
        self._crash_handle: asyncio.TimerHandle | None = None
        self._watchdog_task: asyncio.Task | None = None
        self._ceiling_logged = False

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def apply(self, faults: Faults) -> None:
        self.current = faults
        self._metrics.set_faults(faults.active())
        loop = asyncio.get_running_loop()

        if faults.memory_growth_mb_per_s > 0:
            if self._grow_task is None or self._grow_task.done():
                self._grow_task = loop.create_task(self._grow())
        else:
            if self._grow_task is not None:
                self._grow_task.cancel()
                self._grow_task = None
            self._held.clear()
            self._held_bytes = 0
            self._ceiling_logged = False

        if self._crash_handle is not None:
            self._crash_handle.cancel()
            self._crash_handle = None
        if faults.crash_after_s is not None:
            self._crash_handle = loop.call_later(faults.crash_after_s, self._crash)

        if faults.to_dict():
            self._log.warning("faults set", faults=faults.to_dict())
        else:
            self._log.info("faults cleared")

    def start_watchdog(self) -> None:
        self._watchdog_task = asyncio.get_running_loop().create_task(self._watchdog())

    def stop(self) -> None:
        for task in (self._grow_task, self._watchdog_task):
            if task is not None:
                task.cancel()
        if self._crash_handle is not None:
            self._crash_handle.cancel()

    async def _grow(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            n = int(self.current.memory_growth_mb_per_s * MIB * (now - last))
            last = now
            n = min(n, self._ceiling - self._held_bytes)
            if n <= 0:
                if not self._ceiling_logged:
                    self._ceiling_logged = True
                    self._log.warning(
                        "memory growth fault reached its ceiling", held=self._held_bytes
                    )
                continue
            # b"\x01" * n fills every page, so the memory is really resident.
            self._held.append(b"\x01" * n)
            self._held_bytes += n

    async def _watchdog(self) -> None:
        """Kill the process when its resident memory crosses the limit, like an OOM kill."""
        while True:
            await asyncio.sleep(0.25)
            rss = self._metrics.rss()
            if rss > self._memory_limit:
                self._log.error(
                    "memory limit exceeded: killed like an OOM-killed container",
                    rss_bytes=rss,
                    limit_bytes=self._memory_limit,
                )
                self._log.flush()
                os._exit(OOM_EXIT_CODE)

    def _crash(self) -> None:
        self._log.error("injected crash fault: exiting abruptly", exit_code=CRASH_EXIT_CODE)
        self._log.flush()
        os._exit(CRASH_EXIT_CODE)
