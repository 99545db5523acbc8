"""The report: the seed's shape with measured values, in four formats."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from loadgate.report.build import build_report
from loadgate.run.artifacts import RunArtifacts
from tests.support.records import comparison, history_entry

RECORD = {
    "title": "HarmonyFlow SyncBridge load test",
    "release": "v2",
    "target": "http://127.0.0.1:1",
    "plan": "harmonyflow-10k",
    "scale": 0.01,
    "time_scale": 0.1,
    "run_id": "r1",
    "verdict": "rollback",
    "reasons": ["api: stage aborted at 2.1 s by error-rate-rollback"],
    "checklist": [
        {
            "item": "All health checks passing",
            "status": "pass",
            "evidence": "200",
            "required": True,
        },
        {"item": "Alert rules configured", "status": "warn", "evidence": "none", "required": False},
    ],
    "stages": {
        "api": {
            "verdict": "rollback",
            "reasons": ["stage aborted"],
            "aborted": {"criterion": "error-rate-rollback", "observed": 0.2, "at_s": 2.1},
            "summary": {
                "requests": 1234,
                "error_rate": 0.2,
                "p50_ms": 3.0,
                "p95_ms": 12.5,
                "p99_ms": 30.0,
                "max_vus": 100,
                "rps": 400.0,
                "by_name": {
                    "GET /api/v1/sessions/{id}": {
                        "requests": 600,
                        "error_rate": 0.2,
                        "p95_ms": 10.0,
                        "p99_ms": 20.0,
                    }
                },
            },
            "criteria": [
                {
                    "id": "api-error-rate",
                    "level": "acceptance",
                    "metric": "http_req_failed",
                    "op": ">=",
                    "threshold": 0.01,
                    "observed": 0.2,
                    "breached": True,
                    "stat": "rate",
                    "status": "breach",
                    "samples": 1234,
                    "window": "stage",
                    "unit": "%",
                },
                {
                    "id": "api-p95",
                    "level": "acceptance",
                    "metric": "http_req_duration",
                    "op": ">=",
                    "threshold": 500,
                    "observed": 12.5,
                    "breached": False,
                    "stat": "p95",
                    "status": "pass",
                    "samples": 1234,
                    "window": "stage",
                    "unit": "ms",
                },
                {
                    "id": "error-rate-rollback",
                    "level": "rollback",
                    "metric": "http_req_failed",
                    "op": ">",
                    "threshold": 0.05,
                    "observed": 0.2,
                    "breached": True,
                    "stat": "rate",
                    "status": "breach",
                    "samples": 1234,
                    "window": "stage",
                    "unit": "%",
                },
                {
                    "id": "cpu",
                    "level": "acceptance",
                    "metric": "cpu_utilization",
                    "op": ">=",
                    "threshold": 0.8,
                    "observed": None,
                    "breached": False,
                    "stat": "max",
                    "status": "unknown",
                    "samples": 0,
                    "window": "stage",
                    "unit": "%",
                },
            ],
            "series": {
                "t": [1, 2, 3],
                "rps": [100, 400, 10],
                "p95_ms": [5, 12, None],
                "errors": [0, 80, 2],
                "vus": [50, 100, 0],
            },
            "system": {"memory_utilization": {"max": 0.4, "avg": 0.3, "last": 0.35}},
            "load_levels": [
                {"users": 100, "p95_ms": 12.0, "error_rate": 0.2, "cpu": 0.5, "memory": 0.3}
            ],
            "expected": {"p95 response time": "target <500ms, expected 380ms"},
        },
        "websocket": {"verdict": "not run", "reasons": []},
    },
    "rollback": {
        "action": "syncbridge",
        "release": "v2",
        "outcome": "rolled back, target healthy",
        "health": {"healthy": True, "release": "v1"},
        "seconds": 1.5,
        "at": "2026-01-01T00:00:05+00:00",
    },
    "timeline": [{"at": "2026-01-01T00:00:00+00:00", "event": "gate api: rollback"}],
}


def test_four_files_with_measured_values(tmp_path) -> None:
    paths = build_report(RunArtifacts(tmp_path, "r1"), RECORD)
    md = Path(paths["markdown"]).read_text()
    assert "🛑 ROLLBACK" in md
    assert "| api-error-rate | >= 1.00% | 20.00% | ❌ |" in md
    assert "| api-p95 | >= 500 ms | 12.5 ms | ✅ |" in md
    assert "12.5 ms" in md and "1,234" in md
    assert "Aborted" in md and "error-rate-rollback" in md
    assert "rolled back, target healthy" in md
    assert "_Not run._" in md
    assert "- [x] ✅ **All health checks passing**" in md
    html = Path(paths["html"]).read_text()
    assert html.count("<svg") == 4 and "<table>" in html
    assert "<script" not in html and "http://" not in html.split("<body>")[0]
    data = json.loads(Path(paths["json"]).read_text())
    assert data["verdict"] == "rollback"
    assert data["stages"]["api"]["p95_ms"] == 12.5
    assert data["stages"]["api"]["aborted"]["criterion"] == "error-rate-rollback"
    suites = ET.parse(paths["junit"]).getroot()
    api = next(s for s in suites if s.get("name") == "api")
    assert api.get("failures") == "2" and api.get("tests") == "4"
    assert api.find("testcase[@name='cpu']/skipped") is not None


def test_rates_baseline_attempts_and_history_are_reported(tmp_path) -> None:
    stage = {
        "verdict": "investigate",
        "reasons": ["regression: GET /a p95 +40% (95% CI +35%…+46%) vs v41"],
        "summary": {
            "requests": 4000,
            "rates": {"planned": 20.0, "offered": 19.5, "achieved": 19.4, "by_scenario": {}},
        },
        "attempts": [
            {"attempt": 1, "verdict": "inconclusive", "reasons": ["too few"], "requests": 2000},
            {"attempt": 2, "verdict": "investigate", "reasons": ["p95 +40%"], "requests": 4000},
        ],
        "baseline": {
            "run_id": "run-41",
            "release": "v41",
            "comparisons": [
                comparison(
                    "all",
                    "no_regression",
                    "p95 +3% (95% CI -2%…+8%)",
                    baseline_value=20.0,
                    current_value=20.6,
                ),
                comparison("GET /a", "regression", "GET /a p95 +40% (…)"),
                comparison("GET /b", "no_regression", "GET /b p95 +1% (…)"),
            ],
            "findings": ["regression: GET /a p95 +40% (…)"],
            "inconclusive": [],
            "thin_baseline": [],
            "noisy": [],
            "figures": {},
        },
    }
    record = {
        **RECORD,
        "verdict": "investigate",
        "stages": {"api": stage},
        "history": [
            history_entry("run-41", "v41", "api", "pass"),
            history_entry("r1", "v2", "api", "investigate"),
        ],
    }
    paths = build_report(RunArtifacts(tmp_path, "r1"), record)
    md = Path(paths["markdown"]).read_text()
    assert "| Planned request rate (the plan's pacing) | 20.00 req/s |" in md
    assert "| Offered request rate | 19.50 req/s |" in md
    assert "| 2 | ⚠️ INVESTIGATE | 4,000 |" in md
    assert "Compared with v41 (`run-41`)" in md
    assert "| p95 +3% (95% CI -2%…+8%) | 20.0 ms | 20.6 ms | no regression |" in md
    assert "GET /a p95 +40%" in md and "GET /b p95" not in md  # a clear per-name one is not shown
    assert "| **this run** v2 | api | ⚠️ INVESTIGATE |" in md
    data = json.loads(Path(paths["json"]).read_text())
    assert data["stages"]["api"]["rates"]["offered"] == 19.5
    assert data["stages"]["api"]["baseline"]["release"] == "v41"
    assert [h["run_id"] for h in data["history"]] == ["run-41", "r1"]
