"""The ``loadgate`` command line: help, dry run, summarize."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgate.cli import main
from loadgate.engine.results import FORMAT, ResultsWriter
from loadgate.engine.window import Recorder, window_record
from tests.support.helpers import run_stage_args

from .conftest import PLAN_FILE  # type: ignore[misc]


def test_help_documents_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run-stage", "--help"])
    text = capsys.readouterr().out
    for line in (
        "0    completed",
        "2    engine or input error",
        "3    aborted by a criterion",
        "143  terminated by SIGTERM",
    ):
        assert line in text


def test_dry_run_shows_the_shares_and_sends_nothing(tmp_path: Path, capsys) -> None:
    users = tmp_path / "u.jsonl"
    users.write_text('{"email": "a@b.c", "password": "p"}\n')
    code = main(
        run_stage_args(
            PLAN_FILE,
            "api",
            "http://127.0.0.1:9",
            tmp_path / "o",
            shard="4/5",
            users=users,
            dry_run=True,
        )
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "api_mix: ramping-vus peak 2000 of 10000 VUs" in out and "nothing sent" in out
    assert not (tmp_path / "o" / "windows.jsonl").exists()


def _results(dir_: Path) -> None:
    writer = ResultsWriter(dir_)
    writer.write_meta(
        {
            "format": FORMAT,
            "stage": "api",
            "plan": {"name": "t"},
            "shard": {"index": 0, "count": 1},
            "started_at": 100.0,
            "ended_at": 103.0,
            "status": "completed",
            "aborted": None,
            "generator": {"limits": {"loop_lag_ms": 200, "cpu": 0.9, "max_fraction": 0.05}},
        }
    )
    for t in (100, 101, 102):
        rec = Recorder(t)
        for i in range(60):
            rec.http(
                "api_mix", "GET", "/api/v1/sessions/{id}", 200 if i % 20 else 500, 0.6, i % 20 == 0
            )
        rec.vu_started("api_mix")
        rec.loop_lag(0.3)  # a saturated generator
        writer.append_window(
            window_record(
                rec.roll(t + 1), at=t - 99.0, gen={"cpu": 0.5}, sys={"cpu_utilization": 0.5}
            )
        )
    writer.close()


def test_summarize_json_and_plan_criteria(tmp_path: Path, capsys) -> None:
    _results(tmp_path / "s")
    assert main(["summarize", str(tmp_path / "s"), "--json", "--plan", str(PLAN_FILE)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == 180 and summary["failed"] == 9
    assert summary["error_rate"] == pytest.approx(0.05)
    assert summary["p95_ms"] == pytest.approx(600, rel=0.002)
    assert summary["generator_saturated"] is True
    assert summary["by_name"]["GET /api/v1/sessions/{id}"]["requests"] == 180
    results = {r["id"]: r for r in summary["criteria"]}
    assert results["api-p95"]["breached"] is True  # 600 ms >= 500 ms
    assert results["api-error-rate"]["breached"] is True
    assert results["error-rate-rollback"]["breached"] is False  # 5% is not > 5%
    assert results["cpu-utilization"]["observed"] == 0.5
    assert main(["summarize", str(tmp_path / "s")]) == 0
    text = capsys.readouterr().out
    assert "cannot vouch" in text and "http_req_duration" in text


def test_summarize_unreadable(tmp_path: Path, capsys) -> None:
    assert main(["summarize", str(tmp_path / "missing")]) == 2
    assert "no such results directory" in capsys.readouterr().err
