"""Periodic callbacks for many VUs on one loop timer: what ``vu.every()`` runs on.

A VU that holds a connection and sends on it every few seconds (the WebSocket test's heartbeat
and state updates: 10,000 connections, 2,200 sends a second) could sleep in its own task or keep
a loop timer of its own. Both cost a timer object, a timer-heap insertion and removal, and a
separate loop wake-up for every send; measured on 10,000 WebSockets, that was most of the
engine's own CPU in the hold. Here the stage keeps one heap of periodic entries and one loop
timer armed for the earliest: each wake-up runs every entry due within ``SLOT_S`` (so sends due
within a few milliseconds of each other go out in one loop turn), then re-arms.

Timing: an entry runs at most ``SLOT_S`` early and, on a busy loop, late; it is then
rescheduled one interval after its due time, or one interval from now when it fell more than an
interval behind (no burst of catch-up calls after a stall). A callback that raises is reported
to the loop's exception handler and to ``on_error`` (with the entry's tag) and is not called
again.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

SLOT_S = 0.005

_heappush = heapq.heappush
_heappop = heapq.heappop


class Periodic(list):  # type: ignore[type-arg]
    """One periodic callback; :meth:`cancel` stops it (idempotent).

    A list ``[due, seq, interval, callback, tag]`` underneath, so that the heap compares entries in
    C (due, then the unique seq) instead of calling a Python ``__lt__`` a dozen times a push."""

    __slots__ = ()

    @property
    def due(self) -> float:
        return self[0]  # type: ignore[no-any-return]

    @property
    def interval(self) -> float:
        return self[2]  # type: ignore[no-any-return]

    @property
    def cancelled(self) -> bool:
        return self[3] is None

    def cancel(self) -> None:
        # removed lazily: the heap drops it when it comes up
        self[3] = None


class Scheduler:
    """The stage's periodic entries, run from one loop timer."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_error: Callable[[BaseException, object], None] | None = None,
    ) -> None:
        self._loop = loop
        self._heap: list[Periodic] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._on_error = on_error

    def __len__(self) -> int:
        return sum(1 for entry in self._heap if entry[3] is not None)

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
        self._seq += 1
        due = self._loop.time() + delay
        entry = Periodic((due, self._seq, interval, callback, tag))
        _heappush(self._heap, entry)
        if due < self._armed_at:
            self._arm(due)
        return entry

    def close(self) -> None:
        """Cancel every entry and the timer."""
        for entry in self._heap:
            entry[3] = None
        self._heap.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = float("inf")

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = due
        self._timer = self._loop.call_at(due, self._run_due)

    def _run_due(self) -> None:
        self._timer = None
        self._armed_at = float("inf")
        heap = self._heap
        now = self._loop.time()
        limit = now + SLOT_S
        while heap and heap[0][0] <= limit:
            entry = _heappop(heap)
            callback = entry[3]
            if callback is None:
                continue
            try:
                callback()
            except Exception as exc:
                entry[3] = None
                self._report(exc, entry[4])
                continue
            if entry[3] is None:  # cancelled itself
                continue
            interval = entry[2]
            due = entry[0] + interval
            entry[0] = due if due > now else now + interval
            _heappush(heap, entry)
        while heap and heap[0][3] is None:
            _heappop(heap)
        if heap:
            self._arm(heap[0][0])

    def _report(self, exc: Exception, tag: object) -> None:
        self._loop.call_exception_handler(
            {"message": "periodic callback failed (it is not called again)", "exception": exc}
        )
        if self._on_error is not None:
            self._on_error(exc, tag)
