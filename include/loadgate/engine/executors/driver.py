"""The driver's shared machinery: one scenario's VUs on this shard, as its executor drives them.

:meth:`ScenarioRun.run` hands the run to its profile's executor's ``drive``
(:mod:`loadgate.engine.executors`), which starts and stops VUs with :meth:`ScenarioRun.resize`,
:meth:`ScenarioRun.spawn` or its own pool (:meth:`ScenarioRun.new_vu`,
:meth:`ScenarioRun.iteration`), waiting with :meth:`ScenarioRun.sleep_until`, and ends with
:meth:`ScenarioRun.finish`.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from loadgate.engine.executors.base import Profile, executor
from loadgate.engine.vu import VU, StageRuntime, _wake

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


@dataclass(eq=False)
class ScenarioRun:
    """One scenario of the stage, on this shard: its VUs, driven by its executor's driver."""

    name: str
    fn: ScenarioFn
    profile: Profile
    options: dict[str, Any]
    rt: StageRuntime
    t0: float  # the loop's time at the stage start

    def __post_init__(self) -> None:
        self.vus: dict[int, tuple[VU, asyncio.Task[None]]] = {}
        self._sized_to: int | None = None  # the target resize last applied
        self._stop_asked = False
        self._sleeper: asyncio.Future[None] | None = None
        self._stop_grace: float | None = None
        self._errors_logged = 0
        # the lifetimes of the live VUs, and the ended ones' rows: VUs by (seconds to the stop
        # request, grace), rounded
        self._lives: dict[VU, _Life] = {}
        self._ended: dict[tuple[float, float], int] = {}

    async def run(self) -> None:
        try:
            await executor(self.profile.kind).drive(self, self.profile)
        finally:
            tasks = self.cancel_all()
            if tasks:
                await asyncio.wait(tasks)

    # --- timing -----------------------------------------------------------------------------

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    @property
    def stop_asked(self) -> bool:
        """A graceful stop of the whole scenario was asked (:meth:`request_stop`)."""
        return self._stop_asked

    async def sleep_until(self, t: float) -> bool:
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
        still running counts as asked to stop now), or None for an open-model scenario (its
        VUs are a pool serving a schedule: its plan is the schedule's)."""
        if self.profile.iteration_rate is not None:
            return None
        rows = dict(self._ended)
        now = self.now()
        for life in self._lives.values():
            key = life.row(now)
            rows[key] = rows.get(key, 0) + 1
        return [[d, g, n] for (d, g), n in sorted(rows.items())]

    # --- VUs --------------------------------------------------------------------------------

    def new_vu(self, local: int) -> VU:
        """This shard's VU ``local`` (not started: :meth:`spawn` starts one)."""
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

    async def iteration(self, vu: VU) -> None:
        """One iteration of the scenario on ``vu``, counted (an error is logged, not raised)."""
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

    async def _vu(self, vu: VU, once: bool) -> None:
        rec = self.rt.recorder
        rec.vu_started(self.name)
        try:
            while not vu.stopping:
                await self.iteration(vu)
                if once:
                    break
                await asyncio.sleep(0)
        finally:
            rec.vu_stopped(self.name)
            self._vu_ended(vu)
            vu.close()
            self.vus.pop(vu.local_id, None)

    def spawn(self, local: int, once: bool = False) -> None:
        """Start VU ``local``: iterating until asked to stop, or for one iteration (``once``)."""
        vu = self.new_vu(local)
        self._lives[vu] = _Life(self.now())
        task = asyncio.create_task(self._vu(vu, once), name=f"vu-{self.name}-{vu.id}")
        self.vus[local] = (vu, task)

    def _running(self) -> list[int]:
        return sorted(k for k, (vu, _) in self.vus.items() if not vu.stopping)

    def resize(self, target: int, grace: float) -> None:
        """Run ``target`` VUs: new ones take the lowest free local index; those above the
        target (highest index first) finish their iteration, cancelled ``grace`` later."""
        # Only resize starts or stops VUs while the profile runs (a VU's loop ends only when
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
                self.spawn(local)
        elif len(running) > target:
            loop = asyncio.get_running_loop()
            for local in running[target:]:
                vu, task = self.vus[local]
                vu.request_stop()
                self._asked_to_stop(vu, grace)
                loop.call_later(max(grace, 0.0), task.cancel)

    async def finish(self, grace: float) -> None:
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
