"""The release gate's tasks: each one reads Airflow's context and calls one core step.

The run record (``loadgate.pipeline.prepare``) travels by XCom; it holds no secret. Secrets are
read from Connections inside the task that needs them and handed to the core, never returned.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.sdk import task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from loadgate import pipeline
from loadgate.backends.kubernetes import logs as k8s_logs
from loadgate.backends.kubernetes import manifests
from loadgate.backends.kubernetes import pods as k8s_pods
from loadgate.backends.local import run_stage_local
from loadgate.client import GATE_KEY
from loadgate.config.profiles import ProfileError
from loadgate.config.run import RunConfig, RunConfigError, resolve_trigger
from loadgate.notify import Links, Notifier, stage_figures, task_failed_message
from loadgate.run import folder
from loadgate.run import gate as gates
from loadgate.storage import is_remote
from loadgate.verdict.outcomes import Verdict
from loadgate_airflow import settings

log = logging.getLogger("loadgate")


def _run(run_record: dict[str, Any] | None, *, rollback_action: bool = False) -> folder.Run:
    """The run a task works on; a task that runs after a failed ``prepare`` has none.

    ``rollback_action``: the tasks that check or run the rollback take it from the profile
    again (the record holds a webhook as scheme://host only); no other task reads the
    profiles, so a profile edited during the run cannot stop the report or the message.
    """
    if run_record is None:
        raise AirflowSkipException("the run was never prepared (see the prepare task)")
    run = folder.Run(run_record)
    if rollback_action:
        profile = settings.profiles().get(run.config.profile)
        if profile is not None:
            run.config = run.config.model_copy(update={"rollback": profile.rollback})
    _object_store(run.config)
    return run


def _object_store(config: RunConfig) -> None:
    """An s3:// run root: the run's aws connection becomes this task's AWS environment, which
    s3fs reads here and the engine processes inherit (pods get theirs from a Secret)."""
    if is_remote(config.artifacts_root):
        os.environ.update(settings.object_store_env(config.aws_conn_id))


def _apps_api(run: folder.Run) -> Any:
    """The kubernetes_default connection's AppsV1Api, for a ``kubernetes`` rollback action."""
    if run.config.rollback is None or run.config.rollback.type != "kubernetes":
        return None
    return KubernetesHook().apps_v1_client


def _notifier(run: folder.Run, dag_id: str | None = None) -> Notifier:
    """The run's notifier, its messages' buttons pointing at the run in Airflow and its report
    (``settings.run_links``: the API server's ``[api] base_url``; none without one)."""
    return Notifier(
        run.artifacts,
        settings.slack_sender(run.config.slack_channel),
        settings.run_links(run.run_id, dag_id),
    )


def _trigger(context: Any) -> dict[str, Any]:
    """What the trigger asked: the form's values with the run's ``conf`` over them (every conf
    key, also one the form does not have, so that it can be refused)."""
    values = dict(context.get("params") or {})
    dag_run = context.get("dag_run")
    values.update(dict(getattr(dag_run, "conf", None) or {}))
    return values


def _config(
    context: Any, asset_extra: dict[str, Any] | None = None, plan: str | None = None
) -> RunConfig:
    """The run the trigger asks for, on its profile, which must run ``plan`` (the DAG's)."""
    return resolve_trigger(
        _trigger(context), profiles=settings.profiles(), asset_extra=asset_extra, plan=plan
    )


def _asset_extra(context: Any) -> dict[str, Any]:
    """The newest deploy event's extra (``release``, ``target_url``), if an event triggered us."""
    events = context.get("triggering_asset_events") or {}
    newest: dict[str, Any] = {}
    for asset_events in events.values():
        for event in asset_events:
            newest = dict(event.extra or {})
    return newest


@task(retries=1)
def prepare(plan: str | None = None, **context: Any) -> dict[str, Any]:
    """Resolve the run from the form, the trigger's conf or a deploy event, on a profile of
    ``plan`` (the DAG's); validate it all."""
    try:
        config = _config(context, _asset_extra(context), plan)
        _object_store(config)
        record = pipeline.prepare(config, context["run_id"])
    except (RunConfigError, ProfileError, ValueError) as exc:
        raise AirflowFailException(str(exc)) from None
    for row in record.load:
        log.info(
            "planned load: %(stage)s/%(scenario)s shard %(shard)s: %(executor)s, peak %(peak_vus)s "
            "VUs (of %(peak_total)s), %(duration_s).0f s from %(start_s).0f s",
            row.model_dump(),
        )
    return record.model_dump(mode="json")


@task(retries=1)
def checklist(run_record: dict[str, Any] | None) -> dict[str, Any]:
    """The seed's §7.1; a failed required item ends the run before any load is sent."""
    run = _run(run_record, rollback_action=True)
    checks = pipeline.run_checklist(
        run,
        notifier=_notifier(run),
        rollback_secret=settings.secret(settings.TARGET),
        apps_api=_apps_api(run),
    )
    for check in checks:
        log.info("[%s] %s: %s", check.status.upper(), check.item, check.evidence)
    failed = [c for c in checks if c.required and c.status == "fail"]
    if failed:
        raise AirflowFailException(
            "pre-test checklist failed, no load sent: "
            + "; ".join(f"{c.item}: {c.evidence}" for c in failed)
        )
    return {c.item: c.status for c in checks}


@task(retries=1)
def seed_users(run_record: dict[str, Any] | None) -> dict[str, Any]:
    """Register the plan's users (existing ones log in); credentials stay in the artifacts."""
    run = _run(run_record)
    if run.config.dry_run:
        raise AirflowSkipException("dry run: no users are seeded")

    def progress(result: Any) -> None:
        log.info(
            "seeding: %d of %d ready (%d registered, %d existing, %d failed)",
            result.ready,
            result.requested,
            result.registered,
            result.existing,
            result.failed,
        )

    try:
        result = pipeline.seed(run, secret=settings.secret(settings.SEED), progress=progress)
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from None
    return {**result.as_dict(), "users_file": str(run.users_file())}


def _stage_run(run_record: dict[str, Any] | None, stage: str, attempt: int) -> folder.Run:
    """The run, if ``attempt`` of ``stage`` is due now (its load, its gate); skips this task
    otherwise."""
    run = _run(run_record)
    reason = pipeline.attempt_skip_reason(run, stage, attempt)
    if reason:
        raise AirflowSkipException(reason)
    return run


@task(trigger_rule="all_done", retries=0)
def load_test(
    run_record: dict[str, Any] | None, stage: str, attempt: int = 1
) -> list[dict[str, Any]]:
    """One load stage, on the run's backend. Local: the engine's shards as processes on this
    worker, progress streamed to this log; no pod. Kubernetes: one pod per shard, which the
    KubernetesPodOperator mapped over this task's list (``load_pods``) runs; mapped over the
    local backend's empty list, it is skipped without starting a process."""
    run = _stage_run(run_record, stage, attempt)
    if run.config.backend == "kubernetes":
        folder.clear_stage(run, stage, attempt)
        pods = manifests.stage_pods(run, stage, run.config.kubernetes, attempt=attempt)
        namespace = run.config.kubernetes.namespace
        run.timeline(f"stage {stage} started: {len(pods)} pod(s) in {namespace}")
        return pods
    outcome = run_stage_local(run, stage, log.info, attempt=attempt)
    if outcome["errors"]:
        raise AirflowFailException(f"stage {stage}: engine error in {outcome['errors']}")
    return []


def _decide(run_record: dict[str, Any] | None, stage: str, attempt: int, ti: Any) -> folder.Run:
    """Decide ``attempt`` of ``stage``, tell the thread, and put the verdict with its key
    figures in this task's XCom ``GATE_KEY`` (``loadgate gate`` prints them as the run goes)."""
    run = _stage_run(run_record, stage, attempt)
    result = gates.decide(run, stage, attempt)
    log.info("gate %s: %s", stage, result.verdict)
    for reason in result.reasons:
        log.info("  %s", reason)
    pipeline.notify_gate(run, _notifier(run), stage)
    figures = stage_figures(result.summary.model_dump(mode="json")) if result.summary else {}
    verdict = {
        "stage": stage,
        "verdict": str(result.verdict),
        "reasons": result.reasons,
        "figures": figures,
    }
    ti.xcom_push(key=GATE_KEY, value=verdict)
    return run


@task.branch(trigger_rule="all_done", retries=1)
def gate(run_record: dict[str, Any] | None, stage: str, rerun: str, **context: Any) -> list[str]:
    """Merge the stage's shards, read system metrics, evaluate the plan's criteria: verdict.
    Only an inconclusive verdict goes on to ``rerun`` (the re-run's first task, when the
    profile allows one); otherwise the re-run's tasks are skipped here, none of them started."""
    run = _decide(run_record, stage, 1, context["ti"])
    return [rerun] if pipeline.attempt_skip_reason(run, stage, 2) is None else []


@task(trigger_rule="all_done", retries=1)
def rerun_gate(run_record: dict[str, Any] | None, stage: str, **context: Any) -> None:
    """The gate of the re-run (after an inconclusive gate): decides on both attempts' evidence."""
    _decide(run_record, stage, 2, context["ti"])


@task(trigger_rule="all_done", retries=0)
def rollback(run_record: dict[str, Any] | None) -> dict[str, Any]:
    """Only on a rollback verdict: run the configured action, then verify the target's health."""
    run = _run(run_record, rollback_action=True)
    outcome = pipeline.rollback(
        run, secret=settings.secret(settings.TARGET), apps_api=_apps_api(run)
    )
    if outcome is None:
        raise AirflowSkipException("no gate decided rollback")
    log.info("rollback: %s", outcome.outcome)
    if outcome.outcome == "failed":
        raise AirflowFailException(
            f"rollback failed: {outcome.error or outcome.model_dump(mode='json')}"
        )
    return outcome.model_dump(mode="json")


@task(trigger_rule="all_done", retries=1)
def collect_logs(run_record: dict[str, Any] | None) -> dict[str, Any]:
    """Generator and target logs into the run's artifacts, whatever happened before."""
    run = _run(run_record)
    collected = pipeline.collect_logs(run)
    if run.config.backend == "kubernetes":
        core = KubernetesHook().core_v1_client
        cfg = run.config
        logs_dir = run.artifacts.ensure("logs", "pods")
        collected["generator_pods"] = k8s_logs.collect_pod_logs(
            core, cfg.kubernetes.namespace, manifests.run_selector(run.run_id), logs_dir
        )
        if cfg.target_selector:
            collected["target_pods"] = k8s_logs.collect_pod_logs(
                core,
                cfg.kubernetes.namespace,
                cfg.target_selector,
                run.artifacts.ensure("logs", "target"),
            )
    return collected


@task(trigger_rule="all_done", retries=2)
def cleanup_pods(run_record: dict[str, Any] | None) -> list[str]:
    """Delete every pod of the run by label, however its tasks ended (Kubernetes backend)."""
    run = _run(run_record)
    if run.config.backend != "kubernetes":
        raise AirflowSkipException("the local backend starts no pods")
    deleted = k8s_pods.delete_run_pods(
        KubernetesHook().core_v1_client,
        run.config.kubernetes.namespace,
        manifests.run_label(run.run_id),
        wait_s=60,
    )
    log.info("deleted %d pod(s) of this run", len(deleted))
    return deleted


@task(trigger_rule="all_done", retries=1)
def build_report(run_record: dict[str, Any] | None) -> dict[str, Any]:
    """report.md, report.html, report.json and junit.xml under the run root."""
    report = pipeline.make_report(_run(run_record))
    log.info("verdict: %s; report: %s", report["verdict"], report["html"])
    return report


@task(trigger_rule="all_done", retries=1)
def record_history(run_record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's verdict and key figures, appended to the release history (later runs take
    their baseline from it; ``loadgate history KEY`` lists it)."""
    run = _run(run_record)
    entry = pipeline.record_history(run)
    if entry is None:
        raise AirflowSkipException("nothing to record: no release was gated, or it is recorded")
    log.info("history %s: %s recorded", folder.history_key(run), entry.verdict)
    return {"key": folder.history_key(run), "verdict": entry.verdict}


@task(trigger_rule="all_done", retries=2)
def notify(run_record: dict[str, Any] | None) -> str:
    """The final message to the team: verdict, key figures and where the report is."""
    run = _run(run_record)
    return pipeline.notify_final(run, _notifier(run))


@task(trigger_rule="all_done", retries=0, on_failure_callback=[])
def finalize(run_record: dict[str, Any] | None) -> str:
    """End the DAG run failed when the release is to be rolled back, or was not gated, or the
    test cannot vouch for its numbers (``Verdict.fails_run``)."""
    if run_record is None:
        raise AirflowFailException("the run was never prepared: no release was gated")
    run = folder.Run(run_record)
    verdict, reasons = pipeline.run_verdict(run)
    if verdict == Verdict.INVALID and not run.config.limits.invalid_fails_run:
        log.warning("release verdict: invalid, which the profile lets pass: %s", reasons[:5])
        return str(verdict)
    if verdict.fails_run:
        raise AirflowFailException(f"release verdict: {verdict}: " + "; ".join(reasons[:5]))
    return str(verdict)


def notify_task_failure(context: Any, plan: str | None = None) -> None:
    """on_failure_callback: tell the team a task failed (once per task try); ``plan``: the
    DAG's."""
    ti = context["ti"]
    try:
        config = _config(context, _asset_extra(context), plan)
    except (RunConfigError, ProfileError, ValueError):
        log.warning("task %s failed before the run was resolved; no notification", ti.task_id)
        return
    run = folder.Run({"run_id": context["run_id"], "config": config.model_dump(mode="json")})
    error = str(context.get("exception") or "unknown error")
    try:
        _object_store(config)
    except Exception:
        log.exception("the run's object store is not usable; no notification")
        return
    notifier = _notifier(run, ti.dag_id)
    message = task_failed_message(
        task_id=ti.task_id,
        try_number=ti.try_number,
        error=error,
        run_id=run.run_id,
        links=Links(run=notifier.links.run),
    )
    try:
        notifier.notify(f"task-failed:{ti.task_id}:{ti.try_number}", message, reply=True)
    except Exception:  # a failing notification must not hide the task's own failure
        log.exception("could not notify the failure of %s", ti.task_id)
