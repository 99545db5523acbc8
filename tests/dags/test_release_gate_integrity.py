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
from airflow.sdk.bases.skipmixin import SkipMixin
from loadgate.config.profiles import shipped_profiles
from loadgate.config.run import resolve_trigger
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
        branches=sorted(t.task_id for t in dag.tasks if isinstance(t, SkipMixin)),
        mapped={
            t.task_id: sorted(u.task_id for u in t.iter_mapped_dependencies())
            for t in dag.tasks
            if getattr(t, "is_mapped", False)
        },
        groups=sorted(dag.task_group.children),
        display_name=dag.dag_display_name,
        default_run=resolve_trigger(
            dag.params.dump(), profiles=shipped_profiles(), plan="harmonyflow-10k"
        ).model_dump(mode="json"),
    )
print("PROBE" + json.dumps(out, default=str))
"""


# The run's closing tasks, in order: they run whatever the stages and gates did (all_done).
CLOSING_TASKS = (
    "rollback",
    "post_test.collect_logs",
    "post_test.cleanup_pods",
    "post_test.build_report",
    "post_test.record_history",
    "post_test.notify",
    "finalize",
)
STAGES = ("api", "websocket", "session")


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
        "api.load_test",
        "api.gate",
        "api.rerun.load_test",
        "api.rerun.gate",
        "websocket.load_test",
        "websocket.gate",
        "websocket.rerun.load_test",
        "websocket.rerun.gate",
        "session.load_test",
        "session.gate",
        "session.rerun.load_test",
        "session.rerun.gate",
        *CLOSING_TASKS,
    ]
    assert set(plan) <= set(probe["tasks"])
    for a, b in itertools.pairwise(plan):
        assert (a, b) in edges, f"{a} should come right before {b}"
    always = (*CLOSING_TASKS, "api.gate", "websocket.load_test", "session.rerun.gate")
    for task_id in always:
        assert probe["trigger_rules"][task_id] == "all_done"
    # a re-run starts only when its gate follows it (a branch), never after a skipped gate
    assert probe["trigger_rules"]["api.rerun.load_test"] == "all_success"
    assert probe["branches"] == sorted(f"{stage}.gate" for stage in STAGES)
    # each attempt: the load, the operator mapped over its pods (none on the local backend),
    # the gate; the first gate leads to the re-run's load and its gate, so it can skip both
    for stage in STAGES:
        for attempt in (f"{stage}.", f"{stage}.rerun."):
            assert (f"{attempt}load_test", f"{attempt}load_pods") in edges
            assert (f"{attempt}load_pods", f"{attempt}gate") in edges
        assert {(f"{stage}.gate", f"{stage}.rerun.{t}") for t in ("load_test", "gate")} <= edges
        assert probe["mapped"][f"{stage}.load_pods"] == [f"{stage}.load_test"]


def test_the_grid_reads_like_the_plan(probe) -> None:
    """Top level: checklist, seeding, one group per stage, rollback, post-test, finalize."""
    assert set(probe["groups"]) == {
        "prepare",
        "checklist",
        "seed_users",
        *STAGES,
        "rollback",
        "post_test",
        "finalize",
    }
    for stage in STAGES:
        inside = {t for t in probe["tasks"] if t.startswith(f"{stage}.")}
        one = ("load_test", "load_pods", "gate")
        assert inside == {f"{stage}.{t}" for t in one} | {f"{stage}.rerun.{t}" for t in one}
    assert probe["display_name"] == "Release gate"


def test_params_form_is_documented_and_valid(probe) -> None:
    """The form holds what a trigger may set, and nothing else (#10: the rest is the
    profile's)."""
    from loadgate.config.profiles import TRIGGER_KEYS

    params = probe["params"]
    assert sorted(params) == sorted(TRIGGER_KEYS)
    sections = []
    for name, param in params.items():
        schema = param["schema"]
        assert param["description"] or schema.get("description_md"), f"{name}: no description"
        assert schema.get("section"), f"param {name} is in no section"
        sections.append(schema["section"])
        # a field that may be left empty admits null and starts as null: the UI form marks any
        # other field required, and an empty one invalid (the form could not be submitted)
        if param["value"] in ("", None):
            assert "null" in schema["type"] and param["value"] is None, name
    assert list(dict.fromkeys(sections)) == ["Target and release", "Load shape"]
    assert params["stages"]["value"] == list(STAGES)
    assert params["stages"]["schema"]["items"]["enum"] == list(STAGES)
    assert params["profile"]["value"] == "syncbridge"  # the DAG file's default for its plan


def test_the_form_as_it_opens_is_the_documented_default_run(probe) -> None:
    from loadgate.config.run import RunConfig

    assert probe["default_run"] == RunConfig(
        profile="syncbridge",
        plan="harmonyflow-10k",
        target_url="http://127.0.0.1:8080",
        rollback={"type": "syncbridge"},
        stages=list(STAGES),  # the plan's, in its order
    ).model_dump(mode="json")  # the example's profile: its plan, target and rollback


def test_doc_tags_and_asset_schedule(probe) -> None:
    assert "Execution plan" in probe["doc_md"]
    assert "`harmonyflow-10k`" in probe["doc_md"]  # generated from the plan: its stages
    stages = [ln.split("`")[1] for ln in probe["doc_md"].splitlines() if ln.startswith("- `")]
    assert stages == list(STAGES)
    assert "- `api`: API load test (§3.1) (44m0s at time scale 1)" in probe["doc_md"]
    assert "loadgate" in probe["tags"]
    assert probe["schedule"] == "AssetTriggeredTimetable"
    assert probe["assets"] == ["loadgate://deploys/harmonyflow-syncbridge"]
