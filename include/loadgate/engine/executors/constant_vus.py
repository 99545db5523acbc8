"""``constant-vus`` (k6's): the VUs from ``start`` to ``start + duration``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from loadgate.engine.executors.base import (
    Executor,
    PositiveSeconds,
    Profile,
    ScenarioConfig,
)
from loadgate.engine.executors.driver import ScenarioRun
from loadgate.engine.shard import Shard, scale_count


class ConstantVUs(ScenarioConfig):
    executor: Literal["constant-vus"]
    vus: int = Field(ge=0)
    duration: PositiveSeconds

    @property
    def peak(self) -> int:
        return self.vus

    def build_profile(
        self, name: str, *, shard: Shard, rotate: int, scale: float, time_scale: float
    ) -> ConstantProfile:
        return ConstantProfile(
            duration=self.duration * time_scale,
            vus=scale_count(self.vus, scale),
            **self.profile_fields(name, shard=shard, rotate=rotate, time_scale=time_scale),
        )


@dataclass(frozen=True)
class ConstantProfile(Profile):
    vus: int

    def total_at(self, t: float) -> int:
        return self.vus if self.start <= t < self.end else 0

    @property
    def peak_total(self) -> int:
        return self.vus


async def drive(run: ScenarioRun, p: ConstantProfile) -> None:
    if not await run.sleep_until(p.start):
        run.resize(p.target_at(p.start), 0.0)
        await run.sleep_until(p.end)
    await run.finish(p.graceful_stop)


EXECUTOR = Executor("constant-vus", config=ConstantVUs, profile=ConstantProfile, drive=drive)
