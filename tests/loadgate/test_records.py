"""The run folder's records: typed, read back exactly as written, and their schemas current."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from loadgate import records
from loadgate.criteria import CriterionResult
from loadgate.records import (
    CriterionRecord,
    Series,
    StageGate,
    TargetHealth,
)
from loadgate.verdicts import Verdict

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def as_written(data: Any) -> bytes:
    """What ``RunArtifacts.write_json`` writes of ``data``."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def test_the_checked_in_schemas_are_the_models() -> None:
    on_disk = {p.name: p.read_text() for p in SCHEMAS.glob("*.schema.json")}
    assert on_disk == records.schema_texts(), (
        "docs/schemas is out of date: python -m loadgate.records --write-schemas docs/schemas"
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
