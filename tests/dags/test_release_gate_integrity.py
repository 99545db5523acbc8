"""The DAG loads in a real Airflow: no import errors, no cycles, a usable params form."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from tests.support.airflow import airflow_env

PROBE = r"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag()
dag = bag.dags.get("release_gate")
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}}
if dag is not None:
    dag.validate()
    dag.params.validate()
    out.update(
        tasks=sorted(dag.task_ids),
        edges=sorted([t.task_id, d] for t in dag.tasks for d in t.downstream_task_ids),
        params={k: dag.params.get_param(k).serialize() for k in dag.params},
        tags=sorted(dag.tags),
        doc_md=dag.doc_md or "",
        schedule=type(dag.timetable).__name__,
        assets=[a.uri for a in dag.timetable.asset_condition.objects],
        trigger_rules={t.task_id: str(getattr(t.trigger_rule, "value", "")) for t in dag.tasks},
    )
print("PROBE" + json.dumps(out, default=str))
"""


# The run's closing tasks, in order: they run whatever the stages and gates did (all_done).
CLOSING_TASKS = ("rollback", "collect_logs", "cleanup_pods", "build_report", "notify", "finalize")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    env = airflow_env(tmp_path_factory.mktemp("airflow"))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE")), None)
    assert line, f"the DAG probe failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(line[len("PROBE") :])


def test_no_import_errors(probe) -> None:
    assert probe["errors"] == {}
    assert "tasks" in probe, "release_gate is not in the DagBag"


def test_tasks_follow_the_execution_plan(probe) -> None:
    edges = {tuple(e) for e in probe["edges"]}
    plan = [
        "prepare",
        "checklist",
        "seed_users",
        "api_load_test",
        "api_gate",
        "websocket_load_test",
        "websocket_gate",
        "session_load_test",
        "session_gate",
        *CLOSING_TASKS,
    ]
    assert set(plan) <= set(probe["tasks"])
    for a, b in itertools.pairwise(plan):
        assert (a, b) in edges, f"{a} should come right before {b}"
    for always in (*CLOSING_TASKS, "api_gate", "websocket_load_test", "session_shard_pods"):
        assert probe["trigger_rules"][always] == "all_done"
    # the Kubernetes path of each stage: pods rendered, the operator mapped over them
    for stage in ("api", "websocket", "session"):
        assert (f"{stage}_shard_pods", f"{stage}_load_pods") in edges
        assert (f"{stage}_load_pods", f"{stage}_gate") in edges


def test_params_form_is_documented_and_valid(probe) -> None:
    params = probe["params"]
    for name in (
        "target_url",
        "release",
        "plan",
        "scale",
        "time_scale",
        "stages",
        "backend",
        "dry_run",
        "artifacts_root",
        "aws_conn_id",
    ):
        assert name in params, name
        assert params[name]["description"], f"param {name} has no description"
    assert params["backend"]["schema"]["enum"] == ["local", "kubernetes"]


def test_doc_tags_and_asset_schedule(probe) -> None:
    assert "Execution plan" in probe["doc_md"]
    assert "loadgate" in probe["tags"]
    assert probe["schedule"] == "AssetTriggeredTimetable"
    assert probe["assets"] == ["loadgate://deploys/harmonyflow-syncbridge"]
