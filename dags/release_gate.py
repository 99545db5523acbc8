"""
# Release gate: load-test a fresh release, keep it or roll it back

After a production deploy this DAG load-tests the deployed service and decides, with evidence,
whether the release stays. The plan is data (`harmonyflow-10k` by default, shipped by the
example package: the HarmonyFlow SyncBridge test of 10,000 concurrent connections).

## Execution plan

1. **Preparation**: `prepare` resolves the run: the trigger (this form, a REST call's conf, or
   the deploy event) names a profile, the target, the release, the scale, the time scale and
   the stages, nothing else; the operator's profile (the `loadgate_profiles` Variable) says
   everything else. A target off the profile's allowlist, a key a trigger may not set, or load
   beyond the profile's limits is refused here, before anything is written or sent.
   `checklist` runs the pre-test checklist: deployment complete (the target reports the
   release), health checks, monitoring ready, alert rules, log aggregation, rollback plan,
   team notified. A failed required item ends the run here, before any load is sent.
2. **Seed test users**: `seed_users` registers the plan's users (existing ones log in).
3. **Load stages**, one group each (`api`, `websocket`, `session`), in the plan's order: the
   stage's load, then its `gate`. On the local backend `load_test` runs the shards as processes
   on the worker; with `backend=kubernetes`, `shard_pods` renders one pod per shard and
   `load_pods` (a KubernetesPodOperator mapped over them) runs them instead. The engine checks
   the immediate-rollback criteria every second and stops a stage within seconds of a breach;
   each gate merges the shards' results with system metrics, compares the stage with the last
   good release (intervals, not single numbers) and decides **pass**, **investigate**,
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

- A deploy pipeline calls the REST API (`POST /api/v2/dags/release_gate/dagRuns` with
  `{"conf": {"target_url": ..., "release": ...}}`) or emits an event on the Asset
  `loadgate://deploys/harmonyflow-syncbridge` with `release` and `target_url` in its extra.
- Reruns from the **Trigger** form: it opens ready to submit (its defaults are the documented
  default run); the profile, target and release come first, then the load's shape. Every
  task can be cleared and rerun: seeding is idempotent, a stage rerun replaces its results,
  messages already delivered are not sent again.
- Every task has an `execution_timeout`: one hour, and for the load tasks the longest stage a
  profile may allow plus half an hour.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, TaskGroup, chain, dag
from loadgate_airflow import tasks
from loadgate_airflow.params import release_gate_params
from loadgate_airflow.stages import stage_tasks

DEPLOYS = Asset(
    name="harmonyflow-syncbridge-deploys", uri="loadgate://deploys/harmonyflow-syncbridge"
)
STAGES = ("api", "websocket", "session")


@dag(
    dag_id="release_gate",
    dag_display_name="Release gate",
    description="Load-test a fresh release and gate it on the rollback criteria",
    doc_md=__doc__,
    schedule=[DEPLOYS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["loadgate", "release-gate", "load-test", "harmonyflow"],
    default_args={
        "owner": "sre",
        "retry_delay": timedelta(seconds=15),
        "on_failure_callback": tasks.notify_task_failure,
        # every task is bounded; the load tasks by the longest stage a profile may allow
        "execution_timeout": timedelta(hours=1),
    },
    params=release_gate_params(STAGES),
)
def release_gate() -> None:
    run = tasks.prepare()
    preflight = tasks.checklist(run)
    users = tasks.seed_users(run)
    chain(preflight, users)

    previous = users
    for stage in STAGES:
        previous = stage_tasks(run, stage, upstream=previous)

    rolled_back = tasks.rollback(run)
    with TaskGroup(group_id="post_test", tooltip="always: logs, pods, report, history, message"):
        logs = tasks.collect_logs(run)
        cleanup = tasks.cleanup_pods(run)
        report = tasks.build_report(run)
        recorded = tasks.record_history(run)
        told = tasks.notify(run)
    chain(previous, rolled_back, logs, cleanup, report, recorded, told, tasks.finalize(run))


release_gate()
