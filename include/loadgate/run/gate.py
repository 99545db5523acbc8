"""A stage's gate: merge its shards, evaluate the plan's criteria, decide with evidence.

- ``rollback``: the engine aborted the stage on an immediate-rollback criterion, or one is
  breached over the whole stage.
- ``investigate``: an investigate criterion is breached, an acceptance target is missed, or
  the comparison with the last good release shows a regression (:mod:`loadgate.run.baseline`).
- ``inconclusive``: a must-have criterion gathered too few samples, or a comparison that
  decides a criterion straddles its threshold: the stage is run once more (``attempt`` 2) and
  decided on both attempts' evidence.
- ``invalid``: the test cannot vouch for its numbers (:func:`invalid_causes`): the generator
  saturated, an open-model scenario dropped iterations, the offered load fell short of the
  plan's, a shard's results are incomplete.
- ``error``: the stage produced no usable results (no shard wrote any, an engine error):
  not the release's fault, but not a pass either.
- ``pass``: none of the above. (Outcomes: :class:`loadgate.verdict.outcomes.Verdict`.)

Percentiles are computed once, on the merged histograms (``loadgate.runner.summary``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from loadgate.actions.base import wait_healthy
from loadgate.engine.aggregate import Aggregate
from loadgate.engine.merge import MergedStage, load_merged
from loadgate.engine.results import ResultsError
from loadgate.engine.shard import scale_count
from loadgate.run.baseline import read_against_baseline
from loadgate.run.folder import MAX_ATTEMPTS, Run, stage_folder
from loadgate.run.records import (
    AbortRecord,
    AttemptRecord,
    CriterionRecord,
    LoadLevel,
    Series,
    StageGate,
    StageSummary,
    SystemFigure,
    TargetHealth,
)
from loadgate.runner.summary import SATURATED_MESSAGE, summarize
from loadgate.verdict.criteria import CriterionResult, evaluate
from loadgate.verdict.outcomes import Verdict

CPU, MEMORY = "cpu_utilization", "memory_utilization"


def unit_of(result: CriterionResult, relative: bool = False) -> str:
    """How the report shows a criterion's numbers: ratios as %, latencies in ms."""
    if relative or result.metric.endswith(("rate", "failed", "utilization", "availability")):
        return "%"
    if result.metric.endswith(("duration", "rtt")):
        return "ms"
    return ""


def _reason(result: CriterionResult, relative: bool = False) -> str:
    unit = unit_of(result, relative)

    def show(v: float) -> str:
        return f"{v * 100:.2f}%" if unit == "%" else f"{v:g}"

    what = result.description or result.id
    observed = "no data" if result.observed is None else show(result.observed)
    return (
        f"{result.level}: {what}: observed {observed} "
        f"({result.op} {show(result.threshold)} breaches; {result.window})"
    )


def target_events(merged: MergedStage) -> list[str]:
    """A crash seen from outside: the target stopped answering, or came back as a new process.

    Errors alone do not say the target crashed; its metrics do (``up`` and the restarts the
    plan reads from the process start time or the orchestrator).
    """
    start = merged.started_at or 0.0
    events = []
    up = merged.aggregate.sys.get("up", {})
    down = sorted(t for t, v in up.items() if v < 1)
    if down:
        events.append(
            f"the target stopped answering {down[0] - start:.0f} s into the stage "
            f"(crashed or unreachable; no answer in {len(down)} of {len(up)} samples)"
        )
    restarts = merged.aggregate.sys.get("pod_restarts", {})
    restarted = sorted(t for t, v in restarts.items() if v and v > 0)
    if restarted:
        events.append(
            f"the target restarted {restarted[0] - start:.0f} s into the stage "
            "(a new process start time): a crash"
        )
    return events


# An open-model stage that could not start this fraction of its iterations measured a lighter
# load than planned, and its latencies miss the requests never sent (coordinated omission).
DROPPED_TOLERANCE = 0.01
# Offered below this fraction of the plan's pacing (over the users that ran, at the latency
# measured): the generator did not send the load the plan asks for. Only falling short makes a
# stage invalid. A plan of n requests is itself a random count (think times, request mixes):
# healthy runs read offered/planned 1 ± 1/√n (0.86-1.21 with n ≈ 130 at time_scale 0.005;
# bench/verdict/README.md), so the limit is lowered by SHORT_SD such deviations: a stage is
# short of its plan when chance does not explain it.
OFFERED_TOLERANCE = 0.8
SHORT_SD = 3.0


def offered_limit(planned_requests: float | None) -> float:
    """The least offered/planned ratio that is not short of the plan, for a stage whose plan
    asks ``planned_requests`` in all (0.8 for large stages; 0.54 for 130 requests)."""
    if not planned_requests or planned_requests <= 0:
        return OFFERED_TOLERANCE
    return max(0.0, OFFERED_TOLERANCE - SHORT_SD / math.sqrt(planned_requests))


def short_of_plan(summary: dict[str, Any]) -> str | None:
    """Why the offered load fell short of the plan's, or None."""
    rates = summary.get("rates") or {}
    ratio = rates.get("offered_vs_planned")
    planned, seconds = rates.get("planned"), rates.get("seconds")
    count = planned * seconds if planned and seconds else None
    limit = offered_limit(count)
    if ratio is None or ratio >= limit:
        return None
    return (
        f"the generator offered {rates['offered']:.2f} requests/s where the plan's pacing asks "
        f"for {rates['planned']:.2f} ({ratio:.0%}; below {limit:.0%}"
        + (f" for {count:,.0f} planned requests" if count else "")
        + "): it did not send the load the verdict would speak of"
    )


def verdict_of(results: list[CriterionResult], aborted: dict[str, Any] | None) -> Verdict:
    breached = {r.level for r in results if r.breached}
    if aborted or "rollback" in breached:
        return Verdict.ROLLBACK
    if breached & {"investigate", "acceptance"}:
        return Verdict.INVESTIGATE
    return Verdict.PASS


def too_little_evidence(run: Run, results: list[CriterionResult]) -> list[str]:
    """The must-have criteria that gathered too little data to be decided."""
    needed = {c.id: c.min_samples for c in run.plan.criteria if c.must_have}
    return [
        f"{r.id} has {r.samples} samples, fewer than the {needed[r.id]} it needs"
        for r in results
        if r.id in needed and r.status == "insufficient"
    ]


def invalid_causes(merged: MergedStage, summary: dict[str, Any]) -> list[str]:
    """Why the test cannot vouch for this stage's numbers (empty: it can)."""
    causes = []
    if summary["generator_saturated"]:
        g = summary["generator"]
        causes.append(
            f"generator saturated in {g['saturated_windows']} of {g['windows']} seconds "
            f"(event-loop lag p99 {g['lag_p99_ms']:g} ms, CPU max {g['cpu_max']:.0%}): "
            f"{SATURATED_MESSAGE}"
        )
    dropped, iterations = summary.get("dropped_iterations", 0), summary.get("iterations", 0)
    if dropped and dropped > DROPPED_TOLERANCE * max(1, dropped + iterations):
        causes.append(
            f"{dropped} of {dropped + iterations} planned iterations could not start (no free "
            "VU): the offered load fell short of the plan and the latencies miss the requests "
            "never sent"
        )
    short = short_of_plan(summary)
    if short:
        causes.append(short)
    if merged.status in ("incomplete", "terminated"):
        missing = ", ".join(merged.incomplete) or merged.status
        causes.append(f"a shard's results are incomplete ({missing}): the stage is not whole")
    return causes


def records_by_second(merged: MergedStage) -> dict[int, list[dict[str, Any]]]:
    """Every shard's window records grouped by wall-clock second (shards align on it)."""
    seconds: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for shard in merged.shards:
        for record in shard.windows:
            seconds[int(record["t"])].append(record)
    return dict(sorted(seconds.items()))


def _active_vus(records: list[dict[str, Any]]) -> int:
    return sum(slot[0] for r in records for slot in (r.get("vus") or {}).values())


def series(merged: MergedStage, by_second: dict[int, list[dict[str, Any]]]) -> Series:
    """Per-second requests, p95, errors and VUs of the merged stage, for the report's charts."""
    start = merged.started_at or (min(by_second) if by_second else 0)
    out = Series(t=[], rps=[], p95_ms=[], errors=[], vus=[])
    for t, records in by_second.items():
        fig = Aggregate().add_records(records).http_figures()
        p95 = fig.latency.percentiles_us([95])[95] / 1000.0 if fig.requests else None
        out.t.append(round(t + 1 - start, 3))
        out.rps.append(fig.requests)
        out.errors.append(fig.failed)
        out.p95_ms.append(None if p95 is None else round(p95, 3))
        out.vus.append(_active_vus(records))
    return out


def load_levels(
    run: Run, stage: str, by_second: dict[int, list[dict[str, Any]]]
) -> list[LoadLevel]:
    """The seed's 'performance under load' rows, over the seconds spent near each level."""
    rows: list[LoadLevel] = []
    if not any(s.ramps_users for s in run.plan.stages[stage].scenarios.values()):
        return rows  # load levels are points on a ramp
    for level in run.plan.load_levels:
        users = scale_count(level.users, run.config.scale)
        near = Aggregate()
        for records in by_second.values():
            if users and abs(_active_vus(records) - users) <= max(1, 0.1 * users):
                near.add_records(records)
        fig = near.http_figures()
        if not fig.requests:
            continue
        cpu, mem = near.system_values(CPU), near.system_values(MEMORY)
        rows.append(
            LoadLevel(
                level=level.name,
                users=users,
                seconds=len({t for t in near.vus_t}),
                p95_ms=round(fig.latency.percentiles_us([95])[95] / 1000.0, 3),
                error_rate=round(fig.error_rate, 6),
                cpu=round(sum(cpu) / len(cpu), 4) if cpu else None,
                memory=round(sum(mem) / len(mem), 4) if mem else None,
                expected_p95_ms=level.expected_p95_ms,
                limit_p95_ms=level.limit_p95_ms,
            )
        )
    return rows


def _system_unit(run: Run, name: str) -> str:
    metric = run.plan.system_metrics.get(name)
    return "%" if metric is not None and metric.unit == "ratio" else ""


def expected_figures(run: Run, stage: str) -> dict[str, str]:
    out = {}
    for fig in run.plan.stages[stage].expected:
        parts = [
            p
            for p in (
                fig.target and f"target {fig.target}",
                fig.expected is not None and f"expected {fig.expected:g}{fig.unit}",
            )
            if p
        ]
        out[fig.label] = ", ".join(parts) or "—"
    return out


def _attempts(run: Run, stage: str, attempt: int) -> list[AttemptRecord]:
    """The decisions of the attempts before ``attempt``, the first kept as it was decided
    (none when no earlier attempt was gated)."""
    earlier = run.gate(stage) if attempt > 1 else None
    if earlier is None:
        return []
    if earlier.attempts:
        return list(earlier.attempts)
    # the first attempt's own decision: keep its file, list its outcome
    run.artifacts.write_json(f"gates/{stage}.attempt-1.json", earlier.model_dump(mode="json"))
    return [
        AttemptRecord(
            attempt=1,
            verdict=earlier.verdict,
            reasons=earlier.reasons,
            requests=earlier.summary.requests if earlier.summary else None,
        )
    ]


def decide(run: Run, stage: str, attempt: int = 1) -> StageGate:
    """Read the stage's shard results and write ``gates/<stage>.json``; returns it.

    ``attempt`` 2 decides on the pooled evidence of both attempts (the first was
    inconclusive); the first attempt's decision stays in ``gates/<stage>.attempt-1.json``.
    """
    attempts = _attempts(run, stage, attempt)
    folders = [stage_folder(run, stage, a) for a in range(1, attempt + 1)]
    try:
        merged = load_merged(folders, digest=True)  # the seconds the baseline is compared on
    except (ResultsError, FileNotFoundError, OSError) as exc:
        gate = StageGate(
            stage=stage,
            attempt=attempt,
            attempts=attempts,
            verdict=Verdict.ERROR,
            reasons=[f"no results: {exc}"],
            criteria=[],
            summary=None,
        )
        run.artifacts.write_json(f"gates/{stage}.json", gate.model_dump(mode="json"))
        run.timeline(f"gate {stage}: error (no results)")
        return gate
    summary = summarize(merged)
    absolute = [c for c in run.plan.criteria_for(stage) if not c.relative_to]
    results = evaluate(absolute, merged.aggregate, scale=run.config.scale)
    versus = read_against_baseline(run, stage, merged)
    results += versus.criteria
    verdict = verdict_of(results, merged.aborted)
    relative = {c.id for c in run.plan.criteria if c.relative_to}
    reasons = [_reason(r, r.id in relative) for r in results if r.breached]
    if versus.findings and verdict == Verdict.PASS:
        verdict = Verdict.INVESTIGATE
    reasons += versus.findings
    if merged.aborted:
        ab = merged.aborted
        reasons.insert(
            0,
            f"stage aborted at {ab.get('at_s')} s by {ab.get('criterion')} "
            f"(observed {ab.get('observed')})",
        )
    events = target_events(merged)
    after = wait_healthy(run.config.target_url, timeout_s=0)
    if not after["healthy"]:
        events.append(
            "after the stage the target does not answer its health checks "
            f"({after.get('error') or after}): it crashed or is unreachable"
        )
    reasons[:0] = events
    invalid = invalid_causes(merged, summary)
    if merged.status == "error" and verdict == Verdict.PASS:
        verdict = Verdict.ERROR
        reasons.append(f"stage results are {merged.status}: {merged.incomplete or ''}".strip())
    elif invalid and verdict != Verdict.ROLLBACK:
        verdict = Verdict.INVALID  # never a pass, nor a finding against the release
        reasons += [f"invalid: {cause}" for cause in invalid]
    elif invalid:  # the rollback stands; the reader learns what else went wrong
        reasons += [f"also: {cause}" for cause in invalid]
    if summary["requests"] == 0 and not summary["ws"]["connects"] and verdict == Verdict.PASS:
        verdict = Verdict.ERROR
        reasons.append("the stage sent no request and opened no connection")
    unsure = too_little_evidence(run, results) + versus.inconclusive
    if unsure and verdict == Verdict.PASS:
        verdict = Verdict.INCONCLUSIVE
        most = min(MAX_ATTEMPTS, run.config.limits.max_attempts)
        again = (
            "re-run once"
            if attempt < most
            else ("after the re-run, still" if attempt > 1 else "no re-run (the profile's)")
        )
        reasons += [f"inconclusive ({again}): {m}" for m in unsure]
    by_second = records_by_second(merged)
    this = AttemptRecord(
        attempt=attempt, verdict=verdict, reasons=reasons, requests=summary["requests"]
    )
    gate = StageGate(
        stage=stage,
        attempt=attempt,
        attempts=[*attempts, this] if attempts else [],
        verdict=verdict,
        reasons=reasons,
        aborted=None if merged.aborted is None else AbortRecord.model_validate(merged.aborted),
        events=events,
        invalid=invalid,
        target_after=TargetHealth.model_validate(after),
        summary=StageSummary.model_validate(summary),
        criteria=[
            CriterionRecord.model_validate(r.to_dict() | {"unit": unit_of(r, r.id in relative)})
            for r in results
        ],
        series=series(merged, by_second),
        load_levels=load_levels(run, stage, by_second),
        system={
            name: SystemFigure(
                max=v["max"],
                last=v["last"],
                avg=round(sum(vals) / len(vals), 6),
                unit=_system_unit(run, name),
            )
            for name, v in summary["system"].items()
            if (vals := merged.aggregate.system_values(name))
        },
        expected=expected_figures(run, stage),
        baseline_run=versus.baseline.run_id if versus.baseline else None,
        baseline=versus.record(),
    )
    run.artifacts.write_json(f"gates/{stage}.json", gate.model_dump(mode="json"))
    run.timeline(f"gate {stage}: {verdict}" + (f" (attempt {attempt})" if attempt > 1 else ""))
    return gate
