"""The stage's periodic callbacks: intervals, first delay, cancellation, failures, stalls."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from loadgate.engine.schedule import SLOT_S, Scheduler
from tests.support.aio import run

pytestmark = pytest.mark.timeout(30)


def test_entries_fire_at_their_interval_after_their_first_delay() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        sched = Scheduler(loop)
        fast: list[float] = []
        slow: list[float] = []
        t0 = loop.time()
        sched.every(0.05, lambda: fast.append(loop.time() - t0))
        sched.every(0.2, lambda: slow.append(loop.time() - t0), first=0.01)
        assert len(sched) == 2
        await asyncio.sleep(0.52)
        sched.close()
        # first call one interval in (at most a slot early), then every interval, no drift
        assert fast[0] >= 0.05 - SLOT_S
        assert 8 <= len(fast) <= 10, fast  # 10 due; a busy machine may make the last late
        gaps = [b - a for a, b in itertools.pairwise(fast)]
        assert all(0.05 - 2 * SLOT_S < g < 0.05 + 0.1 for g in gaps), gaps
        assert fast[-1] == pytest.approx(0.05 * len(fast), abs=0.05)  # no drift
        assert slow[0] < 0.05 and len(slow) == 3, slow  # 0.01, 0.21, 0.41

    run(body())


def test_cancel_from_outside_and_from_the_callback_itself() -> None:
    async def body() -> None:
        sched = Scheduler(asyncio.get_running_loop())
        calls = {"a": 0, "b": 0, "c": 0}

        def b() -> None:
            calls["b"] += 1
            if calls["b"] == 2:
                entry_b.cancel()

        entry_a = sched.every(0.02, lambda: calls.__setitem__("a", calls["a"] + 1))
        entry_b = sched.every(0.02, b)
        sched.every(0.02, lambda: calls.__setitem__("c", calls["c"] + 1))
        await asyncio.sleep(0.05)
        entry_a.cancel()
        entry_a.cancel()  # idempotent
        seen_a = calls["a"]
        await asyncio.sleep(0.1)
        assert entry_a.cancelled and entry_b.cancelled
        assert calls["a"] == seen_a >= 1
        assert calls["b"] == 2
        assert calls["c"] >= 5  # the others go on
        assert len(sched) == 1
        sched.close()
        assert len(sched) == 0
        seen_c = calls["c"]
        await asyncio.sleep(0.05)
        assert calls["c"] == seen_c

    run(body())


def test_a_failing_callback_is_reported_with_its_tag_and_dropped() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        handled: list[dict] = []
        loop.set_exception_handler(lambda _loop, ctx: handled.append(ctx))
        errors: list[tuple[BaseException, object]] = []
        sched = Scheduler(loop, on_error=lambda exc, tag: errors.append((exc, tag)))
        good: list[int] = []

        def bad() -> None:
            raise RuntimeError("scenario bug")

        sched.every(0.02, bad, tag="ws")
        sched.every(0.02, lambda: good.append(1))
        await asyncio.sleep(0.11)
        sched.close()
        assert [(str(e), tag) for e, tag in errors] == [("scenario bug", "ws")]
        assert len(handled) == 1 and isinstance(handled[0]["exception"], RuntimeError)
        assert len(good) >= 4

    run(body())


def test_no_burst_of_catch_up_calls_after_the_loop_stalls() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        sched = Scheduler(loop)
        calls: list[float] = []
        sched.every(0.02, lambda: calls.append(loop.time()))
        await asyncio.sleep(0.03)
        time.sleep(0.2)  # the loop is blocked for ten intervals
        before = len(calls)
        await asyncio.sleep(0.05)
        sched.close()
        # one late call, then back to the interval: not ten calls at once
        assert 1 <= len(calls) - before <= 3, calls

    run(body())


def test_an_entry_due_sooner_rearms_the_timer() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        sched = Scheduler(loop)
        order: list[str] = []
        sched.every(10.0, lambda: order.append("late"))
        sched.every(0.03, lambda: order.append("soon"), first=0.01)
        await asyncio.sleep(0.06)
        sched.close()
        assert order and set(order) == {"soon"}

    run(body())


def test_interval_must_be_positive() -> None:
    async def body() -> None:
        sched = Scheduler(asyncio.get_running_loop())
        with pytest.raises(ValueError, match="positive"):
            sched.every(0, lambda: None)

    run(body())
