"""Shard shares add up exactly to the totals, at every moment of every profile."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgate.engine.shard import scale_count
from loadgate.plan import Shard, plan_from_data
from loadgate.plan.profile import stage_profiles
from tests.support.helpers import one_stage_plan, ramp, scenario


@given(total=st.integers(0, 100_000), n=st.integers(1, 50), rotate=st.integers(0, 60))
def test_shares_add_up_and_indices_cover_a_prefix(total: int, n: int, rotate: int) -> None:
    shards = [Shard(i, n) for i in range(n)]
    shares = [s.share(total, rotate) for s in shards]
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1
    if total <= 2000:
        indices = sorted(
            s.global_index(k, rotate)
            for s, share in zip(shards, shares, strict=True)
            for k in range(share)
        )
        assert indices == list(range(total))


def test_shard_parse() -> None:
    assert Shard.parse("1/3") == Shard(1, 3)
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_scale_count() -> None:
    assert scale_count(10_000, 0.001) == 10
    assert scale_count(1000, 0.0001) == 1  # never scaled away
    assert scale_count(0, 5) == 0
    assert scale_count(3, 0.5) == 2  # half up


def _stage(name: str, executor: str, **fields) -> object:
    """The stage of a plan with the one scenario ``name``."""
    plan = plan_from_data(one_stage_plan({name: scenario(executor, **fields)}))
    return plan.stages["s"]


def _shards(stage, name: str, n: int, scale: float = 1, time_scale: float = 1) -> list:
    """The profiles of scenario ``name`` on each of ``n`` shards."""
    return [
        stage_profiles(stage, shard=Shard(i, n), scale=scale, time_scale=time_scale)[name]
        for i in range(n)
    ]


RAMP = ramp((10, 37), (5, 37), (7, 3), (3, 0))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 7), scale=st.sampled_from([1.0, 0.5, 3.0]), t=st.floats(0, 26))
def test_ramp_shares_add_up_at_every_moment(n: int, scale: float, t: float) -> None:
    stage = _stage("a", "ramping-vus", stages=RAMP)
    (whole,) = _shards(stage, "a", 1, scale=scale)
    parts = _shards(stage, "a", n, scale=scale)
    assert sum(p.target_at(t) for p in parts) == whole.target_at(t) == whole.total_at(t)


def test_ramp_is_linear_and_time_scaled() -> None:
    (p,) = _shards(_stage("a", "ramping-vus", stages=RAMP), "a", 1, time_scale=0.1)
    assert p.duration == pytest.approx(2.5)
    assert p.target_at(0) == 0
    assert p.target_at(0.5) == 18  # half of the first ramp (1 s scaled), rounded down going up
    assert p.target_at(1.2) == 37
    assert p.target_at(1.85) == 20  # 37 -> 3 over 0.7 s, rounded up going down
    assert p.target_at(2.5) == 0


def test_connection_ramp_interleaves_shards() -> None:
    stage = _stage("w", "connection-ramp", target=10, interval="1s", hold="5s")
    parts = _shards(stage, "w", 3)
    opens = sorted(p.opens_at(k) for p in parts for k in range(p.peak))
    assert opens == [float(i) for i in range(10)]  # one every second across shards
    assert [p.peak for p in parts] == [4, 3, 3]
    (whole,) = _shards(stage, "w", 1, scale=2, time_scale=0.5)
    assert whole.peak == 20 and whole.ramp == pytest.approx(5.0) and whole.end == pytest.approx(7.5)


def test_arrival_rate_iterations_split_exactly() -> None:
    stage = _stage(
        "r",
        "constant-arrival-rate",
        rate=50,
        time_unit="1s",
        duration="3s",
        pre_allocated_vus=5,
        max_vus=9,
    )
    (whole,) = _shards(stage, "r", 1)
    assert whole.iterations == 150
    parts = _shards(stage, "r", 4)
    assert sum(p.iterations for p in parts) == 150
    times = sorted(p.arrival_time(j) for p in parts for j in range(p.iterations))
    assert times == pytest.approx([j / 50 for j in range(150)])
    assert sum(p.shard.share(p.max_vus, p.rotate) for p in parts) == 9
