"""The gate finds real regressions against a healthy baseline, and only those.

Against the real reference service on loopback (no Airflow: the DAG's core steps). Each case
runs its baseline and its current release at the same time, on two instances of the service
with the same base latency (300 ± 30 ms on every API route) and the case's change added to the
current one: the baseline run is gated (a pass) and recorded in the case's own release history,
then the current run is gated with ``gate.decide`` against it. Run at the same time, both sides
see the same machine: a baseline measured while the suite's other processes were busy and a
current run measured in a quiet moment (or the reverse) read up to 50% apart on p95 and p99,
more than the changes these cases make. (Kayenta's advice is the same: a baseline started
beside the canary, not last week's figures.) The base is large beside what a busy machine still
adds to both sides alike, which dilutes a relative change. The changes are sized on the base
latency, known before the runs.

The plan: two endpoints (``GET /api/v1/sessions/{id}`` and ``.../devices``, unauthenticated,
401 expected: no storage or KDF, so the figures are the injected latency's), 150 requests/s in
all for 16 s, one shard, an open model; criteria: the first endpoint's p95 against the baseline
(> 30%, investigate), the API error-rate target (>= 1%) and the live error-rate rollback (> 5%
over 30 s), as the shipped plan has them. The checklist is not these tests' subject: an empty
``checklist.json`` stands for it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from loadgate import pipeline
from loadgate.backends.local import run_stage_local
from loadgate.config.run import build_run_config
from loadgate.run import folder, gate
from loadgate.run.records import CriterionRecord, StageGate, StageSummary
from loadgate.verdict.outcomes import Verdict
from tests.support.helpers import one_stage_plan, reference_run, scenario, shipped_criteria

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROUTE_A, ROUTE_B = "/api/v1/sessions/{id}", "/api/v1/sessions/{id}/devices"
NAME_A, NAME_B = f"GET {ROUTE_A}", f"GET {ROUTE_B}"
BASE = {"latency_ms": 300, "latency_jitter_ms": 30}
# the base latency's p95 and p99 (uniform ± jitter), which the changes are sized on
NOMINAL_P95, NOMINAL_P99 = 300 + 30 * 0.90, 300 + 30 * 0.98
# What a busy machine may add to an endpoint's p95 without fault before a pair is run again
# (see ``paired``): the relative cases are sized to stand it, as the 60% change (196 ms) stays
# clear of the 30% threshold (98 ms) even when only one side is slowed by this much. Twice a
# baseline 40 and 43 ms over nominal (367 and 370 ms) made the 60% case's p95 criterion
# inconclusive (+51%, its interval across 30%): stalls in more than 5% of the requests put
# both p95s in the sparse tail the stalls make, so a pair that busy runs again.
BUSY_MS = 25.0
RATE, DURATION = 75, "16s"  # per endpoint: 1,200 requests a side (p99 needs 500), 16 s (10)


def probe(path: str, name: str) -> dict:
    return scenario(
        "constant-arrival-rate",
        rate=RATE,
        duration=DURATION,
        pre_allocated_vus=32,
        max_vus=64,
        options={"path": path, "name": name, "expected": [401]},
    )


CRITERIA = [
    {
        "id": "sessions-p95-degradation",
        "level": "investigate",
        "metric": "http_req_duration",
        "stat": "p95",
        "scope": {"names": [NAME_A]},
        "breach": "> 30%",
        "relative_to": "baseline",
        "min_samples": 100,
    },
    *shipped_criteria("api-error-rate", "error-rate-rollback", stages=None),
]


@dataclass
class Paired:
    """The current run's gate, and the figures of the baseline run beside it."""

    decided: StageGate
    base: StageSummary


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """The plan, and two instances of the service with the base latency: the baseline's and
    the current release's (each case sets the latter's faults)."""
    from syncbridge.launcher import start_syncbridge

    tmp = tmp_path_factory.mktemp("regressions")
    plan = one_stage_plan(
        {
            "sessions": probe("/api/v1/sessions/probe", ROUTE_A),
            "devices": probe("/api/v1/sessions/probe/devices", ROUTE_B),
        },
        name="regressions",
        stage="api",
        shards=1,
        criteria=CRITERIA,
    )
    plan_path = tmp / "regressions.yaml"
    plan_path.write_text(yaml.safe_dump(plan))
    base = start_syncbridge(tmp / "base", faults=BASE)
    try:
        current = start_syncbridge(tmp / "current", faults=BASE)
        try:
            yield base, current, tmp, plan_path
        finally:
            current.stop()
    finally:
        base.stop()


def loaded_run(svc, root: Path, plan_path: Path, run_id: str) -> folder.Run:
    """A run of the plan's stage against ``svc``, its load sent, not yet gated."""
    config = build_run_config(
        {
            **reference_run(),
            "target_url": svc.url,
            "release": "v1",
            "plan": str(plan_path),
            "scale": 1,
            "time_scale": 1,
            "stages": ["api"],
            "artifacts_root": str(root),
        },
        allowlist=[],
    )
    run = folder.Run(pipeline.prepare(config, run_id))
    run.artifacts.write_json("checklist.json", [])  # not this test's subject
    pipeline.seed(run, secret="regression-test")
    outcome = run_stage_local(run, "api", lambda line: None)
    assert not outcome["errors"], outcome
    return run


def saturated(decided: StageGate) -> bool:
    """The gate's own word that the generator could not keep up: the machine's, not the case's."""
    return decided.verdict == Verdict.INVALID and any(
        "generator saturated" in r for r in decided.reasons
    )


def paired(services, case: str, faults: dict, attempts: int = 3) -> Paired:
    """The case's baseline and current runs at the same time; the baseline gated (a pass) and
    recorded in the case's history, then the current run gated against it.

    A pair the machine was too busy for runs again, in a history of its own, as the DAG re-runs
    a stage, up to ``attempts`` pairs in all: one in which the gate found its generator
    saturated (the busy suite starved it: the stage is ``invalid``, as it should be), or one
    in which an endpoint without a fault (either on the baseline; the second on the current
    release when the case's fault spares it) measured a p95 more than ``BUSY_MS`` above the
    nominal: the machine slowed every request, not only the case's change. Each is read from
    the gate's own word or from what carries no fault, never from the outcome under test; the
    last attempt stands whatever it measured.

    A current run whose gate is inconclusive is decided as the DAG decides it: its stage runs
    once more and the gate decides on both attempts' evidence (a busy machine's stalls once
    widened the 10% case's p95 interval across the 30% threshold)."""
    base_svc, current_svc, tmp, plan_path = services
    for attempt in range(1, attempts + 1):
        root = tmp / f"{case}-{attempt}"  # the case's own release history
        current_svc.set_faults(faults)
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                base_run = pool.submit(loaded_run, base_svc, root, plan_path, "baseline")
                current_run = pool.submit(loaded_run, current_svc, root, plan_path, case)
                base, run = base_run.result(), current_run.result()
        finally:
            current_svc.set_faults(BASE)
        base_gate = gate.decide(base, "api")
        if saturated(base_gate) and attempt < attempts:
            print(f"{case}: the baseline's generator saturated, once more: {base_gate.reasons}")
            continue
        assert base_gate.verdict == Verdict.PASS and base_gate.summary is not None, base_gate
        assert pipeline.record_history(base) is not None
        decided = gate.decide(run, "api")
        if decided.verdict == Verdict.INCONCLUSIVE:  # what the DAG does: its ``rerun`` group
            print(f"{case}: inconclusive, the stage once more: {decided.reasons}")
            outcome = run_stage_local(run, "api", lambda line: None, attempt=2)
            assert not outcome["errors"], outcome
            gate.decide(run, "api", attempt=2)  # on both attempts' evidence
        decided = run.gate("api")
        assert decided is not None and decided.summary is not None
        if saturated(decided) and attempt < attempts:
            print(f"{case}: the current run's generator saturated, once more: {decided.reasons}")
            continue
        added = machine_added_ms(base_gate.summary, decided.summary, faults)
        if added > BUSY_MS and attempt < attempts:
            print(f"{case}: the machine added {added:.0f} ms to a p95 without fault, once more")
            continue
        assert decided.baseline_run == "baseline"
        return Paired(decided, base_gate.summary)
    raise AssertionError("unreachable: the last attempt returns or fails")


def machine_added_ms(base: StageSummary, current: StageSummary, faults: dict) -> float:
    """The most the machine added to the nominal p95 of an endpoint without a fault: both of
    the baseline's, and the current release's second one when the case's fault spares it."""
    clean = [base.by_name[NAME_A].p95_ms, base.by_name[NAME_B].p95_ms]
    if faults.get("tail_routes") == [ROUTE_A] and not faults.get("error_rate"):
        clean.append(current.by_name[NAME_B].p95_ms)
    return max(clean) - NOMINAL_P95


def p95_of_a(summary: StageSummary) -> float:
    return summary.by_name[NAME_A].p95_ms


def degradation(decided: StageGate) -> CriterionRecord:
    return next(c for c in decided.criteria if c.id == "sessions-p95-degradation")


def test_60_percent_slower_endpoint_is_investigated_and_named(services) -> None:
    # 60%, twice the threshold's 30%: the p95 sits where the busy machine's stalls land, and it
    # once slowed one side more than the other (seen: the baseline's p95 at 367 ms, the current
    # release's about nominal), so a 40% change (33 ms over the threshold) read +26% with an
    # interval across 30%: inconclusive. 60% stands 98 ms clear of it.
    extra = round(0.6 * NOMINAL_P95, 2)
    change = {"tail_rate": 1.0, "tail_ms": extra, "tail_routes": [ROUTE_A]}
    decided = paired(services, "slower-60", BASE | change).decided
    assert decided.verdict == Verdict.INVESTIGATE, decided.reasons
    crit = degradation(decided)
    seen = (crit.status, crit.observed, crit.reference, decided.reasons)
    assert crit.breached and crit.status == "breach", seen
    assert 0.30 < crit.observed < 0.8, seen
    assert any(NAME_A in r and "p95" in r for r in decided.reasons), decided.reasons
    # the other endpoint did not move: no finding names it
    assert not any(ROUTE_B in r for r in decided.reasons), decided.reasons
    assert not decided.aborted


def test_10_percent_slower_endpoint_passes(services) -> None:
    extra = round(0.1 * NOMINAL_P95, 2)
    change = {"tail_rate": 1.0, "tail_ms": extra, "tail_routes": [ROUTE_A]}
    decided = paired(services, "slower-10", BASE | change).decided
    crit = degradation(decided)
    assert 0.03 < crit.observed < 0.2, crit  # the change was there, and measured
    assert crit.status == "pass" and not crit.breached, crit
    assert decided.verdict == Verdict.PASS, decided.reasons


def test_p99_doubled_with_p50_unchanged_is_investigated(services) -> None:
    # 3% of requests slowed by twice the base p99: p99 about three times the base's when the
    # machine is quiet. On the busy suite the slowest 1% of both sides take the machine's stalls
    # too (seen: base p99 423 and 575 ms, not 329), so the change is sized well above them.
    tail_ms = 2 * NOMINAL_P99
    result = paired(services, "tail", BASE | {"tail_rate": 0.03, "tail_ms": tail_ms})
    decided, base = result.decided, result.base
    summary = decided.summary
    # the tail was there and measured: p99 up by half the added latency or more (a difference,
    # not a ratio: a stall adds about as much to both sides)
    assert summary.p99_ms - base.p99_ms > 0.5 * tail_ms, (summary.p99_ms, base.p99_ms)
    assert summary.p99_ms > 2 * NOMINAL_P99, summary.p99_ms
    assert abs(summary.p50_ms / base.p50_ms - 1) < 0.1
    assert decided.verdict == Verdict.INVESTIGATE, decided.reasons
    assert not degradation(decided).breached  # p95 did not move: found by the tail
    tails = [r for r in decided.reasons if "regression" in r and ("p99" in r)]
    assert tails, decided.reasons


def test_two_points_more_errors_is_investigated_never_rolled_back(services) -> None:
    decided = paired(services, "errors", BASE | {"error_rate": 0.02}).decided
    assert decided.verdict == Verdict.INVESTIGATE, decided.reasons
    assert not decided.aborted  # the live sequential test did not stop the stage at 2%
    assert 0.01 < decided.summary.error_rate < 0.035, decided.summary.error_rate
    errors = [r for r in decided.reasons if "error" in r.lower()]
    assert errors, decided.reasons
