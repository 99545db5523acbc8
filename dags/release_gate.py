"""
# Release gates: one DAG per plan

Each known plan gets its release-gate DAG (`loadgate_airflow.gate_dag`): the plan's stages in
its order, its form and its documentation come from the plan. The known plans are those the
installed packages ship (entry points `loadgate.plans`) and the `*.yaml` files of the folder
named by the environment variable `LOADGATE_PLANS_DIR` on the DAG processor and the workers.

This file is deployment glue: it names, per plan, the DAG's id, the form's default profile and
the deploy Asset. A plan it does not name gets the DAG `release_gate_<plan>`, the Asset
`loadgate://deploys/<plan>` and, when a trigger names no profile, the only profile for the plan.
"""

from __future__ import annotations

from loadgate_airflow.gate_dag import Gate, gate_dags

GATES = {
    # the example: the reference SyncBridge service's plan, on its shipped profile
    "harmonyflow-10k": Gate(
        dag_id="release_gate",
        display_name="Release gate",
        profile="syncbridge",
        asset_uri="loadgate://deploys/harmonyflow-syncbridge",
        tags=("harmonyflow",),
    ),
}

globals().update(gate_dags(GATES))
