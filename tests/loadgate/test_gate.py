"""Gates over real engine runs against the real reference service (no Airflow)."""

from __future__ import annotations

import json

import pytest
import yaml

from loadgate import gate, pipeline
from loadgate.local_backend import run_stage_local
from loadgate.notify import Notifier
from loadgate.runconfig import build_run_config, resolve_plan_path
from loadgate.verdicts import Verdict


def make_run(svc, tmp_path, run_id="manual__2026-01-01T00:00:00+00:00", **params):
    config = build_run_config(
        {
            "target_url": svc.url,
            "release": "v1",
            "scale": 0.0003,  # 3 users
            "time_scale": 0.004,  # the 44-minute API test in about 11 s
            "stages": ["api"],
            "shards": 1,
            "artifacts_root": str(tmp_path / "artifacts"),
            **params,
        },
        allowlist=[],
    )
    run = pipeline.Run(pipeline.prepare(config, run_id))
    pipeline.seed(run, secret="gate-test")
    return run


@pytest.mark.slow
def test_crash_is_evidence_not_only_errors(start_syncbridge, tmp_path) -> None:
    svc = start_syncbridge(tmp_path / "svc", faults={"crash_after_s": 3})
    run = make_run(svc, tmp_path, time_scale=0.01)
    outcome = run_stage_local(run, "api", lambda line: None)
    assert outcome["aborted"], outcome
    decided = gate.decide(run, "api")
    assert decided["verdict"] == "rollback"
    assert any("crashed" in e for e in decided["events"]), decided["events"]
    assert decided["reasons"][0] == decided["events"][0]
    assert svc.proc.poll() is not None  # the service really died


@pytest.mark.slow
def test_rerun_replaces_results_and_uses_the_previous_run_as_baseline(
    start_syncbridge, tmp_path
) -> None:
    svc = start_syncbridge(tmp_path / "svc")
    first = make_run(svc, tmp_path, run_id="run-1")
    run_stage_local(first, "api", lambda line: None)
    first_gate = gate.decide(first, "api")
    assert first_gate["verdict"] == "pass", first_gate["reasons"]

    second = make_run(svc, tmp_path, run_id="run-2")
    lines: list[str] = []
    run_stage_local(second, "api", lines.append)
    assert any("[api 0/1]" in line for line in lines)  # progress reached the caller
    shard_meta = second.artifacts.path("stages", "api", "shard-0", "meta.json")
    first_start = json.loads(shard_meta.read_text())["started_at"]
    # a rerun of the stage replaces its results: one shard directory, newer
    run_stage_local(second, "api", lambda line: None)
    assert sorted(
        p.name for p in second.artifacts.path("stages", "api").iterdir() if p.is_dir()
    ) == ["shard-0"]
    assert json.loads(shard_meta.read_text())["started_at"] > first_start
    decided = gate.decide(second, "api")
    assert decided["baseline_run"] == "run-1"
    degradation = next(c for c in decided["criteria"] if c["id"] == "api-response-time-degradation")
    first_gate = first.gate("api")
    first_p95 = next(c for c in first_gate["criteria"] if c["id"] == "api-p95")["observed"]
    # the baseline is the first run's measured p95, not the plan's fixed reference
    assert degradation["observed"] is not None
    assert degradation["reference"] == pytest.approx(first_p95, rel=1e-3)


def test_no_results_is_an_error_not_a_pass(start_syncbridge, tmp_path) -> None:
    svc = start_syncbridge(tmp_path / "svc")
    run = make_run(svc, tmp_path)
    decided = gate.decide(run, "api")
    assert decided["verdict"] == "error"
    assert pipeline.run_verdict(run)[0] == "error"


def test_final_message_once_across_reruns(start_syncbridge, tmp_path) -> None:
    svc = start_syncbridge(tmp_path / "svc")
    run = make_run(svc, tmp_path)
    notifier = Notifier(run.artifacts, None)
    assert pipeline.notify_final(run, notifier) == "recorded"
    assert pipeline.notify_final(pipeline.Run(run.record), notifier) == "duplicate"


@pytest.mark.slow
def test_a_generator_that_cannot_vouch_for_its_numbers_makes_the_stage_invalid(
    start_syncbridge, tmp_path
) -> None:
    """The shipped plan with saturation limits no generator meets: every second of the stage
    counts as saturated, so the healthy release's stage is invalid, never a pass, and the run
    fails."""
    plan = yaml.safe_load(resolve_plan_path("harmonyflow-10k").read_text())
    plan["generator"] = {"loop_lag_ms": 0.001, "cpu": 0.0001, "max_fraction": 0}
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(plan))
    svc = start_syncbridge(tmp_path / "svc")
    run = make_run(svc, tmp_path, plan=str(path))
    run_stage_local(run, "api", lambda line: None)
    decided = gate.decide(run, "api")
    assert decided["verdict"] == Verdict.INVALID, decided["reasons"]
    assert any(r.startswith("invalid: generator saturated") for r in decided["reasons"])
    assert decided["invalid"] and decided["summary"]["generator_saturated"]
    verdict, _ = pipeline.run_verdict(run)
    assert verdict == Verdict.INVALID and verdict.fails_run
