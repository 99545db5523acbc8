"""The release gate's steps, in the order the DAG runs them, with no Airflow in sight.

Each step reads what earlier steps wrote under the run root and writes its own record there, so
any step can be rerun alone (a cleared task) and the run root is the one source of truth:

    run.json               the resolved run (what the tasks pass each other; no secret)
    checklist.json         the pre-test checklist
    users.jsonl            seeded users (0600, credentials: never in XCom or logs; on S3 an object)
    seeding.progress.json  users ready so far, every few seconds while seeding runs (counts)
    stages/<stage>/…       the engine's shard results
    gates/<stage>.json     each gate's verdict and evidence
    rollback.json          the rollback outcome, when one ran
    logs/…                 generator and target logs
    report.{md,html,json}, junit.xml, notifications.jsonl

The JSON records are typed (:mod:`loadgate.run.records`): a step builds its record's model and
writes its JSON, and reads the others' through their models.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loadgate.actions import execute as execute_rollback
from loadgate.config.run import RunConfig
from loadgate.engine.shard import Shard
from loadgate.metrics.prometheus import PrometheusSource
from loadgate.notify import Message, Notifier, final_message, gate_message, start_message
from loadgate.plan import Plan, load_plan
from loadgate.plan.profile import stage_profiles
from loadgate.report.build import build_report
from loadgate.run import checklist as cl
from loadgate.run import history
from loadgate.run.folder import MAX_ATTEMPTS, PLAN_COPY, Run, history_key, now
from loadgate.run.records import (
    NOT_RUN,
    Checklist,
    PlannedLoad,
    RollbackOutcome,
    RunRecord,
)
from loadgate.run.seeding import SeedResult, load_or_create_secret, seed_users
from loadgate.scenarios import ScenarioError, check_allowed
from loadgate.storage import upath
from loadgate.verdict.outcomes import Verdict, worst

log = logging.getLogger(__name__)


def title_of(plan: Plan) -> str:
    """The report's title: the plan description's first phrase (up to a comma or colon)."""
    first = re.split(r"[,:\n]", plan.description.strip(), maxsplit=1)[0].strip()
    return f"{first or plan.name}: Load Test Report"


def prepare(config: RunConfig, run_id: str) -> RunRecord:
    """Validate the plan against the run and write ``run.json``; returns its record (XCom-safe
    as JSON)."""
    plan = load_plan(config.plan_path())
    if not config.stages:  # not chosen: all of the plan's, in its order
        config = config.model_copy(update={"stages": list(plan.stages)})
    missing = [s for s in config.stages if s not in plan.stages]
    if missing:
        raise ValueError(
            f"plan {plan.name!r} has no stage {', '.join(missing)} "
            f"(its stages: {', '.join(plan.stages)})"
        )
    check_scenarios(plan)
    record = RunRecord(
        run_id=run_id,
        # as run.json and XCom hold it: a webhook rollback as scheme://host only
        config=RunConfig.model_validate(config.model_dump(mode="json")),
        plan_name=plan.name,
        title=title_of(plan),
        prepared_at=now(),
    )
    run = Run(record)
    check_shards(config, run)  # before planning shard by shard
    load = planned_load(run)
    check_limits(config, load, run)  # before anything is written
    run.artifacts.ensure()
    run.artifacts.write_bytes(PLAN_COPY, config.plan_path().read_bytes())
    record.run_root = str(run.artifacts.root)
    record.load = load
    run.artifacts.write_json("run.json", record.model_dump(mode="json"))
    run.timeline(f"run prepared: release {config.release or '—'} on {config.target_url}")
    return record


def check_scenarios(plan: Plan) -> None:
    """Every scenario the plan names is registered or in an allowed package (the deployment's
    ``LOADGATE_SCENARIO_PACKAGES``); checked before anything is imported."""
    for stage_name, stage in plan.stages.items():
        for name, scen in stage.scenarios.items():
            try:
                check_allowed(scen.exec)
            except ScenarioError as exc:
                raise ValueError(f"stages.{stage_name}.scenarios.{name}: {exc}") from None


def check_shards(config: RunConfig, run: Run) -> None:
    over = [s for s in config.stages if run.shards(s) > config.limits.max_shards]
    if over:
        raise ValueError(
            f"the plan asks more than profile {config.profile!r} allows: "
            + "; ".join(
                f"{s}: {run.shards(s)} shards, above the limit of {config.limits.max_shards}"
                for s in over
            )
        )


def check_limits(config: RunConfig, load: list[PlannedLoad], run: Run) -> None:
    """The load the plan implies at this scale and time scale within the profile's caps."""
    limits = config.limits
    problems = []
    for stage in config.stages:
        rows = [r for r in load if r.stage == stage]
        peak = sum({r.scenario: r.peak_total for r in rows}.values())
        length = max((r.start_s + r.duration_s for r in rows), default=0.0)
        if peak > limits.max_vus:
            problems.append(f"{stage}: {peak:,} users, above the limit of {limits.max_vus:,}")
        if not length <= limits.max_stage_s:
            problems.append(
                f"{stage}: {length:,.0f} s long, above the limit of {limits.max_stage_s:,.0f} s"
            )
        for name, scen in run.plan.stages[stage].scenarios.items():
            rate = getattr(scen, "rate", None)
            if isinstance(rate, int | float) and rate * config.scale > limits.max_rate:
                problems.append(
                    f"{stage}.{name}: {rate * config.scale:,.0f} arrivals/s, above the limit "
                    f"of {limits.max_rate:,.0f}"
                )
    if problems:
        raise ValueError(
            f"the plan asks more than profile {config.profile!r} allows: " + "; ".join(problems)
        )


def planned_load(run: Run) -> list[PlannedLoad]:
    """Who gets how much load: every scenario of every chosen stage, shard by shard."""
    rows = []
    for stage in run.config.stages:
        n = run.shards(stage)
        for i in range(n):
            profiles = stage_profiles(
                run.plan.stages[stage],
                scale=run.config.scale,
                time_scale=run.config.time_scale,
                shard=Shard(i, n),
            )
            for name, profile in profiles.items():
                d = profile.describe()
                rows.append(
                    PlannedLoad(
                        stage=stage,
                        scenario=name,
                        shard=f"{i}/{n}",
                        executor=d["executor"],
                        peak_vus=d["peak_this_shard"],
                        peak_total=d["peak_total"],
                        start_s=d["start_s"],
                        duration_s=d["duration_s"],
                    )
                )
    return rows


# --- checklist -----------------------------------------------------------------------------------


def prometheus_source(run: Run) -> PrometheusSource | None:
    if not run.config.prometheus_url:
        return None
    queries = {name: m.promql for name, m in run.plan.system_metrics.items()}
    return PrometheusSource(run.config.prometheus_url, queries)


def run_checklist(
    run: Run, *, notifier: Notifier, rollback_secret: str | None, apps_api: Any = None
) -> list[cl.Check]:
    """Every item of the seed's §7.1; the start message goes out only when the others pass."""
    target = run.config.target_url
    prometheus = prometheus_source(run)
    specs = {n: m.scrape for n, m in run.plan.system_metrics.items() if m.scrape is not None}
    promql_metrics = sorted({s.metric for s in specs.values()})
    checks = [
        cl.check_deployment(target, run.config.release),
        cl.check_health(target),
        cl.check_monitoring(target, prometheus, specs, promql_metrics),
        cl.check_alert_rules(prometheus),
        cl.check_logs(run.config.target_log),
        cl.check_rollback(run.config.rollback, target, rollback_secret, apps_api),
    ]
    if cl.failed_required(checks):
        checks.append(
            cl.Check(
                "Team notified of test execution",
                "fail",
                "not notified: a required check failed, no load will be sent",
            )
        )
    else:
        checks.append(
            cl.check_team_notified(
                lambda: notifier.notify("start", _start_message(run, notifier, target))
            )
        )
    record = Checklist([c.record() for c in checks])
    run.artifacts.write_json("checklist.json", record.model_dump(mode="json"))
    failed = cl.failed_required(checks)
    run.timeline(
        "checklist: " + ("passed" if not failed else "failed: " + ", ".join(c.item for c in failed))
    )
    return checks


# --- seeding -------------------------------------------------------------------------------------


def seed_count(run: Run) -> int:
    """One user per VU at the stages' peak, as the seed registers 10,000 for 10,000 VUs."""
    peak = max(
        (
            sum(r.peak_total for r in run.record.load if r.stage == s and r.shard.startswith("0/"))
            for s in run.config.stages
        ),
        default=1,
    )
    return max(1, peak)


def seed(
    run: Run, *, secret: str | None, progress: Callable[[SeedResult], None] | None = None
) -> SeedResult:
    if secret is None:
        secret = load_or_create_secret(upath(run.config.artifacts_root) / ".seed-secret")
    count = seed_count(run)

    def note(result: SeedResult, *, tell: bool = True) -> None:
        """The progress so far in ``seeding.progress.json`` (counts only: a watcher of the run
        folder shows it while seeding runs), then to the caller."""
        counts = {"requested": result.requested, "ready": result.ready, "failed": result.failed}
        run.artifacts.write_json("seeding.progress.json", counts)
        if progress and tell:
            progress(result)

    note(SeedResult(requested=count), tell=False)
    result = asyncio.run(
        seed_users(
            run.config.target_url,
            count,
            run.users_file(),
            secret=secret,
            progress=note,
        )
    )
    run.artifacts.write_json("seeding.json", result.as_dict())
    run.timeline(f"seeded {result.ready} of {result.requested} users in {result.seconds:.1f} s")
    return result


# --- verdicts, rollback, report ----------------------------------------------------------------


def stage_skip_reason(run: Run, stage: str) -> str | None:
    """Why ``stage`` sends no load in this run, or None when it is to run."""
    if stage not in run.config.stages:
        return f"stage {stage} was not chosen for this run"
    if run.config.dry_run:
        return f"dry run: stage {stage} sends no load"
    checks = run.checklist()
    if checks is None:
        return "the pre-test checklist has not run: no load is sent"
    if checks.failed_required():
        return "the pre-test checklist failed: no load is sent"
    if run.artifacts.read_json("seeding.json") is None:
        return "the test users were not seeded: no load is sent"
    for earlier in run.config.stages[: run.config.stages.index(stage)]:
        gate = run.gate(earlier)
        if gate and gate.verdict.stops_later_stages:
            return f"the {earlier} gate decided {gate.verdict}: stage {stage} is not run"
    return None


def run_verdict(run: Run) -> tuple[Verdict, list[str]]:
    """The run's verdict: the worst gate verdict (an engine error is not the release's fault,
    but nor is it a pass)."""
    failed = (run.checklist() or Checklist([])).failed_required()
    if failed:
        return Verdict.ERROR, [f"checklist: {c.item}: {c.evidence}" for c in failed]
    if run.config.dry_run:
        return Verdict.DRY_RUN, ["dry run: no load was sent"]
    verdicts: list[Verdict] = []
    reasons: list[str] = []
    for stage in run.config.stages:
        gate = run.gate(stage)
        if gate is None:
            if any(v.stops_later_stages for v in verdicts):
                continue  # skipped after an earlier gate's decision
            verdicts.append(Verdict.ERROR)
            reasons.append(f"{stage}: the stage was not gated")
            continue
        verdicts.append(gate.verdict)
        reasons += [f"{stage}: {r}" for r in gate.reasons]
    return worst(verdicts), reasons


def rollback(run: Run, *, secret: str | None, apps_api: Any = None) -> RollbackOutcome | None:
    verdict, reasons = run_verdict(run)
    if verdict != Verdict.ROLLBACK:
        return None
    previous = run.rollback_outcome()
    if previous and previous.outcome.startswith("rolled back"):
        log.info("rollback already done in this run: %s", previous.outcome)
        return previous
    action = run.config.rollback
    run.timeline(f"rollback started ({action.type if action else 'no action configured'})")
    if action is None:  # the checklist fails without one, so no load was sent: never expected
        executed: dict[str, Any] = {
            "action": "none",
            "release": run.config.release,
            "error": "no rollback action configured",
            "health": {"healthy": None},
            "seconds": 0,
            "outcome": "failed",
        }
    else:
        executed = execute_rollback(
            action,
            target_url=run.config.target_url,
            release=run.config.release,
            run_id=run.run_id,
            reasons=reasons,
            secret=secret,
            apps_api=apps_api,
        )
    outcome = RollbackOutcome.model_validate({**executed, "at": now()})
    run.artifacts.write_json("rollback.json", outcome.model_dump(mode="json"))
    run.timeline(f"rollback: {outcome.outcome}")
    return outcome


LOG_TAIL_BYTES = 5_000_000  # what logs/ keeps of each log: its last 5 MB


def read_log_tail(path: Any, limit: int = LOG_TAIL_BYTES) -> bytes:
    """The last ``limit`` bytes of the log file ``path`` (a local path or one on the run root's
    store), reading no more than that: the file is seeked to its end, never read whole."""
    with path.open("rb") as f:
        size = f.seek(0, 2)  # 2: from the end
        f.seek(max(0, size - limit))
        tail: bytes = f.read(limit)
        return tail


def collect_logs(run: Run) -> dict[str, Any]:
    """Generator logs (each shard's) and the target's log into ``logs/``: the last
    :data:`LOG_TAIL_BYTES` of each. The target's log is read only if it is a regular file (a
    FIFO or a device would never end)."""
    copied: dict[str, Any] = {"generator": [], "target": None}
    stages_dir = run.artifacts.path("stages")
    if stages_dir.exists():
        found = [*stages_dir.glob("*/*/engine.log"), *stages_dir.glob("*/attempt-*/*/engine.log")]
        for log_file in sorted(found):
            where = log_file.parent.relative_to(stages_dir).parts
            rel = f"logs/generator/{'-'.join(where)}.log"
            run.artifacts.write_bytes(rel, read_log_tail(log_file))
            copied["generator"].append(rel)
    if run.config.target_log:
        source = Path(run.config.target_log)
        if source.is_file():
            run.artifacts.write_bytes("logs/target.log", read_log_tail(source))
            copied["target"] = "logs/target.log"
        elif source.exists():
            log.warning("target log %s is not a regular file: not copied", source)
    run.artifacts.write_json("logs/index.json", copied)
    return copied


def report_record(run: Run) -> dict[str, Any]:
    verdict, reasons = run_verdict(run)
    stages: dict[str, dict[str, Any]] = {}
    for stage in run.config.stages:
        gate = run.gate(stage)
        stages[stage] = (
            gate.model_dump(mode="json") if gate else {"verdict": NOT_RUN, "reasons": []}
        )
    checklist, rollback_outcome = run.checklist(), run.rollback_outcome()
    return {
        "title": run.record.title,
        "release": run.config.release,
        "target": run.config.target_url,
        "plan": run.record.plan_name,
        "scale": run.config.scale,
        "time_scale": run.config.time_scale,
        "run_id": run.run_id,
        "dry_run": run.config.dry_run,
        "ended_at": now(),
        "verdict": str(verdict),
        "reasons": reasons,
        "checklist": checklist.model_dump(mode="json") if checklist else [],
        "stages": stages,
        "rollback": rollback_outcome.model_dump(mode="json") if rollback_outcome else None,
        "timeline": run.artifacts.read_jsonl("timeline.jsonl"),
        "dry_run_load": (
            [r.model_dump(mode="json") for r in run.record.load] if run.config.dry_run else None
        ),
        "history": release_trend(run, verdict),
    }


def release_trend(run: Run, verdict: Verdict, last: int = 10) -> list[dict[str, Any]]:
    """The last releases of this target and plan, this run last (for the report's trend)."""
    root, key = run.config.artifacts_root, history_key(run)
    earlier = history.entries(root, key) if history.exists(root, key) else []
    earlier = [e for e in earlier if e.run_id != run.run_id][-(last - 1) :]
    if verdict == Verdict.DRY_RUN or not any(run.gate(s) for s in run.config.stages):
        return [e.model_dump(mode="json") for e in earlier]
    return [e.model_dump(mode="json") for e in [*earlier, history_entry(run, verdict)]]


def history_entry(run: Run, verdict: Verdict) -> history.HistoryEntry:
    """This run's verdict and key figures, as the history keeps them."""
    return history.entry_from_gates(
        run_id=run.run_id,
        verdict=str(verdict),
        plan=run.config.plan,
        scale=run.config.scale,
        time_scale=run.config.time_scale,
        run_root=str(run.artifacts.root),
        gates={s: g.model_dump(mode="json") for s in run.config.stages if (g := run.gate(s))},
        release=run.config.release or None,
    )


def make_report(run: Run) -> dict[str, Any]:
    record = report_record(run)
    paths = build_report(run.artifacts, record)
    return {"verdict": record["verdict"], "reasons": record["reasons"], **paths}


def record_history(run: Run) -> history.HistoryEntry | None:
    """Append the run's verdict and key figures to the history (once: a rerun of the task finds
    the entry there). A dry run, or a run whose checklist stopped it, gated no release."""
    verdict, _ = run_verdict(run)
    if verdict == Verdict.DRY_RUN or not any(run.gate(s) for s in run.config.stages):
        return None
    root, key = run.config.artifacts_root, history_key(run)
    if history.exists(root, key) and any(
        e.run_id == run.run_id for e in history.entries(root, key)
    ):
        return None
    entry = history_entry(run, verdict)
    history.append(root, key, entry)
    run.timeline(f"history: {verdict} recorded under {key}")
    return entry


def notify_gate(run: Run, notifier: Notifier, stage: str) -> str:
    """The gate's verdict, a reply in the run's thread; once per attempt (``gate:<stage>``, and
    ``gate:<stage>:attempt-2`` for the re-run of an inconclusive stage)."""
    gate = run.gate(stage)
    if gate is None:
        return "no gate"
    key = f"gate:{stage}" if gate.attempt <= 1 else f"gate:{stage}:attempt-{gate.attempt}"
    return notifier.notify(
        key,
        gate_message(
            stage=stage,
            verdict=gate.verdict,
            summary=gate.summary.model_dump(mode="json") if gate.summary else {},
            reasons=gate.reasons,
            release=run.config.release or "—",
            attempt=gate.attempt,
            links=notifier.links,
        ),
        reply=True,
    )


def notify_final(run: Run, notifier: Notifier) -> str:
    """The run's verdict: a reply in its thread, also posted to the channel; then the start
    message is updated to show it. Each once (``final``, ``final:start-updated``)."""
    verdict, reasons = run_verdict(run)
    stages = {}
    for stage in run.config.stages:
        gate = run.gate(stage)
        if gate:
            summary = gate.summary.model_dump(mode="json") if gate.summary else {}
            stages[stage] = {"verdict": gate.verdict, **summary}
    rollback_outcome = run.rollback_outcome()
    sent = notifier.notify(
        "final",
        final_message(
            verdict=verdict,
            release=run.config.release or "—",
            target=run.config.target_url,
            stages=stages,
            reasons=reasons,
            rollback=rollback_outcome.model_dump(mode="json") if rollback_outcome else None,
            run_id=run.run_id,
            links=notifier.links,
        ),
        reply=True,
        broadcast=True,
    )
    notifier.update_start(
        _start_message(run, notifier, run.config.target_url, verdict=verdict, reasons=reasons)
    )
    return sent


def _start_message(
    run: Run,
    notifier: Notifier,
    target: str,
    verdict: str | None = None,
    reasons: Sequence[str] = (),
) -> Message:
    """The thread's start message, as sent at the checklist or (``verdict``) updated at the end."""
    return start_message(
        release=run.config.release or "—",
        target=target,
        plan=run.record.plan_name or run.config.plan,
        stages=run.config.stages,
        scale=run.config.scale,
        run_id=run.run_id,
        dry_run=run.config.dry_run,
        links=notifier.links,
        verdict=verdict,
        reasons=reasons,
    )


def attempt_skip_reason(run: Run, stage: str, attempt: int) -> str | None:
    """Why ``attempt`` (a re-run) of ``stage`` sends no load, or None when it is to run: only an
    inconclusive gate of the attempt before it calls for one."""
    if attempt == 1:
        return stage_skip_reason(run, stage)
    most = min(MAX_ATTEMPTS, run.config.limits.max_attempts)
    if attempt > most:
        return f"stage {stage} runs at most {most} time{'s' if most > 1 else ''} (the profile's)"
    reason = stage_skip_reason(run, stage)
    if reason:
        return reason
    gate = run.gate(stage)
    if gate is None or gate.verdict != Verdict.INCONCLUSIVE or gate.attempt != attempt - 1:
        decided = gate.verdict if gate else "nothing"
        return f"the {stage} gate decided {decided}: no re-run is needed"
    return None
