"""The real plan file validates and its numbers are the seed's."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgate.engine.executors.connection_ramp import ConnectionRamp
from loadgate.engine.executors.constant_vus import ConstantVUs
from loadgate.engine.executors.ramping_vus import RampingVUs
from loadgate.plan import Shard, load_plan
from loadgate.plan.profile import stage_profiles
from loadgate.plan.vocabulary import ENGINE_METRICS
from loadgate.scenarios import resolve

PLAN = (
    Path(__file__).parents[3] / "include" / "loadgate_syncbridge" / "plans" / "harmonyflow-10k.yaml"
)


@pytest.fixture(scope="module")
def plan():
    return load_plan(PLAN)


def test_api_stage_is_the_seed_k6_ramp(plan) -> None:
    api = plan.stages["api"].scenarios["api_mix"]
    assert isinstance(api, RampingVUs)
    assert [(s.duration, s.target) for s in api.stages] == [
        (120, 1000), (300, 5000), (600, 10000), (900, 10000), (300, 5000), (300, 1000), (120, 0),
    ]  # fmt: skip
    assert plan.stages["api"].duration == 44 * 60
    assert api.peak == 10_000
    assert api.options["mix"] == {
        "login": 0.2, "get_session": 0.4, "snapshot": 0.15, "devices": 0.15, "refresh": 0.1,
    }  # fmt: skip
    assert api.options["think_time"] == [0, 3]
    assert plan.stages["api"].shards == 5  # §2.2: five load generators


def test_websocket_stage_is_10k_connections_every_10ms(plan) -> None:
    ws = plan.stages["websocket"].scenarios["ws_connections"]
    assert isinstance(ws, ConnectionRamp)
    assert (ws.target, ws.interval, ws.hold) == (10_000, 0.01, 900)
    assert ws.ramp == pytest.approx(100.0)
    assert ws.options["heartbeat_interval"] == "30s"
    assert ws.options["state_update_interval"] == "5s"
    assert ws.options["state_update_connections"] == 1000


def test_session_stage_has_both_k6_scenarios(plan) -> None:
    scen = plan.stages["session"].scenarios
    state, handoff = scen["session_state"], scen["handoff"]
    assert isinstance(state, ConstantVUs) and isinstance(handoff, ConstantVUs)
    assert (state.vus, state.duration, state.start_time) == (5000, 900, 0)
    assert (handoff.vus, handoff.duration, handoff.start_time) == (1000, 900, 120)
    assert state.options["updates"] == 10 and state.options["update_interval"] == "0.5s"
    assert plan.stages["session"].duration == 17 * 60


def test_every_scenario_resolves(plan) -> None:
    for stage in plan.stages.values():
        for scen in stage.scenarios.values():
            assert resolve(scen.exec)


def _crit(plan, cid):
    return next(c for c in plan.criteria if c.id == cid)


def test_acceptance_criteria_are_section_1_2(plan) -> None:
    def check(cid, metric, op, threshold, stat=None):
        c = _crit(plan, cid)
        assert c.level == "acceptance"
        assert (c.metric, c.op, c.threshold) == (metric, op, pytest.approx(threshold))
        if stat:
            assert c.stat == stat

    check("ws-concurrent-connections", "ws_connections", "<", 10_000)
    check("api-error-rate", "http_req_failed", ">=", 0.01)
    check("api-p95", "http_req_duration", ">=", 500, "p95")
    check("api-p99", "http_req_duration", ">=", 1000, "p99")
    check("ws-error-rate", "ws_error_rate", ">=", 0.01)
    check("cpu-utilization", "cpu_utilization", ">=", 0.80)
    check("memory-utilization", "memory_utilization", ">=", 0.85)
    check("service-availability", "http_availability", "<=", 0.99)
    check("no-pod-crashes", "pod_restarts", ">", 0)
    assert _crit(plan, "ws-concurrent-connections").scaled


def test_rollback_and_investigate_criteria_are_section_7_3(plan) -> None:
    rollback = {c.id: c for c in plan.criteria if c.level == "rollback"}
    assert rollback["error-rate-rollback"].threshold == pytest.approx(0.05)
    assert rollback["error-rate-rollback"].min_samples >= 50
    assert rollback["memory-rollback"].threshold == pytest.approx(0.95)
    assert rollback["service-unavailable"].metric == "http_unavailable_rate"
    assert rollback["pod-crashes"].metric == "pod_restarts"
    assert rollback["db-connection-failures"].metric == "db_connection_errors"
    investigate = {c.id: c for c in plan.criteria if c.level == "investigate"}
    assert investigate["error-rate-investigate"].threshold == pytest.approx(0.01)
    assert investigate["api-response-time-degradation"].threshold == pytest.approx(0.30)
    assert investigate["cpu-investigate"].threshold == pytest.approx(0.90)
    assert investigate["memory-investigate"].threshold == pytest.approx(0.90)


def test_system_metrics_have_both_sources(plan) -> None:
    for name, metric in plan.system_metrics.items():
        assert metric.promql, name
        if name != "up":
            assert metric.scrape is not None, name
    for crit in plan.criteria:
        assert crit.metric in ENGINE_METRICS or crit.metric in plan.system_metrics


def test_expected_figures_and_load_levels(plan) -> None:
    api = {e.label: e.expected for e in plan.stages["api"].expected}
    assert api["Total requests"] == 2_500_000 and api["Requests per second"] == 2800
    assert api["p95 response time"] == 380 and api["p99 response time"] == 650
    ws = {e.label: e.expected for e in plan.stages["websocket"].expected}
    assert ws["Messages sent"] == 1_200_000 and ws["p95 latency"] == 75
    session = {e.label: e.expected for e in plan.stages["session"].expected}
    assert session["Session updates"] == 250_000 and session["Snapshots created"] == 25_000
    levels = {lv.users: lv for lv in plan.load_levels}
    assert levels[1000].expected_p95_ms == 180 and levels[10000].expected_memory == 0.78
    assert levels[5000].limit_p95_ms == 350 and levels[10000].limit_error_rate == 0.01


def test_shards_add_up_to_the_plan(plan) -> None:
    for stage in plan.stages.values():
        n = stage.shards
        profiles = [
            stage_profiles(stage, shard=Shard(i, n), scale=1, time_scale=1) for i in range(n)
        ]
        for name, scen in stage.scenarios.items():
            assert sum(p[name].peak for p in profiles) == scen.peak
