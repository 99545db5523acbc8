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

Each executor's config builds its profile (``build_profile``, in the executor's module of
:mod:`loadgate.engine.executors`). Every profile answers ``target_at(t)``: how many VUs
(connections) this shard should run ``t`` seconds after the stage start, the shard's share of
the scaled total at that moment; the shares of all shards add up exactly to the total at every
moment (see :mod:`loadgate.engine.shard`).
"""

from __future__ import annotations

from loadgate.engine.executors.base import Profile
from loadgate.engine.shard import Shard
from loadgate.plan.model import Stage


def stage_profiles(
    stage: Stage, *, shard: Shard, scale: float, time_scale: float
) -> dict[str, Profile]:
    """Every scenario of a stage as this shard's concrete profile, in plan order."""
    return {
        name: scen.build_profile(name, shard=shard, rotate=i, scale=scale, time_scale=time_scale)
        for i, (name, scen) in enumerate(stage.scenarios.items())
    }
