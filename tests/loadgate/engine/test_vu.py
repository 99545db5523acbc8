"""The VU context's callback mode: ``vu.every`` and ``vu.hold`` on a real WebSocket server."""

from __future__ import annotations

import asyncio

import pytest

from loadgate.engine.executors.driver import ScenarioRun
from loadgate.engine.vu import VU, StageRuntime
from loadgate.engine.window import Recorder
from loadgate.plan import Shard, plan_from_data
from loadgate.plan.profile import stage_profiles
from tests.support.aio import run

from .test_ws import start_ws_server

pytestmark = pytest.mark.timeout(30)


def _runtime(port: int, time_scale: float = 1.0) -> StageRuntime:
    return StageRuntime(
        base_url=f"http://127.0.0.1:{port}",
        recorder=Recorder(0),
        time_scale=time_scale,
        run_id="t",
        shard_index=0,
        users=[],
    )


def _vu(rt: StageRuntime) -> VU:
    return VU(rt, scenario="s", vu_id=0, local_id=0, options={})


def test_every_sends_on_the_plan_interval_until_the_vu_is_stopped() -> None:
    async def body() -> None:
        runner, _app, port = await start_ws_server()
        try:
            rt = _runtime(port, time_scale=0.5)  # the schedule's scale: not the interval's
            vu = _vu(rt)
            ws = await vu.ws.connect("/echo")
            assert ws is not None
            echoes: list[object] = []
            ws.on_message = echoes.append
            vu.every(0.05, lambda: ws.send_json({"n": len(echoes)}))  # every 0.05 s at any T
            loop = asyncio.get_running_loop()
            loop.call_later(0.33, vu.request_stop)
            t0 = loop.time()
            await vu.hold()
            assert 0.3 < loop.time() - t0 < 0.6
            assert not ws.closed
            await asyncio.sleep(0.02)
            assert 4 <= len(echoes) <= 7, echoes  # 6 due by the stop
            vu.close()
            sent = rt.recorder.window.ws["s"].msgs_out
            await asyncio.sleep(0.12)
            assert rt.recorder.window.ws["s"].msgs_out == sent  # cancelled with the VU
        finally:
            await runner.cleanup()

    run(body())


def test_hold_returns_when_the_server_closes_the_connection() -> None:
    async def body() -> None:
        runner, _app, port = await start_ws_server()
        try:
            vu = _vu(_runtime(port))
            ws = await vu.ws.connect("/echo")
            assert ws is not None
            ws.on_message = lambda msg: None
            raw = ws.ws
            assert raw is not None
            vu.every(0.02, lambda: None if raw.closed else raw.send_text("close-me"))
            await asyncio.wait_for(vu.hold(), 5)
            assert ws.closed and ws.close_code == 4001 and not vu.stopping
            await vu.hold()  # returns at once: a socket is closed
            vu.close()
        finally:
            await runner.cleanup()

    run(body())


def test_a_socket_closed_in_an_earlier_iteration_does_not_end_a_later_hold() -> None:
    async def body() -> None:
        runner, _app, port = await start_ws_server()
        try:
            vu = _vu(_runtime(port))
            ws = await vu.ws.connect("/echo")
            assert ws is not None and ws.ws is not None
            ws.ws.send_text("close-me")
            await asyncio.wait_for(vu.hold(), 5)  # this iteration's socket closed
            assert ws.closed
            vu.end_iteration()
            loop = asyncio.get_running_loop()
            loop.call_later(0.1, vu.request_stop)
            t0 = loop.time()
            await vu.hold()  # the next iteration: held until the stop
            assert loop.time() - t0 >= 0.09
            vu.close()
        finally:
            await runner.cleanup()

    run(body())


def _profile() -> object:
    plan = plan_from_data(
        {
            "name": "t",
            "stages": {
                "x": {
                    "scenarios": {
                        "s": {"exec": "basic.get", "executor": "constant-vus", "vus": 1}
                        | {"duration": 0.3, "graceful_stop": 0.1}
                    }
                }
            },
        }
    )
    return stage_profiles(plan.stages["x"], shard=Shard(0, 1), scale=1, time_scale=1)["s"]


def test_periodic_callbacks_end_with_their_iteration_and_failures_count() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        rt = _runtime(9)
        live_at_start: list[int] = []
        calls: list[int] = []

        async def scenario(vu: VU) -> None:
            live_at_start.append(len(rt.scheduler))
            vu.every(0.01, lambda: calls.append(vu.iteration))
            if vu.iteration == 0:
                vu.every(0.01, lambda: 1 / 0)
            await vu.sleep(0.05)

        await ScenarioRun("s", scenario, _profile(), {}, rt, loop.time()).run()
        assert len(live_at_start) >= 3
        assert set(live_at_start) == {0}  # the last iteration's callbacks were cancelled
        assert calls and calls == sorted(calls)
        assert rt.recorder.window.iteration_errors == {"s": 1}  # the failing callback, once
        rt.close()

    run(body())
