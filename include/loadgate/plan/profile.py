"""Concrete per-shard load profiles: a plan scenario with ``--scale``, ``--time-scale`` and
``--shard`` applied.

``--scale S`` multiplies VUs, connections and arrival rates (a non-zero count stays at least 1).
``--time-scale T`` compresses the schedule, never a user's pacing: it multiplies the durations
of ramps, holds and stages, start offsets and graceful stops, and nothing else. Think times,
heartbeat and update intervals stay as the plan says (``vu.sleep`` and ``vu.every`` are not
scaled), and a constant-arrival-rate scenario keeps its rate (× S), so the request rate follows
the number of users whatever T is; a shorter schedule only sends fewer requests in total (an
arrival-rate scenario runs rate × S × duration × T iterations). Criteria windows are not
scaled either: they are measurement windows in real seconds.

Every profile answers ``target_at(t)``: how many VUs (connections) this shard should run ``t``
seconds after the stage start, the shard's share of the scaled total at that moment; the shares
of all shards add up exactly to the total at every moment (see :mod:`loadgate.engine.shard`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loadgate.engine.shard import Shard, scale_count
from loadgate.plan.model import (
    ConnectionRamp,
    ConstantArrivalRate,
    ConstantVUs,
    RampingVUs,
    Stage,
)


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str
    start: float
    duration: float
    graceful_stop: float
    shard: Shard
    rotate: int
    # the plan's scenario function and options: the results carry them, so that a summary can
    # read the scenario's declared pacing (loadgate.scenarios.declared_pacing) for its plan rate
    exec_ref: str = field(default="", kw_only=True)
    options: Mapping[str, Any] = field(default_factory=dict, kw_only=True, hash=False)

    @property
    def end(self) -> float:
        return self.start + self.duration

    def total_at(self, t: float) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def target_at(self, t: float) -> int:
        return self.shard.share(self.total_at(t), self.rotate)

    def global_index(self, local: int) -> int:
        return self.shard.global_index(local, self.rotate)

    @property
    def peak_total(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def peak(self) -> int:
        return self.shard.share(self.peak_total, self.rotate)

    def describe(self) -> dict[str, Any]:
        return {
            "executor": self.kind,
            "start_s": round(self.start, 6),
            "duration_s": round(self.duration, 6),
            "graceful_stop_s": round(self.graceful_stop, 6),
            "peak_total": self.peak_total,
            "peak_this_shard": self.peak,
            "exec": self.exec_ref,
            "options": dict(self.options),
        }


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
    def peak_total(self) -> int:
        return max([self.start_vus, *(target for _, target in self.stages)])

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["stages"] = [
            {"duration_s": round(d, 6), "target_total": tgt, "target_this_shard": self._share(tgt)}
            for d, tgt in self.stages
        ]
        out["graceful_ramp_down_s"] = round(self.graceful_ramp_down, 6)
        return out

    def _share(self, total: int) -> int:
        return self.shard.share(total, self.rotate)


@dataclass(frozen=True)
class ConstantProfile(Profile):
    vus: int

    def total_at(self, t: float) -> int:
        return self.vus if self.start <= t < self.end else 0

    @property
    def peak_total(self) -> int:
        return self.vus


@dataclass(frozen=True)
class ConnectionRampProfile(Profile):
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

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            ramp_s=round(self.ramp, 6),
            hold_s=round(self.hold, 6),
            interval_total_s=round(self.interval, 9),
        )
        return out


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
        return self.shard.share(self.iterations_total, self.rotate)

    def total_at(self, t: float) -> int:
        return self.pre_allocated if self.start <= t < self.end else 0

    @property
    def peak_total(self) -> int:
        return self.max_vus

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            rate_total_per_s=self.rate_total,
            rate_this_shard_per_s=self.rate_total * self.iterations / self.iterations_total
            if self.iterations_total
            else 0.0,
            iterations_total=self.iterations_total,
            iterations_this_shard=self.iterations,
            pre_allocated_vus_this_shard=self.shard.share(self.pre_allocated, self.rotate),
            max_vus_this_shard=self.shard.share(self.max_vus, self.rotate),
        )
        return out


def build_profile(
    name: str,
    scenario: Any,
    *,
    shard: Shard,
    rotate: int,
    scale: float,
    time_scale: float,
) -> Profile:
    """The concrete profile of one plan scenario for one shard."""
    ts = time_scale
    common = {
        "name": name,
        "kind": scenario.executor,
        "start": scenario.start_time * ts,
        "graceful_stop": scenario.graceful_stop * ts,
        "shard": shard,
        "rotate": rotate,
        "exec_ref": scenario.exec,
        "options": scenario.options,
    }
    if isinstance(scenario, RampingVUs):
        stages = tuple((s.duration * ts, scale_count(s.target, scale)) for s in scenario.stages)
        return RampingProfile(
            duration=sum(d for d, _ in stages),
            start_vus=scale_count(scenario.start_vus, scale),
            stages=stages,
            graceful_ramp_down=scenario.graceful_ramp_down * ts,
            **common,
        )
    if isinstance(scenario, ConstantVUs):
        return ConstantProfile(
            duration=scenario.duration * ts, vus=scale_count(scenario.vus, scale), **common
        )
    if isinstance(scenario, ConnectionRamp):
        return ConnectionRampProfile(
            duration=(scenario.ramp + scenario.hold) * ts,
            count=scale_count(scenario.target, scale),
            ramp=scenario.ramp * ts,
            hold=scenario.hold * ts,
            **common,
        )
    if isinstance(scenario, ConstantArrivalRate):
        duration = scenario.duration * ts
        rate = scenario.rate / scenario.time_unit * scale  # pacing: never × or / time scale
        pre = scale_count(scenario.pre_allocated_vus, scale)
        max_vus = max(pre, scale_count(scenario.max_vus or scenario.pre_allocated_vus, scale))
        return ArrivalProfile(
            duration=duration,
            rate_total=rate,
            pre_allocated=pre,
            max_vus=max_vus,
            iterations_total=math.ceil(rate * duration - 1e-9),
            **common,
        )
    raise TypeError(f"unknown scenario type {type(scenario).__name__}")


def stage_profiles(
    stage: Stage, *, shard: Shard, scale: float, time_scale: float
) -> dict[str, Profile]:
    """Every scenario of a stage as this shard's concrete profile, in plan order."""
    return {
        name: build_profile(name, scen, shard=shard, rotate=i, scale=scale, time_scale=time_scale)
        for i, (name, scen) in enumerate(stage.scenarios.items())
    }
