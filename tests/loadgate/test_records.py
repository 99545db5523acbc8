"""The run folder's records: typed, read back exactly as written, and their schemas current.

The end-to-end case gates two real runs against the real reference service on loopback (no
Airflow: the DAG's core steps): a healthy one recorded in the release history, then a faulty
one (half the requests fail) that the gate rolls back, compared with the first. Every record of
both run folders must validate against its model, be written again byte for byte by it, and
validate against the JSON Schema checked in under ``docs/schemas/``.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from loadgate import pipeline
from loadgate.backends.local import run_stage_local
from loadgate.config.run import build_run_config
from loadgate.notify import Notifier
from loadgate.run import folder, gate, records
from loadgate.run.records import (
    Checklist,
    CriterionRecord,
    Report,
    RollbackOutcome,
    RunRecord,
    Series,
    StageGate,
    TargetHealth,
)
from loadgate.verdict.criteria import CriterionResult
from loadgate.verdict.outcomes import Verdict
from tests.support.helpers import one_stage_plan, reference_run, scenario, shipped_criteria

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
FILES: dict[str, tuple[type[BaseModel], str]] = {
    "run.json": (RunRecord, "run"),
    "checklist.json": (Checklist, "checklist"),
    "gates/api.json": (StageGate, "gate"),
    "rollback.json": (RollbackOutcome, "rollback"),
    "report.json": (Report, "report"),
}


def as_written(data: Any) -> bytes:
    """What ``RunArtifacts.write_json`` writes of ``data``."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def check_schema(name: str, data: Any) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)


def check_folder(root: Path) -> list[str]:
    """Each record of the run folder ``root`` read through its model, written again and checked
    against its schema; returns the ones found."""
    found = []
    for rel, (model, name) in FILES.items():
        path = root / rel
        if not path.exists():
            continue
        written = path.read_bytes()
        record = model.model_validate_json(written)
        assert as_written(record.model_dump(mode="json")) == written, rel
        check_schema(name, json.loads(written))
        found.append(rel)
    return found


def test_the_checked_in_schemas_are_the_models() -> None:
    on_disk = {p.name: p.read_text() for p in SCHEMAS.glob("*.schema.json")}
    assert on_disk == records.schema_texts(), (
        "docs/schemas is out of date: python -m loadgate.run.records --write-schemas docs/schemas"
    )


def test_check_names_a_stale_or_missing_schema_and_write_makes_them_current(
    tmp_path, capsys
) -> None:
    assert records.main(["--write-schemas", str(tmp_path)]) == 0
    assert records.main(["--check", str(tmp_path)]) == 0
    (tmp_path / "gate.schema.json").write_text("{}\n")
    (tmp_path / "report.schema.json").unlink()
    capsys.readouterr()
    assert records.main(["--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "gate.schema.json is out of date" in err and "report.schema.json" in err
    assert "run.schema.json" not in err
    records.main(["--write-schemas", str(tmp_path)])
    assert records.main(["--check", str(tmp_path)]) == 0


def test_a_criterion_record_holds_every_field_of_a_criterion_result() -> None:
    assert set(CriterionRecord.model_fields) == {f.name for f in fields(CriterionResult)} | {"unit"}


def test_unknown_keys_are_refused_and_only_the_keys_set_are_written() -> None:
    error_gate = {
        "stage": "api",
        "attempt": 1,
        "attempts": [],
        "verdict": "error",
        "reasons": ["no results: no shard wrote any"],
        "criteria": [],
        "summary": None,
    }
    gate_record = StageGate.model_validate(error_gate)
    assert gate_record.verdict is Verdict.ERROR and gate_record.series is None
    assert gate_record.model_dump(mode="json") == error_gate  # no series, events, … keys
    with pytest.raises(ValidationError, match="verdicts"):
        StageGate.model_validate(error_gate | {"verdicts": "error"})
    with pytest.raises(ValidationError, match="verdict"):
        StageGate.model_validate(error_gate | {"verdict": "fine"})
    assert TargetHealth(healthy=None).model_dump(mode="json") == {"healthy": None}
    # an int stays an int and a float a float: the JSON is the same when written again
    series = Series(t=[1, 2.5], rps=[3, 4], p95_ms=[None, 2.0], errors=[0, 0], vus=[1, 1])
    assert as_written(series.model_dump(mode="json")) == as_written(
        {"t": [1, 2.5], "rps": [3, 4], "p95_ms": [None, 2.0], "errors": [0, 0], "vus": [1, 1]}
    )


def test_a_dry_run_report_validates_with_its_stages_not_run(tmp_path) -> None:
    config = build_run_config(
        {
            **reference_run(),
            "target_url": "http://127.0.0.1:9",
            "stages": ["api", "websocket"],
            "scale": 0.001,
            "time_scale": 0.01,
            "dry_run": True,
            "artifacts_root": str(tmp_path),
        },
        allowlist=[],
    )
    run = folder.Run(pipeline.prepare(config, "dry"))
    assert pipeline.make_report(run)["verdict"] == "dry_run"
    assert check_folder(run.artifacts.root) == ["run.json", "report.json"]
    report = Report.model_validate_json(run.artifacts.path("report.json").read_bytes())
    assert {s.verdict for s in report.stages.values()} == {"not run"}
    assert report.verdict is Verdict.DRY_RUN and report.rollback is None


def records_plan(tmp_path: Path) -> str:
    """One API stage of 120 requests (40 a second for 3 s, 401 expected) gated on the p95
    against the baseline and the shipped error-rate target and live rollback."""
    plan = one_stage_plan(
        {
            "probe": scenario(
                "constant-arrival-rate",
                rate=40,
                duration="3s",
                pre_allocated_vus=4,
                options={
                    "path": "/api/v1/sessions/probe",
                    "name": "GET /api/v1/sessions/{id}",
                    "expected": [401],
                },
            )
        },
        name="records",
        stage="api",
        shards=1,
        criteria=[
            {
                "id": "p95-degradation",
                "level": "investigate",
                "metric": "http_req_duration",
                "stat": "p95",
                "breach": "> 30%",
                "relative_to": "baseline",
                "min_samples": 10,
            },
            *shipped_criteria("api-error-rate", "error-rate-rollback", stages=None),
        ],
    )
    path = tmp_path / "records.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


def gated_run(
    svc, tmp_path: Path, plan: str, run_id: str, faults: dict | None = None
) -> folder.Run:
    """The DAG's steps in order, with a command rollback that always succeeds; ``faults``
    are set on the service once its users are seeded (the release under test is faulty, not
    the seeding: seeded at 50% errors, a user failed every retry now and then)."""
    config = build_run_config(
        {
            **reference_run(),
            "target_url": svc.url,
            "release": "v1",
            "plan": plan,
            "scale": 1,
            "time_scale": 1,
            "stages": ["api"],
            "artifacts_root": str(tmp_path / "artifacts"),
            "rollback": {"type": "command", "command": ["true"]},
        },
        allowlist=[],
    )
    record = pipeline.prepare(config, run_id)
    # what the prepare task passes by XCom is plain JSON, and it is run.json
    xcom = json.loads(json.dumps(record.model_dump(mode="json")))
    run = folder.Run(xcom)
    assert xcom == json.loads(run.artifacts.path("run.json").read_text())
    notifier = Notifier(run.artifacts, None)
    pipeline.run_checklist(run, notifier=notifier, rollback_secret=None)
    assert pipeline.stage_skip_reason(run, "api") is not None  # not seeded yet
    pipeline.seed(run, secret="records-test")
    assert pipeline.stage_skip_reason(run, "api") is None
    if faults:
        svc.set_faults(faults)
    outcome = run_stage_local(run, "api", lambda line: None)
    assert not outcome["errors"], outcome
    gate.decide(run, "api")
    pipeline.notify_gate(run, notifier, "api")
    pipeline.rollback(run, secret=None)
    pipeline.make_report(run)
    pipeline.record_history(run)
    pipeline.notify_final(run, notifier)
    return run


@pytest.mark.slow
def test_a_gated_run_folder_reads_back_as_written(start_syncbridge, tmp_path) -> None:
    svc = start_syncbridge(tmp_path / "svc")
    plan = records_plan(tmp_path)
    healthy = gated_run(svc, tmp_path, plan, "healthy")
    faulty = gated_run(svc, tmp_path, plan, "faulty", faults={"error_rate": 0.5})

    assert check_folder(healthy.artifacts.root) == [
        "run.json",
        "checklist.json",
        "gates/api.json",
        "report.json",
    ]
    assert check_folder(faulty.artifacts.root) == list(FILES)

    checklist = faulty.checklist()
    assert checklist is not None and not checklist.failed_required()
    decided = faulty.gate("api")
    assert decided is not None and decided.verdict is Verdict.ROLLBACK, decided
    assert decided.summary is not None and decided.summary.requests > 0
    assert decided.summary.error_rate > 0.2 and decided.series and decided.series.t
    assert decided.baseline_run == "healthy" and decided.baseline
    assert decided.baseline.comparisons  # the baseline's comparisons, typed
    assert {c.unit for c in decided.criteria} >= {"%"}
    rolled = faulty.rollback_outcome()
    assert rolled is not None and rolled.outcome == "rolled back, target healthy"
    assert rolled.exit_code == 0 and rolled.http_status is None
    report = Report.model_validate_json(faulty.artifacts.path("report.json").read_bytes())
    assert report.verdict is Verdict.ROLLBACK and report.rollback == rolled
    assert report.stages["api"].criteria == decided.criteria
    assert [h.run_id for h in report.history] == ["healthy", "faulty"]
    assert pipeline.run_verdict(faulty)[0] is Verdict.ROLLBACK
    assert pipeline.run_verdict(healthy)[0] is Verdict.PASS
