"""A plan with stages of its own (``browse``, ``checkout``) runs end to end through its DAG.

The plan is the deployment's (``LOADGATE_PLANS_DIR``: tests/fixtures/plans), so the DAG factory
gives it the DAG ``release_gate_shop``; ``airflow dags test`` runs it against the real
reference service on a profile of that plan, which the trigger does not name (the only one for
the plan).

Its ``checkout`` stage is too short for its must-have criterion, so its first gate is
inconclusive and the gate (a branch) goes on to the re-run, which decides on both attempts;
``browse``'s gate decides and skips its re-run. Which tasks ran is read from Airflow's own
task-instance table: a task skipped by the branch or the scheduler has no try.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.support.airflow import airflow_env, connection_env, dags_test, migrate, profiles_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
ADMIN = "e2e-admin-token"


def test_a_plan_with_its_own_stages_runs_through_its_dag(start_syncbridge, tmp_path) -> None:
    home = tmp_path / "airflow"
    migrate(airflow_env(home))
    db = tmp_path / "syncbridge.db"  # a previous release, which a rollback would restore
    start_syncbridge(tmp_path / "previous", release="v1", db_path=db).stop()
    svc = start_syncbridge(tmp_path / "svc", release="v2", db_path=db, admin_token=ADMIN)
    profile = {
        "plan": "shop",
        "default_target": svc.url,
        "artifacts_root": str(tmp_path / "artifacts"),
        "target_log": str(svc.log_path),
        "rollback": {"type": "syncbridge"},
    }
    env = airflow_env(
        home,
        LOADGATE_PLANS_DIR=str(PLANS),
        **profiles_env({"shop": profile}),
        **connection_env("loadgate_target", conn_type="http", password=ADMIN),
    )
    proc = dags_test(env, {"release": "v2"}, cwd=tmp_path, dag_id="release_gate_shop")
    output = proc.stdout + proc.stderr
    runs = list((tmp_path / "artifacts").glob("*/run.json"))
    assert len(runs) == 1, f"no run root written:\n{output[-5000:]}"
    run_root = runs[0].parent
    assert proc.returncode == 0, output[-5000:]
    record = json.loads((run_root / "run.json").read_text())
    assert record["config"]["profile"] == "shop" and record["config"]["plan"] == "shop"
    assert record["config"]["stages"] == ["browse", "checkout"]
    for stage in ("browse", "checkout"):  # each stage ran, and its gate decided
        assert list(run_root.glob(f"stages/{stage}/shard-0/meta.json")), stage
        gate = json.loads((run_root / "gates" / f"{stage}.json").read_text())
        assert gate["verdict"] == "pass", (stage, gate.get("reasons"))
    first = json.loads((run_root / "gates" / "checkout.attempt-1.json").read_text())
    assert first["verdict"] == "inconclusive", first["reasons"]
    assert list(run_root.glob("stages/checkout/attempt-2/shard-0/meta.json"))
    assert not (run_root / "gates" / "browse.attempt-1.json").exists()
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("select task_id, state, try_number from task_instance").fetchall()
    ran = {task: state for task, state, tries in rows if tries > 0}  # a task run has a try
    states = {task: state for task, state, _ in rows}
    # the local backend: the pod operator maps over no pod, and starts nothing
    assert states["browse.load_pods"] == "skipped" and "browse.load_pods" not in ran, states
    # browse decided: its re-run skipped by the gate, neither task started
    for task in ("browse.rerun.load_test", "browse.rerun.gate"):
        assert states[task] == "skipped" and task not in ran, (task, states)
    # checkout was inconclusive: its re-run ran and its gate decided on both attempts
    for task in ("checkout.gate", "checkout.rerun.load_test", "checkout.rerun.gate"):
        assert ran.get(task) == "success", (task, states)
    report = json.loads((run_root / "report.json").read_text())
    assert report["verdict"] == "pass", report["reasons"]
    assert list(report["stages"]) == ["browse", "checkout"]
    assert all(s["requests"] >= 100 for s in report["stages"].values()), report["stages"]
    text = (run_root / "report.md").read_text()
    assert "browse" in text and "checkout" in text
