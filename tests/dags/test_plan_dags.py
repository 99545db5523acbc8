"""One release-gate DAG per plan: a plan of the deployment's folder (LOADGATE_PLANS_DIR) with
stages neither the example's gets its own DAG, its stages, form and docs from the plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.airflow import airflow_env, profiles_env

PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"

PROBE = r"""
import json
from airflow.dag_processing.dagbag import DagBag
from loadgate.config.run import RunConfigError, resolve_trigger
from loadgate_airflow import settings
bag = DagBag()
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags)}
dag = bag.dags.get("release_gate_shop")
if dag is not None:
    dag.validate()
    dag.params.validate()
    out.update(
        groups=[g for g in dag.task_group.children],
        edges=sorted([t.task_id, d] for t in dag.tasks for d in t.downstream_task_ids),
        params={k: dag.params.get_param(k).serialize() for k in dag.params},
        doc_md=dag.doc_md or "",
        assets=[a.uri for a in dag.timetable.asset_condition.objects],
    )
    profiles = settings.profiles()
    out["default_run"] = resolve_trigger(
        dag.params.dump(), profiles=profiles, plan="shop"
    ).model_dump(mode="json")
    try:
        resolve_trigger({**dag.params.dump(), "stages": ["api"]}, profiles=profiles, plan="shop")
    except RunConfigError as exc:
        out["bad_stage"] = str(exc)
    try:
        resolve_trigger({"profile": "syncbridge"}, profiles=profiles, plan="shop")
    except RunConfigError as exc:
        out["other_plan"] = str(exc)
print("PROBE" + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    profile = {"shop": {"plan": "shop", "default_target": "http://127.0.0.1:9"}}
    env = airflow_env(
        tmp_path_factory.mktemp("airflow"), LOADGATE_PLANS_DIR=str(PLANS), **profiles_env(profile)
    )
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE")), None)
    assert line, f"the DAG probe failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(line[len("PROBE") :])


def test_every_plan_has_its_dag(probe) -> None:
    assert probe["errors"] == {}
    assert {"release_gate", "release_gate_shop"} <= set(probe["dags"])


def test_the_stages_are_the_plans_in_its_order(probe) -> None:
    groups = probe["groups"]
    assert [g for g in groups if g in ("browse", "checkout")] == ["browse", "checkout"]
    assert not {"api", "websocket", "session"} & set(groups)
    edges = {tuple(e) for e in probe["edges"]}
    assert ("seed_users", "browse.load_test") in edges
    assert ("browse.rerun.gate", "checkout.load_test") in edges
    assert ("checkout.rerun.gate", "rollback") in edges


def test_the_form_offers_the_plans_stages_and_opens_on_its_profile(probe) -> None:
    stages = probe["params"]["stages"]
    assert stages["value"] == ["browse", "checkout"]
    assert stages["schema"]["items"]["enum"] == ["browse", "checkout"]
    assert probe["params"]["profile"]["value"] is None  # the only profile for the plan
    run = probe["default_run"]
    assert (run["profile"], run["plan"], run["stages"]) == ("shop", "shop", ["browse", "checkout"])
    assert probe["bad_stage"] == (
        "invalid run parameters: stages: 'api' not in plan 'shop' (its stages: browse, checkout)"
    )
    assert (
        "profile 'syncbridge' runs plan 'harmonyflow-10k', not this DAG's plan 'shop'"
        in (probe["other_plan"])
    )


def test_the_docs_and_asset_come_from_the_plan(probe) -> None:
    doc = probe["doc_md"]
    assert "`shop`" in doc and "Shop smoke test" in doc and "Execution plan" in doc
    assert "- `browse`: browsing (GET /healthz) (4s at time scale 1)" in doc
    assert "`browse`, `checkout`" in doc
    assert probe["assets"] == ["loadgate://deploys/shop"]
