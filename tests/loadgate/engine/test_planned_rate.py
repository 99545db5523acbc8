"""The planned request count of a closed-model scenario: the declared pacing over the VU
lifetimes the executor ran (:func:`loadgate.runner.summary.expected_requests`), against seeded
simulations of VUs that follow the pacing; the lifetimes the executors record; a short stage
against the reference service.

The simulations play VUs exactly as the executors run them: the first iteration the moment a VU
starts, none after it is asked to stop, and the iteration then running cut ``grace`` seconds
later. Their shapes are the shipped scenarios': ``api_mix`` (five requests each drawn with its
probability, then a think time uniform in [0, 3] s) and ``session_state`` (a create and 10
updates 0.5 s apart, a snapshot, then a think time uniform in [0, 2] s). Each test states the
standard deviation of the simulated total next to its tolerance; the seeds are fixed.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from loadgate.engine.executors.driver import ScenarioRun
from loadgate.engine.vu import VU, StageRuntime
from loadgate.engine.window import Recorder
from loadgate.plan import Shard, plan_from_data
from loadgate.plan.profile import stage_profiles
from loadgate.runner.summary import ASYMPTOTE_CYCLES, expected_requests, planned_requests
from loadgate.scenarios import IterationPacing, pacing_of
from tests.support.helpers import one_stage_plan, ramp, run_stage_args, scenario

from ..conftest import loadgate, summarize_json, write_plan  # type: ignore[misc]

LATENCY = 0.003  # seconds per request in the simulations (a loopback answer)
MIX = (0.2, 0.4, 0.15, 0.15, 0.1)
API = pacing_of("syncbridge.api_mix", {})
SESSION = pacing_of("syncbridge.session_state", {})

# one iteration: the offsets of its requests from its start, and its length
Iteration = Callable[[random.Random], tuple[list[float], float]]


def _api_iteration(rng: random.Random) -> tuple[list[float], float]:
    offsets = [i * LATENCY for i in range(sum(rng.random() < p for p in MIX))]
    return offsets, len(offsets) * LATENCY + rng.uniform(0.0, 3.0)


def _session_iteration(rng: random.Random) -> tuple[list[float], float]:
    # create at 0, update 0 right after it, updates 1-9 and the snapshot 0.5 s apart
    offsets = [0.0, LATENCY] + [LATENCY * (i + 2) + 0.5 * (i + 1) for i in range(10)]
    return offsets, offsets[-1] + LATENCY + rng.uniform(0.0, 2.0)


def _narrow_iteration(rng: random.Random) -> tuple[list[float], float]:
    return [0.0], LATENCY + rng.uniform(1.0, 2.0)


def _simulate(
    iteration: Iteration, lifetimes: list[tuple[float, float]], seed: int
) -> tuple[int, float]:
    """(requests sent, VU-seconds run) by VUs that lived ``[(seconds to the stop request,
    grace), ...]``."""
    rng = random.Random(seed)
    sent, vu_seconds = 0, 0.0
    for alive, grace in lifetimes:
        t, cut = 0.0, alive + grace
        while t < alive:
            offsets, length = iteration(rng)
            sent += sum(t + o < cut for o in offsets)
            t += length
        vu_seconds += min(t, cut)
    return sent, vu_seconds


def _steady(pacing: IterationPacing, vu_seconds: float) -> float:
    """The steady-state plan (requests per VU-second × VU-seconds run)."""
    return vu_seconds * pacing.requests / (pacing.idle + pacing.requests * LATENCY)


def _planned(pacing: IterationPacing, lifetimes: list[tuple[float, float]]) -> float:
    return planned_requests([[a, g, 1] for a, g in lifetimes], pacing, LATENCY)


def test_the_shipped_scenarios_declare_what_the_simulations_play() -> None:
    api, session = pacing_of("syncbridge.api_mix", {}), pacing_of("syncbridge.session_state", {})
    assert api == pytest.approx((1.0, 1.5, 0.0, 3.0 / math.sqrt(12.0)))
    assert session == pytest.approx((12.0, 6.0, 5.0, 2.0 / math.sqrt(12.0)))


def test_a_short_stage_plans_the_first_iteration_sent_at_once() -> None:
    """2,000 VUs of api_mix asked to stop 4.5 s after they start (cut 0.15 s later), 3.7
    iterations each: ~7,300 requests with a standard deviation of ~90 over seeds (1.2%: each
    iteration's request count varies by 0.86, each VU's iteration count by ~0.7), so 4% is
    over 3 of them. The steady-state plan misses them by ~19%: every VU starts with an
    iteration and thinks afterwards, which the VU-seconds do not see."""
    lifetimes = [(4.5, 0.15)] * 2000
    sent, vu_seconds = _simulate(_api_iteration, lifetimes, seed=1)
    assert sent == pytest.approx(_planned(API, lifetimes), rel=0.04)
    assert sent > 1.15 * _steady(API, vu_seconds)


def test_a_stage_shorter_than_an_iteration_plans_the_requests_due_before_the_cut() -> None:
    """session_state at time_scale 0.005: VUs stopped 4.5 s into a 6 s iteration, cut 0.15 s
    later, have sent the create and 10 updates, never the snapshot: 11 of 12 requests (the
    think time comes after them all: no variation). Planned: the create at once and of the
    other 11, spread over 5 s, what 4.65 s cover: 11.2. Planned as if the iteration's requests
    were all sent at its start (no spread), it would be 12: 9% over."""
    lifetimes = [(4.5, 0.15)] * 500
    sent, vu_seconds = _simulate(_session_iteration, lifetimes, seed=2)
    assert sent == 500 * 11
    planned = _planned(SESSION, lifetimes)
    assert planned == pytest.approx(sent, rel=0.03)
    assert _planned(SESSION._replace(spread=0.0), lifetimes) > 1.08 * sent
    assert sent > 1.15 * _steady(SESSION, vu_seconds)


@pytest.mark.parametrize(("alive", "grace"), [(18.0, 0.6), (90.0, 3.0)])
def test_longer_session_stages_plan_the_iterations_and_the_cut(alive: float, grace: float) -> None:
    """session_state at time_scale 0.02 (18 s, 3 iterations and ~half of a fourth) and 0.1
    (90 s, ~15): 500 VUs. What varies is the think time (σ 0.58 s a cycle): whether the 4th (or
    16th) iteration starts before the stop, and how much of it is sent before the cut. Its
    standard deviation in the total is under 0.5%; 3% covers the normal approximation of the
    iteration starts too."""
    lifetimes = [(alive, grace)] * 500
    sent, _ = _simulate(_session_iteration, lifetimes, seed=3)
    assert sent == pytest.approx(_planned(SESSION, lifetimes), rel=0.03)


def test_a_ramp_of_lifetimes_is_planned_vu_by_vu() -> None:
    """1,000 api_mix VUs whose lifetimes spread evenly over 0.3-13 s (a compressed ramp up and
    down), each cut 0.15 s after its stop: ~5,100 requests, standard deviation ~70 over seeds
    (1.4%): 4% is about 3 of them. The steady-state plan misses them by ~13%."""
    lifetimes = [(0.3 + 12.7 * i / 999, 0.15) for i in range(1000)]
    sent, vu_seconds = _simulate(_api_iteration, lifetimes, seed=4)
    assert sent == pytest.approx(_planned(API, lifetimes), rel=0.04)
    assert sent > 1.08 * _steady(API, vu_seconds)


def test_a_long_stage_plans_the_steady_state() -> None:
    """200 api_mix VUs for 10 minutes (~400 iterations each): the plan is the steady state
    within 0.5% (the first iteration is 1/400 of a VU's), and the simulation's ~80,000
    requests (standard deviation ~260 over seeds, 0.3%) match it within 2%."""
    lifetimes = [(600.0, 30.0)] * 200
    sent, vu_seconds = _simulate(_api_iteration, lifetimes, seed=5)
    planned = _planned(API, lifetimes)
    assert planned == pytest.approx(_steady(API, vu_seconds), rel=0.005)
    assert sent == pytest.approx(planned, rel=0.02)


def test_the_declared_standard_deviation_keeps_a_narrow_think_time_in_step() -> None:
    """One request, then a think time uniform in [1, 2] s; VUs stopped 1 s after their start
    send exactly one request (no second iteration can start before 1 s). Declared with its
    standard deviation (1 / √12) the plan says 1.0; left undeclared, the think time is taken
    as uniform from 0 (σ = 1.5 / √3) and a second iteration looks 28% likely."""
    narrow = IterationPacing(1.0, 1.5, 0.0, 1.0 / math.sqrt(12.0))
    lifetimes = [(1.0, 0.05)] * 200
    sent, _ = _simulate(_narrow_iteration, lifetimes, seed=6)
    assert sent == 200
    assert _planned(narrow, lifetimes) == pytest.approx(200, rel=0.01)
    assert _planned(narrow._replace(idle_sd=None), lifetimes) > 1.2 * 200


def test_the_plan_is_continuous_where_the_asymptote_takes_over() -> None:
    for pacing in (API, SESSION, IterationPacing(1.0, 0.75), IterationPacing(3.0, 2.0, 1.0, 0.1)):
        cycle = pacing.idle + pacing.requests * LATENCY
        edge = ASYMPTOTE_CYCLES * cycle
        for grace in (0.0, 0.6, 30.0):
            below = expected_requests(edge * (1 - 1e-9), grace, pacing, LATENCY)
            above = expected_requests(edge * (1 + 1e-9), grace, pacing, LATENCY)
            # the exact sum and the asymptote: within a hundredth of an iteration
            assert above == pytest.approx(below, abs=0.01 * pacing.requests), (pacing, grace)
    # a cycle that never varies starts ceil(alive / c) iterations, however long the VU lives
    fixed = IterationPacing(2.0, 0.0)
    cycle = 2 * LATENCY
    for cycles in (3, 30, 3000):
        for alive, started in ((cycles - 1e-6, cycles), (cycles + 1e-6, cycles + 1)):
            planned = expected_requests(alive * cycle, 0.0, fixed, LATENCY)
            assert planned == pytest.approx(2 * started), (alive, planned)
    # and with its requests spread, the last iteration's share due before the cut: its first
    # request, and of the other two what the 0.491 s to the cut cover of their 1.006 s
    spread = IterationPacing(3.0, 2.0, 1.0, 0.0)  # a 2.009 s cycle
    assert expected_requests(2.5, 0.0, spread, LATENCY) == pytest.approx(
        3.0 + 1.0 + 2.0 * (2.5 - 2.009) / 1.006
    )


def test_a_vu_runs_its_first_iteration_and_a_once_vu_only_that() -> None:
    # asked to stop at once: its first iteration still started, and sent what the grace allows
    # (a second one starting within 1 ms: 1 chance in 3,000, and the normal tail of a third)
    assert expected_requests(0.001, 0.0, API, LATENCY) == pytest.approx(1.0, abs=0.01)
    assert expected_requests(0.001, 10.0, SESSION, LATENCY) == pytest.approx(12.0)
    # the create at once, the other 11 over the 5 s of updates (and 11 latencies)
    assert expected_requests(0.001, 2.5, SESSION, LATENCY) == pytest.approx(
        1.0 + 11.0 * 2.501 / (5.0 + 11 * LATENCY)
    )
    assert expected_requests(0.0, 1.0, API, LATENCY) == 0.0  # never started
    # a connection-ramp VU runs one iteration however long it lives
    assert expected_requests(100.0, 1.0, API, LATENCY, once=True) == pytest.approx(1.0)
    rows = [[100.0, 1.0, 3], [2.0, 0.0, 2]]
    assert planned_requests(rows, API, LATENCY, once=True) == pytest.approx(5.0)


# --- the lifetimes the executors record ------------------------------------------------------

NAME = "s"


def _profile(executor: str, **fields):
    plan = plan_from_data(one_stage_plan({NAME: scenario(executor, **fields)}))
    return stage_profiles(plan.stages["s"], shard=Shard(0, 1), scale=1, time_scale=1.0)[NAME]


def _runtime() -> StageRuntime:
    return StageRuntime(
        base_url="http://127.0.0.1:9",  # nothing is sent
        recorder=Recorder(0),
        time_scale=1.0,
        run_id="t",
        shard_index=0,
        users=[],
    )


async def _pause(vu: VU) -> None:
    await vu.sleep(vu.options.get("pause", 0.02))


def _lifetimes(profile, options=None, hard_stop_after_stop: bool = False) -> list[list[float]]:
    async def body() -> list[list[float]]:
        loop = asyncio.get_running_loop()
        run = ScenarioRun(NAME, _pause, profile, options or {}, _runtime(), loop.time())
        task = asyncio.create_task(run.run())
        if hard_stop_after_stop:
            while not run._lives or any(life.stopped is None for life in run._lives.values()):
                await asyncio.sleep(0.01)
            await asyncio.wait(run.cancel_all())
        await task
        rows = run.lifetimes()
        assert rows is not None
        return rows

    return asyncio.run(body())


def test_constant_vus_record_their_time_to_the_stop_and_its_grace() -> None:
    profile = _profile("constant-vus", vus=4, duration=0.3, graceful_stop="0.2s")
    rows = _lifetimes(profile)
    assert sum(n for _, _, n in rows) == 4
    # asked to stop at the scenario's end (0.3 s), never before; the grace is the plan's
    assert all(alive >= 0.29 and grace == 0.2 for alive, grace, _ in rows), rows


def test_a_ramp_down_gives_its_grace_and_the_end_the_graceful_stop() -> None:
    stages = ramp((0.05, 4), (0.2, 4), (0.05, 2), (0.2, 2))
    profile = _profile(
        "ramping-vus", graceful_ramp_down="0.3s", graceful_stop="0.1s", stages=stages
    )
    rows = _lifetimes(profile)
    by_grace: dict[float, int] = {}
    for _, grace, n in rows:
        by_grace[grace] = by_grace.get(grace, 0) + n
    assert by_grace == {0.3: 2, 0.1: 2}, rows  # two stopped by the ramp down, two at the end


def test_a_hard_stop_ends_the_grace_it_cuts_short() -> None:
    # iterations of 10 s, a grace of 5 s: the hard stop comes as soon as every VU was asked to
    # stop, so the grace they had is what ran of it, not the plan's 5 s
    profile = _profile("constant-vus", vus=2, duration=0.1, graceful_stop="5s")
    rows = _lifetimes(profile, options={"pause": 10.0}, hard_stop_after_stop=True)
    assert sum(n for _, _, n in rows) == 2
    assert all(grace < 5.0 for _, grace, _ in rows), rows


def test_an_arrival_rate_scenario_records_no_lifetimes() -> None:
    profile = _profile("constant-arrival-rate", rate=20, duration=0.2, pre_allocated_vus=2)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        run = ScenarioRun(NAME, _pause, profile, {}, _runtime(), loop.time())
        await run.run()
        assert run.lifetimes() is None  # planned from its schedule

    asyncio.run(body())


# --- a short stage against the reference service ---------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_stage_shorter_than_two_iterations_is_planned_from_the_lifetimes(
    syncbridge_service, tmp_path: Path
) -> None:
    """100 VUs for 1 s (20 s at T=0.05), one request then a think time uniform in [0, 3] s, a
    grace of 0.05 s: each VU sends e^(1/3) = 1.40 requests on average (its first at once, a
    second when its first think is under 1 s, ...), ~140 in all with a standard deviation of
    ~5 (4%: the run id is fixed, so the think times are too). The plan from the lifetimes
    matches within 15%; the steady state over the VU-seconds (~105) would plan ~70, half."""
    probe = scenario(
        "constant-vus",
        vus=100,
        duration="20s",
        graceful_stop="1s",
        options={"path": "/healthz", "think_time": [0, 3]},
    )
    plan = write_plan(tmp_path, one_stage_plan({"probe": probe}, name="short"))
    out = tmp_path / "out"
    args = run_stage_args(
        plan, "s", syncbridge_service.url, out, time_scale="0.05", run_id="short", quiet=True
    )
    proc = loadgate(*args)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "meta.json").read_text())
    rows = meta["vu_lifetimes"]["probe"]
    assert sum(n for _, _, n in rows) == 100
    assert all(alive >= 0.99 and grace == 0.05 for alive, grace, _ in rows), rows
    summary = summarize_json(out)
    probe_rates = summary["rates"]["by_scenario"]["probe"]
    assert probe_rates["planned_from"] == "vu lifetimes"
    assert summary["failed"] == 0
    assert summary["rates"]["offered_vs_planned"] == pytest.approx(1.0, rel=0.15)
    steady = probe_rates["vu_seconds"] / 1.5 / summary["rates"]["seconds"]
    assert summary["rates"]["offered"] > 1.6 * steady
