"""The stage-task factory: one load stage on either backend, then its gate, in a TaskGroup
named for the stage (``api.load_test``, ``api.shard_pods``, ``api.load_pods``, ``api.gate``), so
the grid reads like the plan; ``api.rerun.…`` runs the stage once more when its gate is
inconclusive.

Both backends are in the graph and the run's ``backend`` parameter picks one at run time: the
local task runs the shards as processes on the worker; the Kubernetes path renders one pod per
shard and maps the KubernetesPodOperator over them. The task of the backend not chosen skips
itself. Pods are kept when they end (``keep_pod``) so their logs can be collected; the
``cleanup_pods`` task deletes every pod of the run by label.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import TaskGroup, chain

from loadgate.config.profiles import MAX_STAGE_S
from loadgate.engine.exitcodes import EXIT_ABORTED
from loadgate_airflow import tasks

# A load task's backstop: the longest stage a profile may allow (prepare refuses a plan whose
# stage, time-scaled, is longer than its profile's ``limits.max_stage_s``), plus the graceful
# stop, pod start-up and result upload. Within it the engine stops each shard at the end of its
# schedule, and a pod's activeDeadlineSeconds is its plan's length plus a margin.
STAGE_TIMEOUT = timedelta(seconds=MAX_STAGE_S + 1800)


def _attempt(run: Any, stage: str, attempt: int) -> tuple[list[Any], Any]:
    """One execution of the stage on both backends and its gate: (its first tasks, its gate)."""
    local = tasks.run_stage.override(task_id="load_test", execution_timeout=STAGE_TIMEOUT)(
        run, stage=stage, attempt=attempt
    )
    pods = tasks.stage_pods.override(task_id="shard_pods")(run, stage=stage, attempt=attempt)
    remote = KubernetesPodOperator.partial(
        task_id="load_pods",
        get_logs=True,
        do_xcom_push=False,
        on_finish_action="keep_pod",
        termination_message_policy="FallbackToLogsOnError",
        # a shard stopped by a rollback criterion is not a task failure: its gate decides
        skip_on_exit_code=[EXIT_ABORTED],
        startup_timeout_seconds=600,
        execution_timeout=STAGE_TIMEOUT,
        startup_check_interval_seconds=1,
        retries=0,
    ).expand(pod_template_dict=pods)
    verdict = tasks.gate.override(task_id="gate")(run, stage=stage, attempt=attempt)
    chain(pods, remote)
    chain([local, remote], verdict)
    return [local, pods], verdict


def stage_tasks(run: Any, stage: str, upstream: Any) -> Any:
    """Wire ``stage`` after ``upstream``; returns its group (what the next stage waits for).

    Inside: the stage's load and its gate, then ``rerun`` (the same, once more), which runs only
    when the gate is inconclusive and decides on both attempts' pooled evidence.
    """
    with TaskGroup(group_id=stage, tooltip=f"the {stage} stage: its load, then its gate") as group:
        _, first = _attempt(run, stage, 1)
        with TaskGroup(group_id="rerun", tooltip="only when the gate is inconclusive"):
            starts, _ = _attempt(run, stage, 2)
        chain(first, starts)
    chain(upstream, group)
    return group
