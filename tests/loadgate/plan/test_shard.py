"""Shard shares add up exactly to the totals, at every moment of every profile."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgate.plan import Shard, plan_from_data
from loadgate.plan.profile import stage_profiles
from loadgate.plan.shard import scale_count


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


def _stage(scenarios: dict) -> object:
    plan = plan_from_data({"name": "t", "stages": {"s": {"scenarios": scenarios}}})
    return plan.stages["s"]


RAMP = {
    "exec": "basic.get",
    "executor": "ramping-vus",
    "stages": [
        {"duration": 10, "target": 37},
        {"duration": 5, "target": 37},
        {"duration": 7, "target": 3},
        {"duration": 3, "target": 0},
    ],
}


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 7), scale=st.sampled_from([1.0, 0.5, 3.0]), t=st.floats(0, 26))
def test_ramp_shares_add_up_at_every_moment(n: int, scale: float, t: float) -> None:
    stage = _stage({"a": RAMP})
    whole = stage_profiles(stage, shard=Shard(0, 1), scale=scale, time_scale=1)["a"]
    parts = [
        stage_profiles(stage, shard=Shard(i, n), scale=scale, time_scale=1)["a"] for i in range(n)
    ]
    assert sum(p.target_at(t) for p in parts) == whole.target_at(t) == whole.total_at(t)


def test_ramp_is_linear_and_time_scaled() -> None:
    stage = _stage({"a": RAMP})
    p = stage_profiles(stage, shard=Shard(0, 1), scale=1, time_scale=0.1)["a"]
    assert p.duration == pytest.approx(2.5)
    assert p.target_at(0) == 0
    assert p.target_at(0.5) == 18  # half of the first ramp (1 s scaled), rounded down going up
    assert p.target_at(1.2) == 37
    assert p.target_at(1.85) == 20  # 37 -> 3 over 0.7 s, rounded up going down
    assert p.target_at(2.5) == 0


def test_connection_ramp_interleaves_shards() -> None:
    stage = _stage(
        {
            "w": {
                "exec": "basic.get",
                "executor": "connection-ramp",
                "target": 10,
                "interval": "1s",
                "hold": "5s",
            }
        }
    )
    parts = [stage_profiles(stage, shard=Shard(i, 3), scale=1, time_scale=1)["w"] for i in range(3)]
    opens = sorted(p.opens_at(k) for p in parts for k in range(p.peak))
    assert opens == [float(i) for i in range(10)]  # one every second across shards
    assert [p.peak for p in parts] == [4, 3, 3]
    whole = stage_profiles(stage, shard=Shard(0, 1), scale=2, time_scale=0.5)["w"]
    assert whole.peak == 20 and whole.ramp == pytest.approx(5.0) and whole.end == pytest.approx(7.5)


def test_arrival_rate_iterations_split_exactly() -> None:
    stage = _stage(
        {
            "r": {
                "exec": "basic.get",
                "executor": "constant-arrival-rate",
                "rate": 50,
                "time_unit": "1s",
                "duration": "3s",
                "pre_allocated_vus": 5,
                "max_vus": 9,
            }
        }
    )
    whole = stage_profiles(stage, shard=Shard(0, 1), scale=1, time_scale=1)["r"]
    assert whole.iterations == 150
    parts = [stage_profiles(stage, shard=Shard(i, 4), scale=1, time_scale=1)["r"] for i in range(4)]
    assert sum(p.iterations for p in parts) == 150
    times = sorted(p.arrival_time(j) for p in parts for j in range(p.iterations))
    assert times == pytest.approx([j / 50 for j in range(150)])
    assert sum(p.shard.share(p.max_vus, p.rotate) for p in parts) == 9
