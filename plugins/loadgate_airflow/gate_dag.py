"""The DAG factory: one release-gate DAG per plan, its stages, form and docs from the plan.

A DAG gates with one plan, fixed when the DAG is parsed: its stage groups are the plan's stages
in the plan's order, its ``stages`` Param offers them, its ``doc_md`` describes them, and its
``prepare`` task refuses a profile of another plan (``loadgate.config.run.resolve_trigger``).
The plans are the known ones (``loadgate.config.run.known_plans``): those installed packages
ship (entry points ``loadgate.plans``) and those of the deployment's folder
``$LOADGATE_PLANS_DIR``. ``dags/`` maps a plan to its DAG's id, form default and deploy Asset;
a plan without one gets ``release_gate_<plan>`` and the Asset ``loadgate://deploys/<plan>``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, TaskGroup, chain, dag

from loadgate.config.run import known_plans, resolve_plan_path
from loadgate.plan import Plan, format_duration, load_plan
from loadgate_airflow import tasks
from loadgate_airflow.params import release_gate_params
from loadgate_airflow.stages import stage_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gate:
    """How a deployment gates with one plan: its DAG's id and name, the form's default
    profile (``None``: the only profile for the plan), the deploy Asset and extra tags."""

    dag_id: str | None = None
    display_name: str | None = None
    profile: str | None = None
    asset_uri: str | None = None
    tags: Sequence[str] = ()


def dag_id_of(plan: str) -> str:
    """The DAG id of a plan no mapping names: ``release_gate_<plan>``, in DAG-id characters."""
    return "release_gate_" + re.sub(r"[^A-Za-z0-9_.-]", "_", plan)


EXECUTION = """
## Execution plan

1. **Preparation**: `prepare` resolves the run: the trigger (this form, a REST call's conf, or
   the deploy event) names a profile, the target, the release, the scale, the time scale and
   the stages, nothing else; the operator's profile (the `loadgate_profiles` Variable) says
   everything else, and must run this DAG's plan. A target off the profile's allowlist, a key a
   trigger may not set, or load beyond the profile's limits is refused here, before anything is
   written or sent. `checklist` runs the pre-test checklist: deployment complete (the target
   reports the release), health checks, monitoring ready, alert rules, log aggregation,
   rollback plan, team notified. A failed required item ends the run here, before any load.
2. **Seed test users**: `seed_users` registers the plan's users (existing ones log in).
3. **Load stages**, one group each ({groups}), in the plan's order: the stage's load, then its
   `gate`. On the local backend `load_test` runs the shards as processes on the worker; with
   `backend=kubernetes` it renders one pod per shard and `load_pods` (a
   KubernetesPodOperator mapped over them) runs them (on the local backend it maps over no
   pod and is skipped). The engine checks the
   immediate-rollback criteria every second and stops a stage within seconds of a breach; each
   gate merges the shards' results with system metrics, compares the stage with the last good
   release (intervals, not single numbers) and decides **pass**, **investigate**,
   **rollback**, **inconclusive** (too little evidence: `rerun` runs the stage once more and
   decides on both attempts), **invalid** (the test cannot vouch for its numbers) or
   **error**. A rollback or error verdict skips the remaining stages.
4. **Rollback**: only on a rollback verdict; runs the configured action and verifies health.
5. **Post-test**, whatever happened (`post_test`): `collect_logs`, `cleanup_pods` (every pod of
   the run, by label), `build_report` (report.md, report.html, report.json, junit.xml under
   `<artifacts_root>/<run id>/`), `record_history` (the verdict and key figures appended to
   the release history, where later runs find their baseline) and `notify` (Slack, or the
   run's `notifications.jsonl`).
   `finalize` fails the run when the verdict is rollback, invalid or error.

## Triggers

- A deploy pipeline calls the REST API (`POST /api/v2/dags/{dag_id}/dagRuns` with
  `{{"conf": {{"target_url": ..., "release": ...}}}}`) or emits an event on the Asset
  `{asset}` with `release` and `target_url` in its extra.
- Reruns from the **Trigger** form: it opens ready to submit (its defaults are the documented
  default run); the profile, target and release come first, then the load's shape. Every
  task can be cleared and rerun: seeding is idempotent, a stage rerun replaces its results,
  messages already delivered are not sent again.
- Every task has an `execution_timeout`: one hour, and for the load tasks the longest stage a
  profile may allow plus half an hour.
"""


def doc_md(plan_name: str, plan: Plan, dag_id: str, asset_uri: str) -> str:
    """The DAG's documentation: the plan's description and stages, then how a run goes."""
    lines = [
        "# Release gate: load-test a fresh release, keep it or roll it back",
        "",
        f"After a production deploy this DAG load-tests the deployed service with the plan "
        f"`{plan_name}` and decides, with evidence, whether the release stays.",
        "",
    ]
    if plan.description.strip():
        lines += [" ".join(plan.description.split()), ""]
    lines += ["## Stages", ""]
    for name, stage in plan.stages.items():
        about = f": {stage.description}" if stage.description else ""
        lines.append(f"- `{name}`{about} ({format_duration(stage.duration)} at time scale 1)")
    groups = ", ".join(f"`{name}`" for name in plan.stages)
    return "\n".join(lines) + "\n" + EXECUTION.format(groups=groups, dag_id=dag_id, asset=asset_uri)


def gate_dag(plan_name: str, gate: Gate | None = None) -> DAG:
    """The release-gate DAG of the plan ``plan_name`` (a known plan's name)."""
    gate = gate or Gate()
    plan = load_plan(resolve_plan_path(plan_name))
    stages = list(plan.stages)
    dag_id = gate.dag_id or dag_id_of(plan_name)
    asset_uri = gate.asset_uri or f"loadgate://deploys/{plan_name}"
    deploys = Asset(name=asset_uri.rstrip("/").rsplit("/", 1)[-1] + "-deploys", uri=asset_uri)

    @dag(
        dag_id=dag_id,
        dag_display_name=gate.display_name or f"Release gate: {plan_name}",
        description=f"Load-test a fresh release with the plan {plan_name} and gate it on the "
        "rollback criteria",
        doc_md=doc_md(plan_name, plan, dag_id, asset_uri),
        schedule=[deploys],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["loadgate", "release-gate", "load-test", *gate.tags],
        default_args={
            "owner": "sre",
            "retry_delay": timedelta(seconds=15),
            "on_failure_callback": functools.partial(tasks.notify_task_failure, plan=plan_name),
            # every task is bounded; the load tasks by the longest stage a profile may allow
            "execution_timeout": timedelta(hours=1),
        },
        params=release_gate_params(stages, profile=gate.profile, plan=plan),
    )
    def release_gate() -> None:
        run = tasks.prepare(plan=plan_name)
        preflight = tasks.checklist(run)
        users = tasks.seed_users(run)
        chain(preflight, users)

        previous = users
        for stage in stages:
            previous = stage_tasks(run, stage, upstream=previous)

        rolled_back = tasks.rollback(run)
        with TaskGroup(
            group_id="post_test", tooltip="always: logs, pods, report, history, message"
        ):
            logs = tasks.collect_logs(run)
            cleanup = tasks.cleanup_pods(run)
            report = tasks.build_report(run)
            recorded = tasks.record_history(run)
            told = tasks.notify(run)
        chain(previous, rolled_back, logs, cleanup, report, recorded, told, tasks.finalize(run))

    return release_gate()


def gate_dags(gates: Mapping[str, Gate] | None = None) -> dict[str, Any]:
    """A DAG for every known plan (``gates``: the deployment's settings per plan), by id. A
    plan that is not usable is left out with its error logged, never the others with it."""
    gates = gates or {}
    dags = {}
    for name in known_plans():
        try:
            built = gate_dag(name, gates.get(name))
        except ValueError:  # a PlanError or a RunConfigError: the plan file's problem
            log.exception("plan %s: no release-gate DAG", name)
            continue
        dags[built.dag_id] = built
    return dags
