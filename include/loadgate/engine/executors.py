"""Executors: how a scenario's VUs come and go on this shard, following its profile.

- ``ramping-vus``: the target is read every ``TICK`` seconds from the linear profile; new VUs
  take the lowest free local index; VUs above the target (highest index first) finish their
  iteration and go, cancelled if still running after ``graceful_ramp_down``.
- ``constant-vus``: the VUs from ``start`` to ``start + duration``.
- ``connection-ramp``: VU ``k`` starts at its slot of the ramp and runs the scenario once (the
  scenario holds its connection until asked to stop); a connection that ends is not replaced.
- ``constant-arrival-rate``: iterations start on schedule on a free VU of a pool (grown up to
  ``max_vus``); one that finds no free VU is counted as dropped, never delayed.

At its end a scenario asks its VUs to stop (they finish the iteration) and cancels those still
running ``graceful_stop`` later; a cancelled iteration is counted as interrupted. A hard stop
(abort) cancels at once.

Each VU of a closed-model executor leaves its lifetime as the schedule ran it
(:meth:`ScenarioRun.lifetimes`): the seconds from its start until it was asked to stop (no
iteration starts after that), and the grace its last iteration then had before being cancelled.
The summary plans a scenario's requests from them (:mod:`loadgate.runner.summary`).
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from loadgate.engine.vu import VU, StageRuntime, _wake
from loadgate.plan.profile import (
    ArrivalProfile,
    ConnectionRampProfile,
    ConstantProfile,
    Profile,
    RampingProfile,
)

ScenarioFn = Callable[[VU], Awaitable[None]]
TICK = 0.05
MAX_LOGGED_ERRORS = 5
TIMER_RESOLUTION_S = 0.001
LIFETIME_DIGITS = 2  # a lifetime's seconds to 10 ms (VUs whose rounded lifetimes match: one row)
GRACE_DIGITS = 3


class _Life:
    """One VU's schedule: when it started, when it was asked to stop (None: not yet) and the
    grace its last iteration had from then (seconds of the stage)."""

    __slots__ = ("grace", "started", "stopped")

    def __init__(self, started: float) -> None:
        self.started = started
        self.stopped: float | None = None
        self.grace = 0.0

    def row(self, now: float) -> tuple[float, float]:
        """(seconds to the stop request, grace), rounded; a VU not yet asked stops ``now``."""
        stopped = now if self.stopped is None else self.stopped
        return round(stopped - self.started, LIFETIME_DIGITS), round(self.grace, GRACE_DIGITS)


class ScenarioRun:
    """One scenario of the stage, on this shard."""

    def __init__(
        self,
        name: str,
        fn: ScenarioFn,
        profile: Profile,
        options: dict[str, Any],
        rt: StageRuntime,
        t0: float,
    ) -> None:
        self.name = name
        self.fn = fn
        self.profile = profile
        self.options = options
        self.rt = rt
        self.t0 = t0
        self.vus: dict[int, tuple[VU, asyncio.Task[None]]] = {}
        self._sized_to: int | None = None  # the target _resize last applied
        self._stop_asked = False
        self._sleeper: asyncio.Future[None] | None = None
        self._stop_grace: float | None = None
        self._errors_logged = 0
        # the lifetimes of the live VUs, and the ended ones' rows: VUs by (seconds to the stop
        # request, grace), rounded
        self._lives: dict[VU, _Life] = {}
        self._ended: dict[tuple[float, float], int] = {}

    # --- timing -----------------------------------------------------------------------------

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    async def _sleep_until(self, t: float) -> bool:
        """Sleep until stage time ``t``; True if a graceful stop was asked meanwhile.

        Called once per VU start or arrival (10,000 times in a connection ramp): one future and
        one timer, woken early by :meth:`request_stop`. Less than ``TIMER_RESOLUTION_S`` to go
        is no sleep: the loop's timers could not wait that precisely anyway."""
        if self._stop_asked:
            return True
        loop = asyncio.get_running_loop()
        delay = t - (loop.time() - self.t0)
        if delay > TIMER_RESOLUTION_S:
            self._sleeper = waiter = loop.create_future()
            handle = loop.call_later(delay, _wake, waiter)
            try:
                await waiter
            finally:
                handle.cancel()
                self._sleeper = None
        return self._stop_asked

    def request_stop(self, grace: float) -> None:
        """Graceful stop of the whole scenario (SIGTERM): wind down within ``grace`` seconds."""
        self._stop_grace = grace
        self._stop_asked = True
        if self._sleeper is not None:
            _wake(self._sleeper)

    # --- VU lifetimes -----------------------------------------------------------------------

    def _asked_to_stop(self, vu: VU, grace: float) -> None:
        """``vu`` was asked to stop now (the first time counts), cancelled ``grace`` later."""
        life = self._lives.get(vu)
        if life is not None and life.stopped is None:
            life.stopped = self.now()
            life.grace = max(grace, 0.0)

    def _vu_ended(self, vu: VU) -> None:
        life = self._lives.pop(vu, None)
        if life is not None:  # one that ended unasked (its one iteration done) had no grace
            key = life.row(self.now())
            self._ended[key] = self._ended.get(key, 0) + 1

    def lifetimes(self) -> list[list[float]] | None:
        """``[[seconds to the stop request, grace, VUs], ...]`` of the VUs run so far (one
        still running counts as asked to stop now), or None for an arrival-rate scenario (its
        VUs are a pool serving a schedule: its plan is the schedule's)."""
        if isinstance(self.profile, ArrivalProfile):
            return None
        rows = dict(self._ended)
        now = self.now()
        for life in self._lives.values():
            key = life.row(now)
            rows[key] = rows.get(key, 0) + 1
        return [[d, g, n] for (d, g), n in sorted(rows.items())]

    # --- VUs --------------------------------------------------------------------------------

    def _new_vu(self, local: int) -> VU:
        return VU(
            self.rt,
            scenario=self.name,
            vu_id=self.profile.global_index(local),
            local_id=local,
            options=self.options,
        )

    def _log_error(self, vu: VU, exc: BaseException) -> None:
        if self._errors_logged >= MAX_LOGGED_ERRORS:
            return
        self._errors_logged += 1
        detail = "".join(traceback.format_exception(exc)).rstrip()
        more = (
            " (further errors of this scenario are only counted)"
            if (self._errors_logged == MAX_LOGGED_ERRORS)
            else ""
        )
        print(
            f"loadgate: scenario {self.name} VU {vu.id} iteration {vu.iteration} failed{more}:\n"
            f"{detail}",
            file=sys.stderr,
        )

    async def _iteration(self, vu: VU) -> None:
        rec = self.rt.recorder
        try:
            await self.fn(vu)
        except asyncio.CancelledError:
            rec.interrupted(self.name)
            raise
        except Exception as exc:
            vu.end_iteration()
            rec.iteration_error(self.name)
            self._log_error(vu, exc)
            await asyncio.sleep(0.05)  # a scenario failing at once must not spin the loop
        else:
            rec.iteration(self.name)
        finally:
            vu.end_iteration()
        vu.iteration += 1

    async def _vu_loop(self, vu: VU) -> None:
        rec = self.rt.recorder
        rec.vu_started(self.name)
        try:
            while not vu.stopping:
                await self._iteration(vu)
                await asyncio.sleep(0)
        finally:
            rec.vu_stopped(self.name)
            self._vu_ended(vu)
            vu.close()
            self.vus.pop(vu.local_id, None)

    async def _vu_once(self, vu: VU) -> None:
        rec = self.rt.recorder
        rec.vu_started(self.name)
        try:
            if not vu.stopping:
                await self._iteration(vu)
        finally:
            rec.vu_stopped(self.name)
            self._vu_ended(vu)
            vu.close()
            self.vus.pop(vu.local_id, None)

    def _spawn(self, local: int, once: bool = False) -> None:
        vu = self._new_vu(local)
        self._lives[vu] = _Life(self.now())
        coro = self._vu_once(vu) if once else self._vu_loop(vu)
        self.vus[local] = (vu, asyncio.create_task(coro, name=f"vu-{self.name}-{vu.id}"))

    def _running(self) -> list[int]:
        return sorted(k for k, (vu, _) in self.vus.items() if not vu.stopping)

    def _resize(self, target: int, grace: float) -> None:
        # Only _resize starts or stops VUs while the profile runs (a VU's loop ends only when
        # asked to stop): the same target as last time needs no look at 10,000 VUs, every tick.
        if target == self._sized_to:
            return
        self._sized_to = target
        running = self._running()
        if len(running) < target:
            local = 0
            for _ in range(target - len(running)):
                while local in self.vus:
                    local += 1
                self._spawn(local)
        elif len(running) > target:
            loop = asyncio.get_running_loop()
            for local in running[target:]:
                vu, task = self.vus[local]
                vu.request_stop()
                self._asked_to_stop(vu, grace)
                loop.call_later(max(grace, 0.0), task.cancel)

    async def _finish(self, grace: float) -> None:
        """Ask every VU to stop, wait up to ``grace``, cancel the rest and wait for them."""
        if self._stop_grace is not None:
            grace = min(grace, self._stop_grace)
        tasks = []
        for vu, task in list(self.vus.values()):
            vu.request_stop()
            self._asked_to_stop(vu, grace)
            tasks.append(task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(grace, 0.0))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def cancel_all(self) -> list[asyncio.Task[None]]:
        """Hard stop: cancel every VU now (returns the tasks to wait for)."""
        tasks = [task for _, task in self.vus.values()]
        now = self.now()
        for vu, task in list(self.vus.values()):
            vu.request_stop()
            life = self._lives.get(vu)
            if life is not None:  # cancelled now: a grace still running ends here
                if life.stopped is None:
                    life.stopped = now
                else:
                    life.grace = min(life.grace, now - life.stopped)
            task.cancel()
        return tasks

    # --- executors --------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            profile = self.profile
            if isinstance(profile, RampingProfile):
                await self._run_ramping(profile)
            elif isinstance(profile, ConstantProfile):
                await self._run_constant(profile)
            elif isinstance(profile, ConnectionRampProfile):
                await self._run_connection_ramp(profile)
            elif isinstance(profile, ArrivalProfile):
                await self._run_arrival(profile)
            else:  # pragma: no cover
                raise TypeError(f"no executor for {type(profile).__name__}")
        finally:
            tasks = self.cancel_all()
            if tasks:
                await asyncio.wait(tasks)

    async def _run_ramping(self, p: RampingProfile) -> None:
        if await self._sleep_until(p.start):
            return await self._finish(p.graceful_stop)
        while True:
            t = self.now()
            if t >= p.end:
                break
            self._resize(p.target_at(t), p.graceful_ramp_down)
            if await self._sleep_until(min(t + TICK, p.end)):
                break
        await self._finish(p.graceful_stop)

    async def _run_constant(self, p: ConstantProfile) -> None:
        if not await self._sleep_until(p.start):
            self._resize(p.target_at(p.start), 0.0)
            await self._sleep_until(p.end)
        await self._finish(p.graceful_stop)

    async def _run_connection_ramp(self, p: ConnectionRampProfile) -> None:
        count = p.peak
        for local in range(count):
            if await self._sleep_until(p.opens_at(local)):
                break
            if self.now() >= p.end:
                break
            self._spawn(local, once=True)
        else:
            await self._sleep_until(p.end)
        await self._finish(p.graceful_stop)

    async def _run_arrival(self, p: ArrivalProfile) -> None:
        rec = self.rt.recorder
        shard = p.shard
        max_vus = shard.share(p.max_vus, p.rotate)
        idle: deque[VU] = deque(
            self._new_vu(k) for k in range(shard.share(p.pre_allocated, p.rotate))
        )
        allocated = len(idle)
        busy: dict[int, tuple[VU, asyncio.Task[None]]] = self.vus

        async def one(vu: VU) -> None:
            rec.vu_started(self.name)
            try:
                await self._iteration(vu)
            finally:
                rec.vu_stopped(self.name)
                busy.pop(vu.local_id, None)
                if vu.stopping:
                    vu.close()
                else:
                    idle.append(vu)

        stopped = False
        for j in range(p.iterations):
            due = p.arrival_time(j)
            if due > self.now():
                if await self._sleep_until(due):
                    stopped = True
                    break
            elif j % 64 == 0:
                await asyncio.sleep(0)  # behind schedule: catch up, but let the VUs run
            if self._stop_asked:
                stopped = True
                break
            if idle:
                vu = idle.popleft()
            elif allocated < max_vus:
                vu = self._new_vu(allocated)
                allocated += 1
            else:
                rec.dropped(self.name)
                continue
            busy[vu.local_id] = (vu, asyncio.create_task(one(vu)))
        if not stopped:
            await self._sleep_until(p.end)
        await self._finish(p.graceful_stop)
        for vu in idle:
            vu.close()
