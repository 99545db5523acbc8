"""``--time-scale`` compresses the schedule, never a user's pacing; the summary's planned,
offered and achieved request rates. Units on the VU context; stages against the real reference
service on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from loadgate.engine.vu import VU, StageRuntime
from loadgate.engine.window import Recorder
from tests.support.aio import run
from tests.support.helpers import one_stage_plan, run_stage_args, scenario

from ..conftest import loadgate, summarize_json, write_plan  # type: ignore[misc]

pytestmark = pytest.mark.timeout(60)


def _vu(time_scale: float) -> VU:
    rt = StageRuntime(
        base_url="http://127.0.0.1:9",  # nothing is sent
        recorder=Recorder(0),
        time_scale=time_scale,
        run_id="t",
        shard_index=0,
        users=[],
    )
    return VU(rt, scenario="s", vu_id=0, local_id=0, options={})


@pytest.mark.parametrize("time_scale", [1.0, 0.01])
def test_sleep_lasts_the_plan_seconds_whatever_the_time_scale(time_scale: float) -> None:
    async def body() -> None:
        vu = _vu(time_scale)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await vu.sleep(0.2)
        plain = loop.time() - t0
        t0 = loop.time()
        assert await vu.sleep(0.2, interruptible=True)
        interruptible = loop.time() - t0
        # 0.2 s at any time scale (the old rule slept 0.002 s at 0.01)
        assert 0.19 <= plain < 0.6 and 0.19 <= interruptible < 0.6
        assert vu.time_scale == time_scale  # still readable by a scenario
        vu.close()

    run(body())


@pytest.mark.parametrize("time_scale", [1.0, 0.01])
def test_every_fires_on_the_plan_interval_whatever_the_time_scale(time_scale: float) -> None:
    async def body() -> None:
        vu = _vu(time_scale)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        calls: list[float] = []
        vu.every(0.1, lambda: calls.append(loop.time() - t0))
        first: list[float] = []
        vu.every(10.0, lambda: first.append(loop.time() - t0), first=0.15)
        await asyncio.sleep(0.35)
        vu.close()
        # due at 0.1, 0.2 and 0.3 s (the old rule: every 1 ms at 0.01, some 350 calls)
        assert 2 <= len(calls) <= 4, calls
        # the k-th call is due at k x 0.1 s (fixed rate: a late call does not push the next
        # one back, so gaps may be shorter under load; none comes early)
        assert all(t >= 0.1 * k - 0.002 for k, t in enumerate(calls, 1)), calls
        assert len(first) == 1 and first[0] >= 0.14  # ``first`` is not scaled either
        vu._rt.close()

    run(body())


# --- stages against the reference service ----------------------------------------------------

VUS = 10
THINK = (0.5, 1.0)  # uniform: mean 0.75 s, standard deviation 0.144 s


def _closed_plan(tmp_path: Path) -> Path:
    probe = scenario(
        "constant-vus",
        vus=VUS,
        duration="50s",
        # scaled like every stop: 3 s at 0.1 and 1.5 s at 0.05, longer than any think time,
        # so every VU ends its last iteration whole
        graceful_stop="30s",
        options={"path": "/healthz", "think_time": list(THINK)},
    )
    return write_plan(tmp_path, one_stage_plan({"probe": probe}, name="pacing"))


def _run(plan: Path, url: str, out: Path, time_scale: str, run_id: str) -> dict:
    proc = loadgate(
        *run_stage_args(plan, "s", url, out, time_scale=time_scale, run_id=run_id, quiet=True)
    )
    assert proc.returncode == 0, proc.stderr
    return summarize_json(out)


@pytest.mark.slow
def test_requests_per_vu_second_do_not_depend_on_the_time_scale(
    syncbridge_service, tmp_path: Path
) -> None:
    """The same stage played in 5 s (T=0.1) and in 2.5 s (T=0.05): the same requests per
    VU-second, and the planned rate (the declared pacing over the VUs run, with the measured
    latency) within 10% of the achieved one.

    Why 20% and 10%: a VU's iteration lasts its think time (uniform 0.5-1 s: coefficient of
    variation 0.19) plus a loopback latency of about a millisecond, and each VU ends its last
    iteration whole, so a run's requests per VU-second is 1 / (the mean iteration length). Over
    n iterations that mean has a relative standard deviation of 0.19 / sqrt(n): about 3% for
    the ~37 iterations at T=0.05 and 2% for the ~75 at T=0.1, so the two runs differ by 4% at
    one standard deviation (20% is 5 of them) and each run's achieved rate departs from the
    plan's by 3% at one (10% is over 3). The run id is fixed, so both runs draw the same think
    times (seeded per VU) and the margins hold for any seed. The old rule (think times × T)
    would have sent twice as fast at T=0.05 as at T=0.1: a difference of 100%."""
    url = syncbridge_service.url
    plan = _closed_plan(tmp_path)
    per_vu_s = {}
    for time_scale, stage_s in (("0.1", 5.0), ("0.05", 2.5)):
        summary = _run(plan, url, tmp_path / time_scale, time_scale, "pacing-seeds")
        assert summary["failed"] == 0 and summary["max_vus"] == VUS
        rates = summary["rates"]
        probe = rates["by_scenario"]["probe"]
        assert probe["pacing"] == pytest.approx(
            {
                "requests_per_iteration": 1.0,
                "idle_s": 0.75,
                "spread_s": 0.0,
                "idle_sd_s": 0.5 / 12**0.5,  # uniform in [0.5, 1] s
            },
            abs=1e-4,
        )
        assert probe["planned_from"] == "vu lifetimes"
        # every VU for the whole stage, and at most its last iteration longer
        assert VUS * stage_s * 0.97 <= probe["vu_seconds"] <= VUS * (stage_s + THINK[1] + 0.3)
        assert rates["offered"] == rates["achieved"] > 0  # all answered, none stopped
        lag_s = summary["generator"]["lag_p99_ms"] / 1000
        assert_paced(rates["achieved"], rates["planned"], lag_s)
        assert_paced(rates["offered_vs_planned"], 1.0, lag_s)
        per_vu_s[time_scale] = probe["achieved_per_vu_s"]
        # the plan's pacing: one request per 0.75 s of think time and a loopback round trip
        assert_paced(per_vu_s[time_scale], 1 / 0.75, lag_s)
    assert per_vu_s["0.05"] == pytest.approx(per_vu_s["0.1"], rel=0.20)


def assert_paced(measured: float, expected: float, lag_s: float) -> None:
    """``measured`` within 10% of ``expected`` (over 3 standard deviations, as above), less
    what a late event loop takes: when the machine is busy (other tests on its 2 cores) each
    sleep wakes up late by the loop's lag, which stretches every iteration of 0.75 s and only
    ever lowers the rate, at most by the lag's 99th percentile per iteration."""
    stretch = 0.75 / (0.75 + lag_s)
    assert expected * 0.90 * stretch <= measured <= expected * 1.10, (measured, expected, lag_s)


@pytest.mark.slow
def test_arrival_rate_keeps_its_rate_and_dropped_iterations_count_as_offered(
    syncbridge_service, tmp_path: Path
) -> None:
    """20 iterations a second for 20 s played at T=0.1: still 20 a second (40 in 2 s, not
    400). One VU that thinks 0.2 s per iteration serves one arrival in four; the rest are
    dropped, offered but never sent, so offered matches the plan exactly while achieved falls
    short of it."""
    probe = scenario(
        "constant-arrival-rate",
        rate=20,
        duration="20s",
        pre_allocated_vus=1,
        max_vus=1,
        options={"path": "/healthz", "think_time": [0.2, 0.2]},
    )
    plan = write_plan(tmp_path, one_stage_plan({"probe": probe}, name="open"))
    out = tmp_path / "out"
    summary = _run(plan, syncbridge_service.url, out, "0.1", "open-model")
    meta = json.loads((out / "meta.json").read_text())
    described = meta["scenarios"]["probe"]
    assert described["rate_total_per_s"] == 20 and described["iterations_total"] == 40
    assert described["duration_s"] == pytest.approx(2.0)
    served, dropped = summary["iterations"], summary["dropped_iterations"]
    assert served + dropped == 40 and dropped >= 20 and served == summary["requests"]
    rates = summary["rates"]
    assert rates["offered_vs_planned"] == pytest.approx(1.0)  # 40 offered of 40 planned
    assert rates["achieved"] == pytest.approx(rates["offered"] * served / 40, rel=1e-3)
    assert rates["achieved"] < 0.6 * rates["offered"]
