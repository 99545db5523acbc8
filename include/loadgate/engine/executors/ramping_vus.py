"""``ramping-vus`` (k6's): linear ramps between targets.

The target is read every ``TICK`` seconds from the linear profile; new VUs take the lowest free
local index; VUs above the target (highest index first) finish their iteration and go,
cancelled if still running after ``graceful_ramp_down``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from loadgate.engine.executors.base import (
    Executor,
    Model,
    Profile,
    ScenarioConfig,
    Seconds,
)
from loadgate.engine.executors.driver import TICK, ScenarioRun
from loadgate.engine.shard import Shard, scale_count


class RampTarget(Model):
    duration: Seconds
    target: int = Field(ge=0)


class RampingVUs(ScenarioConfig):
    """k6's ramping-vus: linear ramps between targets; VUs above the target finish their
    iteration (up to ``graceful_ramp_down``) before they go."""

    executor: Literal["ramping-vus"]
    start_vus: int = Field(default=0, ge=0)
    stages: list[RampTarget] = Field(min_length=1)
    graceful_ramp_down: Seconds = 30.0

    ramps_users: ClassVar[bool] = True

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.stages)

    @property
    def peak(self) -> int:
        return max([self.start_vus, *(s.target for s in self.stages)])

    def build_profile(
        self, name: str, *, shard: Shard, rotate: int, scale: float, time_scale: float
    ) -> RampingProfile:
        ts = time_scale
        stages = tuple((s.duration * ts, scale_count(s.target, scale)) for s in self.stages)
        return RampingProfile(
            duration=sum(d for d, _ in stages),
            start_vus=scale_count(self.start_vus, scale),
            stages=stages,
            graceful_ramp_down=self.graceful_ramp_down * ts,
            **self.profile_fields(name, shard=shard, rotate=rotate, time_scale=ts),
        )


@dataclass(frozen=True)
class RampingProfile(Profile):
    start_vus: int
    stages: tuple[tuple[float, int], ...]  # (duration s, scaled total target)
    graceful_ramp_down: float

    def total_at(self, t: float) -> int:
        t -= self.start
        if t < 0:
            return 0
        level = self.start_vus
        for duration, target in self.stages:
            if t < duration:
                value = level + (target - level) * (t / duration)
                if target >= level:
                    return math.floor(value + 1e-9)
                return math.ceil(value - 1e-9)
            t -= duration
            level = target
        return level if t <= 0 else 0

    def change_times(self) -> list[float]:
        """Stage boundaries relative to the stage start (for the controller's exact ticks)."""
        out, t = [self.start], self.start
        for duration, _ in self.stages:
            t += duration
            out.append(t)
        return out

    @property
    def longest_grace(self) -> float:
        return max(self.graceful_stop, self.graceful_ramp_down)

    @property
    def peak_total(self) -> int:
        return max([self.start_vus, *(target for _, target in self.stages)])

    def details(self) -> dict[str, Any]:
        return {
            "stages": [
                {
                    "duration_s": round(d, 6),
                    "target_total": tgt,
                    "target_this_shard": self.share(tgt),
                }
                for d, tgt in self.stages
            ],
            "graceful_ramp_down_s": round(self.graceful_ramp_down, 6),
        }


async def drive(run: ScenarioRun, p: RampingProfile) -> None:
    if await run.sleep_until(p.start):
        return await run.finish(p.graceful_stop)
    while True:
        t = run.now()
        if t >= p.end:
            break
        run.resize(p.target_at(t), p.graceful_ramp_down)
        if await run.sleep_until(min(t + TICK, p.end)):
            break
    await run.finish(p.graceful_stop)


EXECUTOR = Executor("ramping-vus", config=RampingVUs, profile=RampingProfile, drive=drive)
