"""Each executor's VU curve follows its profile (no network: the scenario only sleeps)."""

from __future__ import annotations

import asyncio

import pytest

from loadgate.engine.executors.driver import ScenarioRun
from loadgate.engine.vu import VU, StageRuntime
from loadgate.engine.window import Recorder
from loadgate.plan import Shard, plan_from_data
from loadgate.plan.profile import stage_profiles
from tests.support.helpers import assert_follows, one_stage_plan, ramp, scenario

NAME = "s"


ONE = Shard(0, 1)


def _profile(executor: str, shard: Shard = ONE, **fields):
    """The profile of the scenario ``executor`` with ``fields``, alone in its stage."""
    plan = plan_from_data(one_stage_plan({NAME: scenario(executor, **fields)}))
    return stage_profiles(plan.stages["s"], shard=shard, scale=1, time_scale=1.0)[NAME]


async def _sleeper(vu: VU) -> None:
    await vu.sleep(vu.options.get("pause", 0.02))


async def _run(profile, fn=_sleeper, options=None, probe_every=0.02, stop_at=None):
    loop = asyncio.get_running_loop()
    rec = Recorder(0)
    rt = StageRuntime(
        base_url="http://127.0.0.1:9",
        recorder=rec,
        time_scale=1.0,
        run_id="t",
        shard_index=0,
        users=[],
    )
    t0 = loop.time()
    run = ScenarioRun(NAME, fn, profile, options or {}, rt, t0)
    samples: list[tuple[float, int]] = []

    async def probe():
        while True:
            samples.append((loop.time() - t0, rec.vus(NAME)))
            await asyncio.sleep(probe_every)

    task = asyncio.create_task(probe())
    if stop_at is not None:
        loop.call_later(stop_at, run.request_stop, 0.2)
    await run.run()
    task.cancel()
    assert rec.vus(NAME) == 0  # every VU is gone at the end
    return samples, rec.window


def test_ramping_vus_follow_the_ramp() -> None:
    profile = _profile(
        "ramping-vus",
        graceful_ramp_down="0.1s",
        stages=ramp((0.6, 20), (0.4, 20), (0.5, 5), (0.3, 0)),
    )
    samples, win = asyncio.run(_run(profile))
    assert_follows(samples, profile, slack=0.08)
    assert max(n for _, n in samples) == 20
    assert sum(win.iterations.values()) > 100


def test_graceful_ramp_down_lets_iterations_finish() -> None:
    stages = ramp((0.05, 4), (0.3, 4), (0.05, 0))
    profile = _profile("ramping-vus", graceful_ramp_down="1s", stages=stages)
    _samples, win = asyncio.run(_run(profile, options={"pause": 0.25}))
    assert not win.interrupted  # every iteration finished within the ramp-down grace
    short = _profile(
        "ramping-vus", graceful_ramp_down="0.01s", graceful_stop="0.01s", stages=stages
    )
    _, win = asyncio.run(_run(short, options={"pause": 5}))
    assert win.interrupted.get(NAME) == 4  # cut off: counted as interrupted


def test_constant_vus_with_start_offset() -> None:
    profile = _profile("constant-vus", vus=7, duration=0.5, start_time=0.3)
    samples, _ = asyncio.run(_run(profile))
    assert_follows(samples, profile, slack=0.08)
    assert all(n == 0 for t, n in samples if t < 0.25)
    assert all(n == 7 for t, n in samples if 0.4 < t < 0.75)


async def _hold(vu: VU) -> None:
    while await vu.sleep(0.5, interruptible=True):
        pass


def test_connection_ramp_opens_one_per_interval_and_holds() -> None:
    profile = _profile(
        "connection-ramp", target=10, interval="50ms", hold="0.4s", graceful_stop="0.2s"
    )
    samples, win = asyncio.run(_run(profile, fn=_hold, probe_every=0.01))
    assert_follows(samples, profile, slack=0.03)
    assert max(n for _, n in samples) == 10
    assert not win.interrupted  # the holders noticed the stop


def test_connection_ramp_shards_interleave() -> None:
    scen = {"target": 6, "interval": "0.1s", "hold": "0.1s"}
    starts: list[tuple[int, float]] = []

    async def note(vu: VU) -> None:
        starts.append((vu.id, asyncio.get_running_loop().time()))

    async def both():
        t0 = asyncio.get_running_loop().time()
        await asyncio.gather(
            *(_run(_profile("connection-ramp", Shard(i, 2), **scen), fn=note) for i in range(2))
        )
        return t0

    t0 = asyncio.run(both())
    ids = [vu_id for vu_id, _ in sorted(starts, key=lambda s: s[1])]
    assert ids == [0, 1, 2, 3, 4, 5]
    assert [round(t - t0, 1) for _, t in sorted(starts, key=lambda s: s[1])] == pytest.approx(
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], abs=0.06
    )


@pytest.mark.slow
def test_arrival_rate_is_open_and_counts_dropped() -> None:
    # iterations of 1 ms at 100/s: every one starts, the pool grown as needed. The pool may grow
    # to 50 so that a stall of this process (the arrivals due meanwhile start at once, a VU
    # each) finds a VU for each: with 5, a busy suite's stall dropped 3 of 100
    roomy = _profile("constant-arrival-rate", rate=100, duration=1, pre_allocated_vus=2, max_vus=50)
    _, win = asyncio.run(_run(roomy, options={"pause": 0.001}))
    assert win.iterations[NAME] == 100 and not win.dropped
    # iterations of 0.2 s at 100/s need 20 VUs; with 5, most of them cannot start
    profile = _profile(
        "constant-arrival-rate", rate=100, duration=1, pre_allocated_vus=2, max_vus=5
    )
    _, win = asyncio.run(_run(profile, options={"pause": 0.2}))
    started = win.iterations.get(NAME, 0) + win.interrupted.get(NAME, 0)
    assert started + win.dropped[NAME] == 100
    assert 20 <= started <= 35 and win.dropped[NAME] >= 65


def test_graceful_stop_request_ends_a_scenario_early() -> None:
    profile = _profile("constant-vus", vus=3, duration=30)
    loop_time = []

    async def go():
        t = asyncio.get_running_loop().time()
        await _run(profile, stop_at=0.3)
        loop_time.append(asyncio.get_running_loop().time() - t)

    asyncio.run(go())
    assert loop_time[0] < 1.0


def test_a_failing_scenario_is_counted_not_fatal() -> None:
    async def boom(vu: VU) -> None:
        raise RuntimeError("scenario bug")

    profile = _profile("constant-vus", vus=2, duration=0.3)
    _, win = asyncio.run(_run(profile, fn=boom))
    assert win.iteration_errors[NAME] >= 4 and not win.iterations
