"""``--time-scale`` shortens every profile's schedule and leaves the plan's pacing alone."""

from __future__ import annotations

import pytest

from loadgate.plan import Shard, plan_from_data
from loadgate.plan.profile import stage_profiles
from tests.support.helpers import one_stage_plan, ramp, scenario


def _profile(time_scale: float, executor: str, scale: float = 1.0, **fields):
    plan = plan_from_data(one_stage_plan({"x": scenario(executor, **fields)}))
    return stage_profiles(plan.stages["s"], shard=Shard(), scale=scale, time_scale=time_scale)["x"]


ARRIVAL = {"rate": 30, "time_unit": "1m", "duration": "10m", "pre_allocated_vus": 5}


@pytest.mark.parametrize("time_scale", [1.0, 0.1, 0.005])
def test_arrival_rate_does_not_depend_on_the_time_scale(time_scale: float) -> None:
    p = _profile(time_scale, "constant-arrival-rate", scale=2.0, **ARRIVAL)
    assert p.rate_total == pytest.approx(1.0)  # 30 a minute × scale 2, at any time scale
    assert p.arrival_time(1) - p.arrival_time(0) == pytest.approx(1.0)
    assert p.duration == pytest.approx(600 * time_scale)
    assert p.iterations_total == round(600 * time_scale)  # the total shrinks with the schedule
    assert p.describe()["rate_total_per_s"] == pytest.approx(1.0)


def test_durations_start_times_and_stops_still_scale() -> None:
    ramping = _profile(
        0.1,
        "ramping-vus",
        stages=ramp(("20s", 10), ("40s", 10)),
        start_time="30s",
        graceful_stop="10s",
        graceful_ramp_down="5s",
    )
    assert ramping.start == pytest.approx(3.0) and ramping.duration == pytest.approx(6.0)
    assert [d for d, _ in ramping.stages] == pytest.approx([2.0, 4.0])
    assert ramping.graceful_stop == pytest.approx(1.0)
    assert ramping.graceful_ramp_down == pytest.approx(0.5)
    constant = _profile(0.02, "constant-vus", vus=4, duration="5m", start_time="2m")
    assert constant.start == pytest.approx(2.4) and constant.duration == pytest.approx(6.0)
    held = _profile(0.01, "connection-ramp", target=100, interval="100ms", hold="10m")
    assert held.ramp == pytest.approx(0.1) and held.hold == pytest.approx(6.0)
    assert held.graceful_stop == pytest.approx(0.1)  # the executor's default 10 s, scaled


def test_a_profile_carries_its_scenario_and_options_for_the_planned_rate() -> None:
    p = _profile(0.5, "constant-vus", vus=2, duration="4s", options={"think_time": [1, 2]})
    described = p.describe()
    assert described["exec"] == "basic.get"
    assert described["options"] == {"think_time": [1, 2]}  # as the plan says, never scaled
