"""Criteria: one evaluation for the live abort and the gate."""

from __future__ import annotations

import pytest

from loadgate.engine.aggregate import Aggregate
from loadgate.engine.window import Recorder, window_record
from loadgate.plan import plan_from_data
from loadgate.verdict.criteria import SlidingEvaluator, evaluate, evaluate_stage

STAGE = {
    "scenarios": {"s": {"exec": "basic.get", "executor": "constant-vus", "vus": 1, "duration": 1}}
}


def _plan(*criteria, system=None):
    return plan_from_data(
        {
            "name": "t",
            "stages": {"api": STAGE},
            "criteria": list(criteria),
            "system_metrics": system or {},
        }
    )


def _record(t, ok=0, fail5=0, fail4=0, lat=0.01, sys=None, ws=None):
    rec = Recorder(t)
    for _ in range(ok):
        rec.http("s", "GET", "/x", 200, lat, False)
    for _ in range(fail5):
        rec.http("s", "GET", "/x", 503, lat, True)
    for _ in range(fail4):
        rec.http("s", "POST", "/y", 404, lat, True)
    for kind, n in (ws or {}).items():
        for _ in range(n):
            getattr(rec, kind)("w") if kind != "ws_connected" else rec.ws_connected("w", 0.001)
    return window_record(rec.roll(t + 1), at=1.0, gen={}, sys=sys or {})


def _agg(*records):
    return Aggregate().add_records(records)


def test_error_rate_needs_min_samples() -> None:
    plan = _plan(
        {
            "id": "e",
            "level": "rollback",
            "metric": "http_req_failed",
            "breach": "> 5%",
            "min_samples": 50,
        }
    )
    crit = plan.criteria
    [r] = evaluate(crit, _agg(_record(1, ok=1, fail5=1)))
    assert (r.status, r.breached, r.observed) == ("insufficient", False, 0.5)
    [r] = evaluate(crit, _agg(_record(1, ok=40, fail5=10)))
    assert (r.status, r.breached, r.samples) == ("breach", True, 50)
    [r] = evaluate(crit, _agg(_record(1, ok=95, fail5=5)))
    assert (r.status, r.breached, r.observed) == ("pass", False, 0.05)


def test_unavailable_rate_ignores_4xx_and_scope_filters() -> None:
    plan = _plan(
        {"id": "u", "level": "rollback", "metric": "http_unavailable_rate", "breach": "> 10%"},
        {
            "id": "f",
            "level": "acceptance",
            "metric": "http_req_failed",
            "breach": ">= 1%",
            "scope": {"names": ["GET /x"]},
        },
    )
    agg = _agg(_record(1, ok=50, fail4=50))
    u, f = evaluate(plan.criteria, agg)
    assert u.observed == 0.0 and not u.breached
    assert f.observed == 0.0 and f.samples == 50  # the 404s were POST /y


def test_latency_percentiles_and_baseline() -> None:
    plan = _plan(
        {
            "id": "p95",
            "level": "acceptance",
            "metric": "http_req_duration",
            "stat": "p95",
            "breach": ">= 500",
        },
        {
            "id": "deg",
            "level": "investigate",
            "metric": "http_req_duration",
            "stat": "p95",
            "breach": "> 30%",
            "relative_to": "baseline",
            "reference": 100,
        },
    )
    agg = _agg(_record(1, ok=100, lat=0.2))
    p95, deg = evaluate(plan.criteria, agg)
    assert p95.observed == pytest.approx(200, rel=0.002) and not p95.breached
    assert deg.observed == pytest.approx(1.0, rel=0.01) and deg.breached and deg.reference == 100
    [deg2] = evaluate(plan.criteria[1:], agg, baselines={"deg": 180})
    assert deg2.reference == 180 and not deg2.breached


def test_system_metrics_stats_and_unknown() -> None:
    system = {"mem": {"promql": "m"}, "up": {"promql": "up"}}
    plan = _plan(
        {"id": "m", "level": "rollback", "metric": "mem", "stat": "avg", "breach": "> 95%"},
        {"id": "m-max", "level": "investigate", "metric": "mem", "stat": "max", "breach": "> 90%"},
        {
            "id": "down",
            "level": "rollback",
            "metric": "up",
            "stat": "max",
            "breach": "< 1",
            "unknown": "breach",
        },
        system=system,
    )
    recs = [_record(t, sys={"mem": v, "up": None}) for t, v in ((1, 0.9), (2, 0.99), (3, 0.93))]
    m, m_max, down = evaluate(plan.criteria, _agg(*recs))
    assert m.observed == pytest.approx(0.94) and not m.breached
    assert m_max.observed == pytest.approx(0.99) and m_max.breached
    assert down.status == "breach" and down.breached and down.observed is None


def test_sustained_reads_a_level_held_through_the_window_as_an_alert_for_does() -> None:
    """``stat: sustained`` over a 3 s window: one busy second (0.9 among 0.5s) is no warning; three
    in a row above 80% are; fewer samples than the window: no data, never a breach."""
    system = {"pool": {"promql": "p"}}
    crit = {
        "id": "pool",
        "level": "investigate",
        "metric": "pool",
        "stat": "sustained",
        "window": 3,
        "breach": "> 80%",
    }
    plan = _plan(crit, system=system)

    def read(*values):
        recs = [_record(t, sys={"pool": v}) for t, v in enumerate(values, start=1)]
        return evaluate(plan.criteria, _agg(*recs))[0]

    spike = read(0.5, 0.9, 0.5, 0.5, 0.875, 0.5)
    assert spike.observed == pytest.approx(0.5) and not spike.breached
    held = read(0.5, 0.85, 0.9, 0.95, 0.5)
    assert held.observed == pytest.approx(0.85) and held.breached
    short = read(0.9, 0.95)
    assert short.observed is None and not short.breached and short.samples == 2


def test_scaled_threshold() -> None:
    plan = _plan(
        {"id": "vus", "level": "acceptance", "metric": "vus", "breach": "< 10000", "scaled": True}
    )
    rec = Recorder(1)
    for _ in range(10):
        rec.vu_started("s")
    agg = _agg(window_record(rec.roll(2), at=1.0, gen={}, sys={}))
    [r] = evaluate_stage(plan, "api", agg, scale=0.001)
    assert r.threshold == 10 and not r.breached
    [r] = evaluate_stage(plan, "api", agg)
    assert r.breached


def test_ws_error_rate() -> None:
    plan = _plan({"id": "ws", "level": "rollback", "metric": "ws_error_rate", "breach": "> 5%"})
    agg = _agg(
        _record(
            1,
            ws={
                "ws_connected": 9,
                "ws_connect_failed": 1,
                "ws_message_out": 90,
                "ws_error_reply": 4,
            },
        )
    )
    [r] = evaluate(plan.criteria, agg)
    assert r.observed == pytest.approx(5 / 100) and not r.breached


def test_sliding_window_forgets() -> None:
    plan = _plan(
        {
            "id": "e",
            "level": "rollback",
            "metric": "http_req_failed",
            "breach": "> 5%",
            "window": "3s",
            "min_samples": 10,
        }
    )
    ev = SlidingEvaluator(plan.criteria)
    # half of 40 requests failed: evidence enough for the sequential test in one second
    ev.push(_record(1, ok=20, fail5=20))
    assert ev.evaluate()[0].breached
    for t in (2, 3, 4):
        ev.push(_record(t, ok=40))
    [r] = ev.evaluate()
    assert not r.breached and r.samples == 120 and r.window == "last 3s"
    assert r.observed == 0.0


def _rollback(**fields):
    crit = {
        "id": "e",
        "level": "rollback",
        "metric": "http_req_failed",
        "breach": "> 5%",
        "window": "30s",
        "min_samples": 100,
    }
    return _plan({**crit, **fields}).criteria


def test_live_rate_is_a_sequential_test_not_a_point_estimate() -> None:
    """A 2% release's unlucky second (7 failures in 127 requests: 5.5%) is no evidence that the
    true rate is above 5%: the point reading breaches, the live sequential test does not."""
    ev = SlidingEvaluator(_rollback(), shards=5, horizon_s=2700)
    ev.push(_record(1, ok=120, fail5=7))
    [r] = ev.evaluate()
    assert r.observed == pytest.approx(7 / 127, abs=1e-6) and r.samples == 127
    assert (r.status, r.breached, r.test) == ("pass", False, "sequential")
    assert r.alpha == pytest.approx(0.01 / 5) and r.boundary == pytest.approx(6.2146, abs=1e-3)
    assert r.statistic is not None and r.statistic < r.boundary
    [point] = evaluate(_rollback(), _agg(_record(1, ok=120, fail5=7)))
    assert point.breached and point.test == "point"  # the gate's reading is unchanged


def test_live_rate_breaches_on_a_sustained_fault_with_its_evidence() -> None:
    ev = SlidingEvaluator(_rollback(), shards=5, horizon_s=2700)
    for t in range(1, 11):  # ten healthy seconds at 1%
        ev.push(_record(t, ok=99, fail5=1))
        assert not ev.evaluate()[0].breached
    seconds = 0
    for t in range(11, 20):  # then 20% of 100 requests a second
        ev.push(_record(t, ok=80, fail5=20))
        seconds += 1
        if ev.evaluate()[0].breached:
            break
    [r] = ev.evaluate()
    assert r.breached and r.status == "breach" and seconds <= 3
    assert r.statistic is not None and r.statistic >= r.boundary
    assert r.since_s == 11 and r.span_observed == pytest.approx(0.2, abs=1e-6)  # the fault's start
    assert r.span_samples == 100 * seconds


def test_min_samples_stays_a_floor_of_the_live_test() -> None:
    ev = SlidingEvaluator(_rollback(min_samples=500), horizon_s=60)
    for t in range(1, 4):
        ev.push(_record(t, ok=50, fail5=50))
    [r] = ev.evaluate()
    assert r.statistic is not None and r.statistic > r.boundary  # overwhelming evidence ...
    assert (r.status, r.breached, r.samples) == ("insufficient", False, 300)  # ... too few


def test_alpha_is_split_over_shards_and_live_rate_criteria() -> None:
    crits = _plan(
        {"id": "a", "level": "rollback", "metric": "http_req_failed", "breach": "> 5%"},
        {"id": "b", "level": "rollback", "metric": "http_unavailable_rate", "breach": "> 10%"},
        {"id": "c", "level": "rollback", "metric": "http_req_failed", "breach": "> 0"},
        {"id": "d", "level": "rollback", "metric": "vus", "breach": "> 100"},
    ).criteria
    ev = SlidingEvaluator(crits, alpha=0.02, shards=5, horizon_s=100)
    assert ev.alpha_each == pytest.approx(0.002)  # 0.02 / (5 shards x 2 rate criteria)
    ev.push(_record(1, ok=10, fail5=1))
    tests = {r.id: r.test for r in ev.evaluate()}
    assert tests == {"a": "sequential", "b": "sequential", "c": "point", "d": "point"}
    results = {r.id: r for r in ev.evaluate()}
    assert results["c"].breached  # "> 0": one failure is certain evidence


def test_a_lower_bound_on_a_rate_tests_its_complement() -> None:
    crits = _plan(
        {
            "id": "avail",
            "level": "rollback",
            "metric": "http_availability",
            "breach": "< 90%",
            "window": "10s",
        }
    ).criteria
    ev = SlidingEvaluator(crits, horizon_s=60)
    ev.push(_record(1, ok=95, fail5=5))
    [r] = ev.evaluate()
    assert not r.breached and r.observed == pytest.approx(0.95)
    for t in range(2, 5):
        ev.push(_record(t, ok=50, fail5=50))
    [r] = ev.evaluate()
    assert r.breached and r.span_observed is not None and r.span_observed < 0.9
