"""``constant-arrival-rate`` (k6's): an open model.

Iterations start on schedule on a free VU of a pool (grown up to ``max_vus``); one that finds
no free VU is counted as dropped, never delayed.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from loadgate.engine.executors.base import (
    Executor,
    PositiveSeconds,
    Profile,
    ScenarioConfig,
)
from loadgate.engine.executors.driver import ScenarioRun
from loadgate.engine.shard import Shard, scale_count
from loadgate.engine.vu import VU


class ConstantArrivalRate(ScenarioConfig):
    """Open model: ``rate`` iterations per ``time_unit`` started on schedule whatever the
    target's latency; an iteration with no free VU (and ``max_vus`` reached) is dropped."""

    executor: Literal["constant-arrival-rate"]
    rate: float = Field(gt=0)
    time_unit: PositiveSeconds = 1.0
    duration: PositiveSeconds
    pre_allocated_vus: int = Field(ge=1)
    max_vus: int | None = Field(default=None, ge=1)

    @property
    def peak(self) -> int:
        return self.max_vus or self.pre_allocated_vus

    def problems(self) -> list[tuple[str, str]]:
        if self.max_vus is not None and self.max_vus < self.pre_allocated_vus:
            return [("max_vus", "must be at least pre_allocated_vus")]
        return []

    def build_profile(
        self, name: str, *, shard: Shard, rotate: int, scale: float, time_scale: float
    ) -> ArrivalProfile:
        duration = self.duration * time_scale
        rate = self.rate / self.time_unit * scale  # pacing: never × or / time scale
        pre = scale_count(self.pre_allocated_vus, scale)
        max_vus = max(pre, scale_count(self.max_vus or self.pre_allocated_vus, scale))
        return ArrivalProfile(
            duration=duration,
            rate_total=rate,
            pre_allocated=pre,
            max_vus=max_vus,
            iterations_total=math.ceil(rate * duration - 1e-9),
            **self.profile_fields(name, shard=shard, rotate=rotate, time_scale=time_scale),
        )


@dataclass(frozen=True)
class ArrivalProfile(Profile):
    rate_total: float  # iterations per second across all shards (scaled)
    pre_allocated: int
    max_vus: int
    iterations_total: int = field(default=0)

    def arrival_time(self, j: int) -> float:
        """When this shard's ``j``-th iteration is due (global iteration ``j*N + rank``)."""
        return self.start + self.global_index(j) / self.rate_total

    @property
    def iterations(self) -> int:
        """This shard's share of the scheduled iterations."""
        return self.share(self.iterations_total)

    @property
    def iteration_rate(self) -> float:
        total = self.iterations_total
        return self.rate_total * self.iterations / total if total else 0.0

    @classmethod
    def scheduled_iterations(cls, described: Mapping[str, Any], seconds: float) -> float:
        rate = float(described.get("rate_total_per_s") or 0.0)
        ran = max(0.0, seconds - float(described.get("start_s") or 0.0))
        return min(float(described.get("iterations_total") or 0), rate * ran)

    def total_at(self, t: float) -> int:
        return self.pre_allocated if self.start <= t < self.end else 0

    @property
    def peak_total(self) -> int:
        return self.max_vus

    def details(self) -> dict[str, Any]:
        return {
            "rate_total_per_s": self.rate_total,
            "rate_this_shard_per_s": self.iteration_rate,
            "iterations_total": self.iterations_total,
            "iterations_this_shard": self.iterations,
            "pre_allocated_vus_this_shard": self.share(self.pre_allocated),
            "max_vus_this_shard": self.share(self.max_vus),
        }


async def drive(run: ScenarioRun, p: ArrivalProfile) -> None:
    rec = run.rt.recorder
    max_vus = p.share(p.max_vus)
    idle: deque[VU] = deque(run.new_vu(k) for k in range(p.share(p.pre_allocated)))
    allocated = len(idle)
    busy: dict[int, tuple[VU, asyncio.Task[None]]] = run.vus

    async def one(vu: VU) -> None:
        rec.vu_started(run.name)
        try:
            await run.iteration(vu)
        finally:
            rec.vu_stopped(run.name)
            busy.pop(vu.local_id, None)
            if vu.stopping:
                vu.close()
            else:
                idle.append(vu)

    stopped = False
    for j in range(p.iterations):
        due = p.arrival_time(j)
        if due > run.now():
            if await run.sleep_until(due):
                stopped = True
                break
        elif j % 64 == 0:
            await asyncio.sleep(0)  # behind schedule: catch up, but let the VUs run
        if run.stop_asked:
            stopped = True
            break
        if idle:
            vu = idle.popleft()
        elif allocated < max_vus:
            vu = run.new_vu(allocated)
            allocated += 1
        else:
            rec.dropped(run.name)
            continue
        busy[vu.local_id] = (vu, asyncio.create_task(one(vu)))
    if not stopped:
        await run.sleep_until(p.end)
    await run.finish(p.graceful_stop)
    for vu in idle:
        vu.close()


EXECUTOR = Executor(
    "constant-arrival-rate", config=ConstantArrivalRate, profile=ArrivalProfile, drive=drive
)
