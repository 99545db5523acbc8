"""``connection-ramp``: one new long-lived connection every ``interval`` up to ``target``.

VU ``k`` starts at its slot of the ramp and runs the scenario once (the scenario holds its
connection until asked to stop); a connection that ends is not replaced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from loadgate.engine.executors.base import (
    Executor,
    PositiveSeconds,
    Profile,
    ScenarioConfig,
    Seconds,
)
from loadgate.engine.executors.driver import ScenarioRun
from loadgate.engine.shard import Shard, scale_count


class ConnectionRamp(ScenarioConfig):
    """One new long-lived connection (one VU running the scenario once) every ``interval`` up to
    ``target``, then ``hold`` before all are closed. Connections that drop are not reopened."""

    executor: Literal["connection-ramp"]
    target: int = Field(ge=0)
    interval: PositiveSeconds
    hold: Seconds
    graceful_stop: Seconds = 10.0

    @property
    def ramp(self) -> float:
        return self.target * self.interval

    @property
    def duration(self) -> float:
        return self.ramp + self.hold

    @property
    def peak(self) -> int:
        return self.target

    def build_profile(
        self, name: str, *, shard: Shard, rotate: int, scale: float, time_scale: float
    ) -> ConnectionRampProfile:
        ts = time_scale
        return ConnectionRampProfile(
            duration=(self.ramp + self.hold) * ts,
            count=scale_count(self.target, scale),
            ramp=self.ramp * ts,
            hold=self.hold * ts,
            **self.profile_fields(name, shard=shard, rotate=rotate, time_scale=ts),
        )


@dataclass(frozen=True)
class ConnectionRampProfile(Profile):
    unit: ClassVar[str] = "connection"
    once: ClassVar[bool] = True

    count: int  # scaled total connections
    ramp: float  # seconds to open them all (same for every shard)
    hold: float

    @property
    def interval(self) -> float:
        """Seconds between two openings across all shards."""
        return self.ramp / self.count if self.count else 0.0

    def opens_at(self, local: int) -> float:
        """When this shard's ``local``-th connection opens (seconds from the stage start)."""
        return self.start + self.global_index(local) * self.interval

    def total_at(self, t: float) -> int:
        if t < self.start or t >= self.end or not self.count:
            return 0
        if self.interval <= 0:
            return self.count
        return min(self.count, math.floor((t - self.start) / self.interval + 1e-9) + 1)

    @property
    def peak_total(self) -> int:
        return self.count

    def details(self) -> dict[str, Any]:
        return {
            "ramp_s": round(self.ramp, 6),
            "hold_s": round(self.hold, 6),
            "interval_total_s": round(self.interval, 9),
        }


async def drive(run: ScenarioRun, p: ConnectionRampProfile) -> None:
    count = p.peak
    for local in range(count):
        if await run.sleep_until(p.opens_at(local)):
            break
        if run.now() >= p.end:
            break
        run.spawn(local, once=True)
    else:
        await run.sleep_until(p.end)
    await run.finish(p.graceful_stop)


EXECUTOR = Executor(
    "connection-ramp", config=ConnectionRamp, profile=ConnectionRampProfile, drive=drive
)
