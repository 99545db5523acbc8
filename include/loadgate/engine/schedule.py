"""Periodic callbacks for many VUs on one loop timer: what ``vu.every()`` runs on.

A VU that holds a connection and sends on it every few seconds (the WebSocket test's heartbeat
and state updates: 10,000 connections, 2,200 sends a second) could sleep in its own task or keep
a loop timer of its own. Both cost a timer object, a timer-heap insertion and removal, and a
separate loop wake-up for every send; measured on 10,000 WebSockets, that was most of the
engine's own CPU in the hold. Here the stage keeps a timing wheel: entries sit in buckets of
``SLOT_S`` seconds, one loop timer is armed for the earliest bucket, and each wake-up runs
every entry of the due buckets (sends due within a few milliseconds of each other go out in one
loop turn) and files each into the bucket of its next call. Filing is a dict look-up, not a
heap operation (a heap of 10,000 entries cost more in comparisons than the sends it ordered).

Timing: an entry runs at most ``SLOT_S`` late on an idle loop (never early); it is then
rescheduled one interval after its due time, or one interval from now when it fell more than an
interval behind (no burst of catch-up calls after a stall). A callback that raises is reported
to the loop's exception handler and to ``on_error`` (with the entry's tag) and is not called
again.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable

SLOT_S = 0.005
_TIMER_EARLY_S = 0.001  # loop timers have millisecond resolution: a bucket may fire this early

_heappush = heapq.heappush
_heappop = heapq.heappop
_ceil = math.ceil


class Periodic:
    """One periodic callback; :meth:`cancel` stops it (idempotent)."""

    __slots__ = ("callback", "due", "interval", "tag")

    def __init__(
        self, due: float, interval: float, callback: Callable[[], None], tag: object
    ) -> None:
        self.due = due
        self.interval = interval
        self.callback: Callable[[], None] | None = callback
        self.tag = tag

    @property
    def cancelled(self) -> bool:
        return self.callback is None

    def cancel(self) -> None:
        # dropped from its bucket when the bucket comes up
        self.callback = None


class Scheduler:
    """The stage's periodic entries, run from one loop timer."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_error: Callable[[BaseException, object], None] | None = None,
    ) -> None:
        self._loop = loop
        self._buckets: dict[int, list[Periodic]] = {}
        self._keys: list[int] = []  # heap of the buckets' keys
        self._timer: asyncio.TimerHandle | None = None
        self._armed: int | None = None
        self._on_error = on_error

    def __len__(self) -> int:
        return sum(1 for b in self._buckets.values() for e in b if e.callback is not None)

    def every(
        self,
        interval: float,
        callback: Callable[[], None],
        first: float | None = None,
        tag: object = None,
    ) -> Periodic:
        """Call ``callback()`` every ``interval`` seconds, the first time after ``first``
        seconds (default: one interval); ``tag`` is passed to ``on_error`` if it raises."""
        if not interval > 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        delay = interval if first is None else max(first, 0.0)
        entry = Periodic(self._loop.time() + delay, interval, callback, tag)
        key = _ceil(entry.due / SLOT_S)
        self._file(entry, key)
        if self._armed is None or key < self._armed:
            self._arm(key)
        return entry

    def close(self) -> None:
        """Cancel every entry and the timer."""
        for bucket in self._buckets.values():
            for entry in bucket:
                entry.callback = None
        self._buckets.clear()
        self._keys.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = None

    def _file(self, entry: Periodic, key: int) -> None:
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [entry]
            _heappush(self._keys, key)
        else:
            bucket.append(entry)

    def _arm(self, key: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = key
        self._timer = self._loop.call_at(key * SLOT_S, self._run_due)

    def _run_due(self) -> None:
        self._timer = None
        self._armed = None
        keys = self._keys
        buckets = self._buckets
        now = self._loop.time()
        horizon = now + _TIMER_EARLY_S
        while keys and keys[0] * SLOT_S <= horizon:
            current = _heappop(keys)
            for entry in buckets.pop(current):
                callback = entry.callback
                if callback is None:
                    continue
                try:
                    callback()
                except Exception as exc:
                    entry.callback = None
                    self._report(exc, entry.tag)
                    continue
                if entry.callback is None:  # cancelled itself
                    continue
                interval = entry.interval
                due = entry.due + interval
                entry.due = due = due if due > now else now + interval
                key = _ceil(due / SLOT_S)
                self._file(entry, key if key > current else current + 1)
        if keys:
            self._arm(keys[0])

    def _report(self, exc: Exception, tag: object) -> None:
        self._loop.call_exception_handler(
            {"message": "periodic callback failed (it is not called again)", "exception": exc}
        )
        if self._on_error is not None:
            self._on_error(exc, tag)
