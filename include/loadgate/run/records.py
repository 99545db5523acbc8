"""The run folder's records as typed models: what each step writes and the next one reads.

    run.json             RunRecord         the resolved run (``prepare``); the tasks pass it by XCom
    checklist.json       Checklist         the pre-test checklist, one ChecklistItem per item
    gates/<stage>.json   StageGate         a gate's verdict and its evidence
    rollback.json        RollbackOutcome   the rollback, when one ran
    report.json          Report            the machine-readable verdict that CI systems read

A producer builds the model and writes ``model_dump(mode="json")``; a consumer reads the file
back with ``model_validate``. loadgate writes every one of them, so a key a model does not
know is refused (``extra="forbid"``). A key its producer did not set is not written
(:class:`Record`): the gate of a stage without results has no ``series``, a command rollback
no ``http_status``.

Their JSON Schemas are checked in under ``docs/schemas/`` (``<name>.schema.json``, written by
``python -m loadgate.run.records --write-schemas docs/schemas``); ``report.json``'s is the public
interface.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    model_serializer,
)

from loadgate.config.run import RunConfig
from loadgate.run.history import HistoryEntry
from loadgate.verdict.compare import Comparison
from loadgate.verdict.outcomes import Verdict

# A measured value as its producer computed it: an int stays an int and a float a float, so a
# record read and written again is the same JSON (JSON Schema's "number" either way).
Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
CheckStatus = Literal["pass", "warn", "fail"]
RollbackResult = Literal["failed", "rolled back, target unhealthy", "rolled back, target healthy"]
NOT_RUN = "not run"  # report.json's verdict of a stage that was not gated


class Record(BaseModel):
    """A record loadgate writes: unknown keys are refused, and only the keys its producer set
    are written (a field left at its default is absent from the JSON, as it was given)."""

    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _keys_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}


# --- a stage's summary (loadgate.runner.summary.summarize) -------------------------------------


class LatencyFigures(Record):
    """Latencies of requests or round trips, in ms (all 0 without a sample)."""

    avg_ms: Number
    min_ms: Number
    p50_ms: Number
    p90_ms: Number
    p95_ms: Number
    p99_ms: Number
    max_ms: Number


class CountedLatency(LatencyFigures):
    count: int


class HttpFigures(LatencyFigures):
    """HTTP requests of a stage, or of one request name."""

    requests: int
    failed: int
    error_rate: Number
    rps: Number
    status_classes: dict[str, int]


class CheckCounts(Record):
    passed: int
    failed: int


class ChecksFigures(CheckCounts):
    by_name: dict[str, CheckCounts]  # "<scenario>: <check>"


class WsFigures(Record):
    """WebSocket connections, messages and round trips."""

    connects: int
    connect_failed: int
    connect_success_rate: Number | None
    max_connections: int
    closed_unexpected: int
    error_replies: int
    messages_sent: int
    messages_received: int
    errors: int
    error_rate: Number
    connect_ms: LatencyFigures
    latency: dict[str, CountedLatency]  # per round-trip name
    # the heartbeat's round trip (the figure the seed reports), when the stage sent heartbeats
    rtt_avg_ms: Number | None = None
    rtt_min_ms: Number | None = None
    rtt_p50_ms: Number | None = None
    rtt_p90_ms: Number | None = None
    rtt_p95_ms: Number | None = None
    rtt_p99_ms: Number | None = None
    rtt_max_ms: Number | None = None


class GeneratorFigures(Record):
    """How hard the load generator itself was pushed."""

    windows: int
    saturated_windows: int
    saturated_fraction: Number
    lag_p99_ms: Number
    lag_max_ms: Number
    cpu_max: Number
    rss_max_mb: Number
    saturated: bool


class SystemSamples(Record):
    max: Number
    last: Number
    samples: int


class Pacing(Record):
    """A scenario's declared pacing (``@scenario(pacing=...)``)."""

    requests_per_iteration: Number
    idle_s: Number
    spread_s: Number
    idle_sd_s: Number | None


class ScenarioRates(Record):
    """One scenario's request rates (requests/s; see loadgate.runner.summary)."""

    planned: Number | None
    offered: Number | None
    achieved: Number | None
    offered_vs_planned: Number | None
    planned_from: str | None
    vu_seconds: Number
    achieved_per_vu_s: Number | None
    pacing: Pacing | None
    latency_mean_ms: Number


class RateTotals(Record):
    """A stage's planned, offered and achieved request rates (requests/s) and their ratio;
    empty for a stage without a summary."""

    planned: Number | None = None
    offered: Number | None = None
    achieved: Number | None = None
    offered_vs_planned: Number | None = None
    seconds: Number | None = None


class StageRates(RateTotals):
    by_scenario: dict[str, ScenarioRates] = Field(default_factory=dict)


class AbortRecord(Record):
    """Why the engine stopped a stage: the breached live criterion's evidence
    (:func:`loadgate.runner.stage.abort_evidence`; a sequential test adds its statistic),
    when in the stage, and on which shard. A shard stopped by another's marker copies it."""

    criterion: str | None = None
    metric: str | None = None
    stat: str | None = None
    op: str | None = None
    threshold: Number | None = None
    observed: Number | None = None
    samples: int | None = None
    window: str | None = None
    test: str | None = None
    statistic: Number | None = None
    boundary: Number | None = None
    alpha: Number | None = None
    confidence: Number | None = None
    stage_alpha: Number | None = None
    since_s: int | None = None
    window_observed: Number | None = None
    window_samples: int | None = None
    criterion_window: str | None = None
    min_samples: int | None = None
    at_s: Number | None = None
    shard: str | None = None
    by_marker: bool | None = None


class StageSummary(HttpFigures):
    """A stage's merged results, all shards (``loadgate summarize --json``)."""

    stage: str
    plan: str
    shards: int
    status: str  # complete, incomplete, aborted, error, terminated
    started_at: Number | None
    duration_s: Number
    errors: dict[str, int]  # 4xx, 5xx, connect, timeout, closed, protocol
    max_vus: int
    iterations: int
    dropped_iterations: int
    interrupted_iterations: int
    iteration_errors: int
    checks: ChecksFigures
    by_name: dict[str, HttpFigures]  # per request name
    ws: WsFigures
    aborted: AbortRecord | None
    generator_saturated: bool
    generator: GeneratorFigures
    incomplete_shards: list[str]
    truncated_lines: int
    system: dict[str, SystemSamples]
    rates: StageRates


# --- gates/<stage>.json ----------------------------------------------------------------------


class CriterionRecord(Record):
    """A criterion as a gate read it (:class:`loadgate.verdict.criteria.CriterionResult`), with the
    unit the report shows it in (``%``, ``ms`` or none)."""

    id: str
    level: str
    metric: str
    stat: str
    op: str
    threshold: Number
    observed: Number | None
    breached: bool
    status: str  # pass, breach, insufficient, unknown, inconclusive, no baseline
    samples: int
    window: str
    description: str = ""
    source: str = ""
    reference: Number | None = None
    test: str = "point"
    statistic: Number | None = None
    boundary: Number | None = None
    alpha: Number | None = None
    since_s: int | None = None
    span_s: int | None = None
    span_observed: Number | None = None
    span_samples: int | None = None
    unit: str


class AttemptRecord(Record):
    """One attempt of a stage that ran twice (the first was inconclusive); ``requests`` are
    the pooled evidence the attempt was decided on."""

    attempt: int
    verdict: Verdict
    reasons: list[str]
    requests: int | None


class TargetHealth(Record):
    """One look at the target's ``/healthz`` and ``/readyz``
    (:func:`loadgate.actions.base.health`): ``healthy`` None when it was not looked at."""

    healthy: bool | None
    healthz: int | None = None
    readyz: int | None = None
    release: str | None = None
    error: str | None = None


class Series(Record):
    """Per second of the stage, for the report's charts."""

    t: list[Number]
    rps: list[int]
    p95_ms: list[Number | None]
    errors: list[int]
    vus: list[int]


class LoadLevel(Record):
    """A plan's load level, over the seconds the stage spent near it."""

    level: str
    users: int
    seconds: int
    p95_ms: Number
    error_rate: Number
    cpu: Number | None
    memory: Number | None
    expected_p95_ms: Number | None
    limit_p95_ms: Number | None


class SystemFigure(Record):
    max: Number
    last: Number
    avg: Number
    unit: str  # "%" for a ratio


class BaselineComparison(Comparison):
    """A comparison with the baseline, and how the report says it."""

    model_config = ConfigDict(extra="forbid")

    text: str


class BaselineRecord(Record):
    """The stage against the same stage of the baseline release (loadgate.run.baseline)."""

    run_id: str | None
    release: str | None
    comparisons: list[BaselineComparison]
    findings: list[str]
    inconclusive: list[str]
    thin_baseline: list[str]
    noisy: list[str]
    figures: dict[str, dict[str, Number]]  # this run's, per scope: what the history keeps


class StageGate(Record):
    """``gates/<stage>.json``: a gate's verdict and its evidence. A stage without results
    (``error``) has no summary and none of the optional keys."""

    stage: str
    attempt: int
    attempts: list[AttemptRecord]  # empty unless the stage ran twice
    verdict: Verdict
    reasons: list[str]
    criteria: list[CriterionRecord]
    summary: StageSummary | None
    aborted: AbortRecord | None = None
    events: list[str] = Field(default_factory=list)  # the target crashed or restarted
    invalid: list[str] = Field(default_factory=list)  # why the numbers cannot be vouched for
    target_after: TargetHealth | None = None
    series: Series | None = None
    load_levels: list[LoadLevel] = Field(default_factory=list)
    system: dict[str, SystemFigure] = Field(default_factory=dict)
    expected: dict[str, str] = Field(default_factory=dict)  # the plan's figures, by label
    baseline_run: str | None = None
    baseline: BaselineRecord | None = None


# --- checklist.json, run.json, rollback.json -------------------------------------------------


class ChecklistItem(Record):
    item: str  # as the seed's checklist names it
    status: CheckStatus
    evidence: str
    required: bool  # a failed required item stops the run before any load


class Checklist(RootModel[list[ChecklistItem]]):
    """``checklist.json``: the pre-test checklist, in order."""

    def failed_required(self) -> list[ChecklistItem]:
        return [c for c in self.root if c.required and c.status == "fail"]


class PlannedLoad(Record):
    """Who gets how much load: one scenario of one stage on one shard."""

    stage: str
    scenario: str
    shard: str  # "<index>/<count>"
    executor: str
    peak_vus: int  # on this shard
    peak_total: int  # all shards
    start_s: Number
    duration_s: Number


class RunRecord(Record):
    """``run.json``: the resolved run. It holds no secret (a webhook rollback as
    ``scheme://host`` only), so the tasks pass it by XCom. ``prepare`` sets every key; a run
    that was not prepared (a task that failed before) has only ``run_id`` and ``config``."""

    run_id: str
    config: RunConfig
    plan_name: str | None = None
    title: str | None = None  # the report's
    prepared_at: str | None = None
    run_root: str | None = None
    load: list[PlannedLoad] = Field(default_factory=list)


class RollbackOutcome(Record):
    """``rollback.json``: the rollback action and the target's health after it. Which of the
    optional keys are set depends on the action; none holds a secret."""

    action: str
    release: str | None
    exit_code: int | None = None  # command
    output_tail: str | None = None  # command, scrubbed of secrets
    # kubernetes: what the rollout did (loadgate.actions.kubernetes.rollout_undo), keyed as the
    # deployment's revisions and replica counts come; kept as that function reports it
    rollout: dict[str, Any] | None = None
    webhook: str | None = None  # webhook: scheme://host only
    http_status: int | None = None  # an action over HTTP: its answer
    restored_release: str | None = None  # an action that says which release it restored
    note: str | None = None
    error: str | None = None
    health: TargetHealth
    seconds: Number
    outcome: RollbackResult
    at: str


# --- report.json ---------------------------------------------------------------------------


class TimelineEvent(Record):
    at: str
    event: str


class AcceptanceRow(Record):
    """A row of the report's §1: an acceptance criterion as the seed states it ("< 1%"),
    measured, the baseline release's value and the change (``pp``: percentage points)."""

    id: str
    label: str
    stage: str
    target: str
    measured: Number | None
    baseline: Number | None
    baseline_release: str | None
    change: str
    status: Literal["met", "not met", "no data", "too few samples", "unsure"]
    unit: str


class HeadlineFigure(Record):
    """A card of the report's summary: a key figure with its target and the baseline's."""

    key: str  # peak_users, peak_connections, requests, error_rate, p95, p99
    label: str
    value: Number | None
    unit: str
    target: str | None
    baseline: Number | None
    baseline_release: str | None
    change: str | None
    stage: str | None  # the stage it was read from (p95, p99: the worst stage's)


class ExpectedRow(Record):
    """A plan's expected figure (the seed's §4), scaled to the run's scale and time scale."""

    label: str
    measured: Number | None
    expected: Number | None
    target: str
    scaled: bool


class EndpointRow(Record):
    """One request name of a stage, with its p95's change against the baseline release."""

    request: str
    requests: int | None
    errors: int | None
    error_rate: Number | None
    p50_ms: Number | None
    p95_ms: Number | None
    p99_ms: Number | None
    baseline_p95_ms: Number | None
    p95_change: str


class LevelRow(Record):
    """A load level the stage reached (the seed's §9.2), with the seed's limits."""

    level: str
    users: int | None
    seconds: int | None
    p95_ms: Number | None
    p95_limit_ms: Number | None
    error_rate: Number | None
    error_rate_limit: Number | None
    cpu: Number | None
    memory: Number | None
    status: Literal["met", "not met", "no limit"]


class ReportStage(Record):
    """A stage in ``report.json``: its verdict (``not run`` when it was not gated), key
    figures and evidence."""

    verdict: Verdict | Literal["not run"]
    requests: int | None
    error_rate: Number | None
    p95_ms: Number | None
    p99_ms: Number | None
    aborted: AbortRecord | None
    reasons: list[str]
    criteria: list[CriterionRecord]
    rates: RateTotals
    invalid: list[str]
    attempts: list[AttemptRecord]
    baseline: BaselineRecord | None
    # the report's figures, as it shows them
    p50_ms: Number | None = None
    max_vus: int | None = None
    max_connections: int | None = None
    expected: list[ExpectedRow] = Field(default_factory=list)
    endpoints: list[EndpointRow] = Field(default_factory=list)
    load_levels: list[LevelRow] = Field(default_factory=list)


class Report(Record):
    """``report.json``: the run's verdict, each stage's, the checklist, the rollback, the
    timeline and the release history. ``rollback`` and ``error`` fail the DAG run, and so does
    ``invalid`` unless the profile lets it pass (``limits.invalid_fails_run``)."""

    verdict: Verdict
    reasons: list[str]
    release: str
    target: str
    run_id: str
    dry_run: bool
    stages: dict[str, ReportStage]
    checklist: list[ChecklistItem]
    rollback: RollbackOutcome | None
    timeline: list[TimelineEvent]
    history: list[HistoryEntry]  # the last releases of this profile and plan, this run last
    plan: str | None = None
    scale: Number | None = None
    time_scale: Number | None = None
    headline: list[HeadlineFigure] = Field(default_factory=list)
    acceptance: list[AcceptanceRow] = Field(default_factory=list)
    logs: list[str] = Field(default_factory=list)  # the collected logs, relative to the run root


# --- JSON Schemas --------------------------------------------------------------------------

SCHEMAS: dict[str, type[BaseModel]] = {
    "run": RunRecord,
    "checklist": Checklist,
    "gate": StageGate,
    "rollback": RollbackOutcome,
    "report": Report,
}
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_texts() -> dict[str, str]:
    """Each record's JSON Schema as its file holds it, by file name."""
    out = {}
    for name, model in SCHEMAS.items():
        schema = {"$schema": DIALECT, **model.model_json_schema()}
        text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False)
        out[f"{name}.schema.json"] = text + "\n"
    return out


def stale_schemas(folder: Path) -> list[str]:
    """The schema files in ``folder`` that are missing or differ from the models."""
    return [
        name
        for name, text in schema_texts().items()
        if not (folder / name).is_file() or (folder / name).read_text() != text
    ]


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_texts().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadgate.run.records", description="The run records' JSON Schemas."
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write-schemas", type=Path, metavar="DIR", help="write them to DIR")
    group.add_argument("--check", type=Path, metavar="DIR", help="fail if DIR's are stale")
    args = parser.parse_args(argv)
    if args.write_schemas is not None:
        for path in write_schemas(args.write_schemas):
            print(path)
        return 0
    stale = stale_schemas(args.check)
    for name in stale:
        print(
            f"{args.check / name} is out of date: run python -m loadgate.run.records "
            f"--write-schemas {args.check}",
            file=sys.stderr,
        )
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
