"""
# Release gate: load-test a fresh release, keep it or roll it back

After a production deploy this DAG load-tests the deployed service and decides, with evidence,
whether the release stays. The plan is data (`include/plans/harmonyflow-10k.yaml` by default:
the HarmonyFlow SyncBridge test of 10,000 concurrent connections).

## Execution plan

1. **Preparation**: `prepare` resolves the run (this form, the trigger's conf, or the deploy
   event) and refuses a target that is not on the allowlist. `checklist` runs the pre-test
   checklist: deployment complete (the target reports the release), health checks, monitoring
   ready, alert rules, log aggregation, rollback plan, team notified. A failed required item
   ends the run here, before any load is sent.
2. **Seed test users**: `seed_users` registers the plan's users (existing ones log in).
3. **Load stages**, each followed by its gate:
   `api_load_test` → `api_gate` → `websocket_load_test` → `websocket_gate` →
   `session_load_test` → `session_gate`. With `backend=kubernetes` the stage runs as
   `<stage>_shard_pods` → `<stage>_load_pods` (a KubernetesPodOperator mapped over the shards)
   instead, and `cleanup_pods` deletes every pod of the run at the end. The engine checks the
   immediate-rollback criteria every second and stops a stage within seconds of a breach;
   each gate merges the shards' results with system metrics and decides **pass**,
   **investigate** or **rollback**.
   A rollback verdict skips the remaining stages.
4. **Rollback**: only on a rollback verdict; runs the configured action and verifies health.
5. **Post-test**, whatever happened: `collect_logs`, `build_report` (report.md, report.html,
   report.json, junit.xml under `<artifacts_root>/<run id>/`) and `notify` (Slack, or the
   run's `notifications.jsonl`). `finalize` fails the run when the verdict is rollback.

## Triggers

- A deploy pipeline calls the REST API (`POST /api/v2/dags/release_gate/dagRuns` with
  `{"conf": {"target_url": ..., "release": ...}}`) or emits an event on the Asset
  `loadgate://deploys/harmonyflow-syncbridge` with `release` and `target_url` in its extra.
- Reruns from this form. Every task can be cleared and rerun: seeding is idempotent, a stage
  rerun replaces its results, messages already delivered are not sent again.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, chain, dag
from loadgate_airflow import tasks
from loadgate_airflow.stages import stage_tasks

DEPLOYS = Asset(
    name="harmonyflow-syncbridge-deploys", uri="loadgate://deploys/harmonyflow-syncbridge"
)
STAGES = ("api", "websocket", "session")


@dag(
    dag_id="release_gate",
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
    },
    params={
        "target_url": Param(
            "http://127.0.0.1:8080",
            type="string",
            title="Target URL",
            description="Base URL of the freshly deployed service. It must be on the "
            "loadgate_target_allowlist Variable (loopback is always allowed).",
        ),
        "release": Param(
            "",
            type="string",
            title="Release",
            description="The release id the target must report (/healthz). Empty: take it "
            "from the deploy event, or only warn.",
        ),
        "plan": Param(
            "harmonyflow-10k",
            type="string",
            title="Test plan",
            description="A plan in include/plans (by name) or a path to a plan YAML file.",
        ),
        "scale": Param(
            1.0,
            type="number",
            exclusiveMinimum=0,
            maximum=10,
            title="Load scale",
            description="Multiplies virtual users, connections and rates (1 = the plan's "
            "10,000 users; 0.01 = 100).",
        ),
        "time_scale": Param(
            1.0,
            type="number",
            exclusiveMinimum=0,
            maximum=10,
            title="Time scale",
            description="Multiplies every duration (1 = the plan's 44-minute API test; 0.05 "
            "plays it in about 2 minutes).",
        ),
        "stages": Param(
            list(STAGES),
            type="array",
            items={"type": "string", "enum": list(STAGES)},
            minItems=1,
            title="Stages",
            description="Which load stages to run, in the plan's order.",
        ),
        "backend": Param(
            "local",
            type="string",
            enum=["local", "kubernetes"],
            title="Backend",
            description="Where the load engine runs: local processes on the worker, or "
            "KubernetesPodOperator pods (the kubernetes_default connection).",
        ),
        "shards": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=100,
            title="Shards per stage",
            description="Load generators per stage. Empty: the plan's number.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Validate everything and report who would get how much load; send none.",
        ),
        "artifacts_root": Param(
            "artifacts",
            type="string",
            title="Artifacts root",
            description="Folder (or s3://bucket/prefix) under which each run writes its "
            "results, logs and report.",
        ),
        "aws_conn_id": Param(
            "aws_default",
            type="string",
            title="AWS connection",
            description="For an s3:// artifacts root: the Airflow aws connection (credentials, "
            "endpoint_url, region). Kubernetes pods take theirs from a Secret (kubernetes."
            "secret_env) or their service account.",
        ),
        "prometheus_url": Param(
            "",
            type="string",
            title="Prometheus URL",
            description="Prometheus server for system metrics and alert rules. Empty: scrape "
            "the target's own /metrics.",
        ),
        "target_log": Param(
            "",
            type="string",
            title="Target log",
            description="Path of the target's log file, read by the checklist and collected "
            "into the artifacts.",
        ),
        "kubernetes": Param(
            {},
            type="object",
            title="Kubernetes pods",
            description="For backend=kubernetes: namespace, image, service_account, "
            "node_selector, tolerations, secret_env … (loadgate.kubernetes.PodSettings).",
        ),
        "target_selector": Param(
            "",
            type="string",
            title="Target pods",
            description="Label selector of the target's pods (in the kubernetes namespace): "
            "their logs are collected. Empty: none.",
        ),
        "rollback": Param(
            {"type": "syncbridge"},
            type="object",
            title="Rollback action",
            description='{"type": "syncbridge"} restores the reference service\'s previous '
            'release; {"type": "command", "command": [...]} runs a command; '
            '{"type": "webhook", "url": "..."} calls a webhook.',
        ),
    },
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
    logs = tasks.collect_logs(run)
    cleanup = tasks.cleanup_pods(run)
    report = tasks.build_report(run)
    told = tasks.notify(run)
    chain(previous, rolled_back, logs, cleanup, report, told, tasks.finalize(run))


release_gate()
