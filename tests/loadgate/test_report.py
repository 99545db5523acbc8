"""The report: the seed's shape with measured values, in four formats."""

from __future__ import annotations

import json
import re
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
    assert "**Verdict:** **ROLLBACK**" in md
    # §1: a human label, the stage, the target as the seed states it (not the breach), a status
    assert "| Error rate | api | < 1% | 20% | — | — | **NOT MET** |" in md
    assert "| p95 response time | api | < 500 ms | 12.5 ms | — | — | **MET** |" in md
    assert "| CPU utilization | api | < 80% | — | — | — | **NO DATA** |" in md
    assert "12.5 ms" in md and "1,234" in md
    assert "Aborted" in md and "error-rate-rollback" in md
    assert "rolled back, target healthy" in md
    assert "_Not run._" in md
    assert "- [x] **OK** All health checks passing: 200" in md
    html = Path(paths["html"]).read_text()
    assert "<table>" in html  # the charts are charts.py's (its own tests)
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
    assert "| Planned request rate (the plan's pacing) | 20 req/s |" in md
    assert "| Offered request rate | 19.5 req/s |" in md
    assert "| 2 | **INVESTIGATE** | 4,000 |" in md
    assert "Compared with v41 (`run-41`)" in md
    assert "| p95 +3% (95% CI -2%…+8%) | 20 ms | 20.6 ms | no regression |" in md
    assert "GET /a p95 +40%" in md and "GET /b p95" not in md  # a clear per-name one is not shown
    assert "| **this run** v2 | api | **INVESTIGATE** |" in md
    data = json.loads(Path(paths["json"]).read_text())
    assert data["stages"]["api"]["rates"]["offered"] == 19.5
    assert data["stages"]["api"]["baseline"]["release"] == "v41"
    assert [h["run_id"] for h in data["history"]] == ["run-41", "r1"]


PLAN = (
    Path(__file__).resolve().parents[2] / "include/loadgate_syncbridge/plans/harmonyflow-10k.yaml"
)
EMOJI = re.compile("[\u2600-\u27bf\U0001f000-\U0001faff\ufe0f]")


def _measured_stage() -> dict:
    stage = json.loads(json.dumps(RECORD["stages"]["api"]))
    stage["load_levels"] = [
        {"level": "Light", "users": 3, "seconds": 9, "p95_ms": 150.0, "error_rate": 0.0,
         "cpu": 0.1, "memory": 0.2, "expected_p95_ms": 180.0, "limit_p95_ms": 200.0},
        {"level": "Heavy", "users": 30, "seconds": 40, "p95_ms": 620.0, "error_rate": 0.02,
         "cpu": 0.5, "memory": 0.3, "expected_p95_ms": 500.0, "limit_p95_ms": 500.0},
    ]  # fmt: skip
    stage["summary"]["by_name"]["GET /api/v1/sessions/{id}"].update({"failed": 120, "p50_ms": 4.0})
    stage["baseline"] = {
        "run_id": "run-41",
        "release": "v41",
        "comparisons": [comparison("GET /api/v1/sessions/{id}", "regression", "…",
                                   baseline_value=5.0, current_value=10.0)],
        "findings": [], "inconclusive": [], "thin_baseline": [], "noisy": [], "figures": {},
    }  # fmt: skip
    return stage


def _record_with_baseline() -> dict:
    base = history_entry("run-41", "v41", "api", "pass")
    base["stages"]["api"].update(
        {"requests": 1000, "error_rate": 0.001, "p95_ms": 10.0, "p99_ms": 25.0,
         "peak_users": 100}
    )  # fmt: skip
    return {
        **RECORD,
        "scale": 0.003,
        "time_scale": 0.1,
        "stages": {"api": _measured_stage(), "websocket": {"verdict": "not run", "reasons": []}},
        "history": [base],
    }


def test_figures_scaled_to_the_run_against_the_baseline_with_badges(tmp_path) -> None:
    """The plan's expectations scaled to the run (scale 0.003, time scale 0.1), the seed's
    load-level limits, the baseline release's values and changes, text badges, no emoji."""
    artifacts = RunArtifacts(tmp_path, "r1")
    artifacts.write_text("plan.yaml", PLAN.read_text())
    artifacts.write_json("logs/index.json", {"generator": ["logs/generator/api-shard-0.log"],
                                             "target": "logs/target.log"})  # fmt: skip
    paths = build_report(artifacts, _record_with_baseline())
    md = Path(paths["markdown"]).read_text()
    assert "e+0" not in md and "e+0" not in Path(paths["html"]).read_text()
    # 2.5M requests over 44 min at 10,000 users: ×0.003 users, ×0.1 the time → ~750
    assert "| Total requests | 1,234 | ~750 | ~750 |" in md
    assert "| Max concurrent users | 100 | ~30 | 30 |" in md
    assert "| p95 response time | 12.5 ms | 380 ms | < 500 ms |" in md  # latencies stay
    assert "| Error rate | 20% | 0.2% | < 1% |" in md
    # §1 with the baseline release's value and the change (percentage points for a rate)
    assert "| Error rate | api | < 1% | 20% | 0.1% | +19.90 pp | **NOT MET** |" in md
    assert "| p95 response time | api | < 500 ms | 12.5 ms | 10 ms | +25% | **MET** |" in md
    assert "Baseline (v41)" in md
    # §5: the level names, the seed's limits (p95 and error rate), whether they were kept
    assert "| api | Light | 3 | 9 | 150 ms | < 200 ms | 0% | < 0.1% | 10% | 20% | **MET** |" in md
    assert (
        "| api | Heavy | 30 | 40 | 620 ms | < 500 ms | 2% | < 1% | 50% | 30% | **NOT MET** |" in md
    )
    # per endpoint, the p95's change against the baseline
    assert (
        "| GET /api/v1/sessions/{id} | 600 | 120 | 20% | 4 ms | 10 ms | 20 ms "
        "| +100% (regression) |" in md
    )
    assert "| Peak users | 100 | ≥ 100 |" not in md  # no vus criterion in this record
    assert "| p95 response time (api) | 12.5 ms | < 500 ms | 10 ms (v41) | +25% |" in md
    assert "- [logs/generator/api-shard-0.log](logs/generator/api-shard-0.log)" in md
    assert not EMOJI.search(md)
    html = Path(paths["html"]).read_text()
    assert not EMOJI.search(html)
    assert '<strong class="badge badge-bad">ROLLBACK</strong>' in html
    assert '<strong class="badge badge-good">MET</strong>' in html
    assert '<a href="logs/target.log">logs/target.log</a>' in html
    assert '<ul class="cards" aria-label="Headline figures">' in html
    assert "v41: 10 ms (+25%)" in html  # a card: against the baseline release


def test_report_json_keeps_its_keys_and_gains_the_report_figures(tmp_path) -> None:
    artifacts = RunArtifacts(tmp_path, "r1")
    artifacts.write_text("plan.yaml", PLAN.read_text())
    data = json.loads(Path(build_report(artifacts, _record_with_baseline())["json"]).read_text())
    # what CI systems read, as before
    assert {
        "verdict", "reasons", "release", "target", "run_id", "dry_run", "stages", "checklist",
        "rollback", "timeline", "history",
    } <= set(data)  # fmt: skip
    api = data["stages"]["api"]
    assert {
        "verdict", "requests", "error_rate", "p95_ms", "p99_ms", "aborted", "reasons",
        "criteria", "rates", "invalid", "attempts", "baseline",
    } <= set(api)  # fmt: skip
    # and the report's figures
    assert data["scale"] == 0.003 and data["plan"] == "harmonyflow-10k"
    error_row = next(r for r in data["acceptance"] if r["id"] == "api-error-rate")
    assert error_row == {
        "id": "api-error-rate", "label": "Error rate", "stage": "api", "target": "< 1%",
        "measured": 0.2, "baseline": 0.001, "baseline_release": "v41", "change": "+19.90 pp",
        "status": "not met", "unit": "%",
    }  # fmt: skip
    cards = {c["key"]: c for c in data["headline"]}
    assert cards["p95"]["value"] == 12.5 and cards["p95"]["baseline"] == 10.0
    assert cards["error_rate"]["target"] == "< 1%"
    total = next(e for e in api["expected"] if e["label"] == "Total requests")
    assert total == {"label": "Total requests", "measured": 1234, "expected": 750.0,
                     "target": "~750", "scaled": True}  # fmt: skip
    assert [lv["status"] for lv in api["load_levels"]] == ["met", "not met"]
    assert api["endpoints"][0]["baseline_p95_ms"] == 5.0
    assert data["stages"]["websocket"]["verdict"] == "not run"


def test_the_headline_latency_is_the_judged_stages(tmp_path) -> None:
    """A WebSocket stage's few HTTP logins (slower, no latency criterion) are not the run's p95:
    the card reads the stages whose response time the plan judges."""
    websocket = {
        "verdict": "pass",
        "reasons": [],
        "criteria": [],
        "summary": {"requests": 40, "error_rate": 0.0, "p95_ms": 90.0, "p99_ms": 95.0,
                    "max_vus": 20, "ws": {"max_connections": 20}},
    }  # fmt: skip
    record = {**RECORD, "stages": {"api": RECORD["stages"]["api"], "websocket": websocket}}
    data = json.loads(Path(build_report(RunArtifacts(tmp_path, "r1"), record)["json"]).read_text())
    cards = {c["key"]: c for c in data["headline"]}
    assert (cards["p95"]["stage"], cards["p95"]["value"]) == ("api", 12.5)
    assert cards["peak_connections"]["value"] == 20 and cards["requests"]["value"] == 1274


def test_a_plans_target_text_reads_as_people_write_it(tmp_path) -> None:
    artifacts = RunArtifacts(tmp_path, "r1")
    artifacts.write_text("plan.yaml", PLAN.read_text())
    record = _record_with_baseline()
    # an HTTP stage's WebSocket figures are all zero: not shown
    record["stages"]["api"]["summary"]["ws"] = {"connects": 0, "max_connections": 0,
                                                "messages_sent": 0, "error_rate": 0.0}  # fmt: skip
    md = Path(build_report(artifacts, record)["markdown"]).read_text()
    assert "| p99 response time | 30 ms | 650 ms | < 1,000 ms |" in md  # the plan's "<1000ms"
    # every figure measured is in the expected table: none twice, no table of zeros
    assert md.count("| p50 response time |") == 1 and "Also measured" not in md
    assert "Max WebSocket connections" not in md
