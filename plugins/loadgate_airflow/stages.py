"""The stage-task factory: one load stage on either backend, then its gate, in a TaskGroup
named for the stage (``api.load_test``, ``api.load_pods``, ``api.gate``), so the grid reads like
the plan; ``api.rerun.…`` runs the stage once more when its gate is inconclusive.

``load_test`` sends the stage's load on the run's backend (its ``backend`` parameter, known at
run time): on the local backend it runs the shards as processes on the worker; on Kubernetes it
renders one pod per shard and the KubernetesPodOperator (``load_pods``) is mapped over them.
Mapped over the local backend's empty list, ``load_pods`` is skipped by the scheduler, no
process started. Pods are kept when they end (``keep_pod``) so their logs can be collected; the
``cleanup_pods`` task deletes every pod of the run by label.

The first gate is a branch: only an inconclusive verdict goes on to the re-run; otherwise it
skips the re-run's first task and its gate (both its direct downstream), so a decided stage
starts no process for a re-run it does not need. Every task a run needs costs a worker process
that parses the DAG file, so a run starts only those.
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


def _load(run: Any, stage: str, attempt: int) -> tuple[Any, Any]:
    """One execution of the stage on the run's backend: (its first task, its last)."""
    load = tasks.load_test.override(
        task_id="load_test",
        execution_timeout=STAGE_TIMEOUT,
        # a re-run starts only on its gate's word (the branch); a gate that skipped itself
        # (a stage not chosen, or after a rollback) leaves it skipped without a process
        trigger_rule="all_done" if attempt == 1 else "all_success",
    )(run, stage=stage, attempt=attempt)
    pods = KubernetesPodOperator.partial(
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
    ).expand(pod_template_dict=load)
    return load, pods


def stage_tasks(run: Any, stage: str, upstream: Any) -> Any:
    """Wire ``stage`` after ``upstream``; returns its group (what the next stage waits for).

    Inside: the stage's load and its gate, then ``rerun`` (the same, once more), which runs only
    when the gate is inconclusive and decides on both attempts' pooled evidence.
    """
    with TaskGroup(group_id=stage, tooltip=f"the {stage} stage: its load, then its gate") as group:
        load, pods = _load(run, stage, 1)
        with TaskGroup(group_id="rerun", tooltip="only when the gate is inconclusive") as rerun:
            again, again_pods = _load(run, stage, 2)
            second = tasks.rerun_gate.override(task_id="gate")(run, stage=stage)
        first = tasks.gate.override(task_id="gate")(
            run, stage=stage, rerun=f"{rerun.group_id}.load_test"
        )
        chain([load, pods], first)
        chain(first, [again, second])  # the branch skips both when the stage is decided
        chain([again, again_pods], second)
    chain(upstream, group)
    return group
