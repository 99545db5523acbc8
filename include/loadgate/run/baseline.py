"""A stage against the same stage of the last good release, and what that means for its gate.

The baseline is the run the release history names (:func:`loadgate.run.history.baseline`: the
pinned run, else the newest passing run of the same target, plan and scale, of the same time
scale where one exists). Each gate stores
its stage's per-second digest beside its decision (``gates/<stage>.digest.json``), so a later
run reads its baseline's seconds without decoding the baseline's windows again.

:func:`loadgate.verdict.compare.compare` gives every comparison with its interval. Here they become
evidence for the verdict:

- the plan's ``relative_to: baseline`` criteria (p95 degradation > 30%, overall or of named
  requests) are read from the matching comparison: breached on a regression (the interval
  wholly above the threshold), inconclusive when the interval straddles it, "no data" with
  too few samples, passed when the interval is wholly below;
- any other regression (a request's p99, the spread p99/p50, an error rate up by more than a
  percentage point) is a finding: the stage is at least ``investigate``;
- every interval is widened by the spread between healthy runs, estimated from the same
  figure of the newest passing runs in the history (:func:`loadgate.verdict.compare.between_runs`;
  each gate stores its stage's figures per scope for this, ``baseline.figures``);
- an inconclusive comparison that decides a criterion, or the stage's overall error rate, makes
  a stage that would pass ``inconclusive`` (re-run once, then decided on the pooled evidence)
  when this run has fewer samples than the baseline; when the baseline is the thinner side, or
  the spread between runs rather than this pair's noise sets the interval, a re-run cannot
  settle it, and it is reported without a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from loadgate.engine.merge import MergedStage, digest_paths, stage_digest
from loadgate.engine.seconds import ALL, HTTP, WS, SecondsDigest
from loadgate.plan.model import Criterion
from loadgate.run import history
from loadgate.run.folder import Run, history_key
from loadgate.run.records import BaselineComparison, BaselineRecord
from loadgate.storage import as_path
from loadgate.verdict.compare import (
    CompareSettings,
    Comparison,
    Metric,
    Outcome,
    between_runs,
    compare,
    figures,
    scope_label,
)
from loadgate.verdict.criteria import CriterionResult


def digest_name(stage: str) -> str:
    return f"gates/{stage}.digest.json"


@dataclass
class BaselineReading:
    """What the comparison with the baseline says about one stage."""

    baseline: history.HistoryEntry | None
    comparisons: list[Comparison] = field(default_factory=list)
    criteria: list[CriterionResult] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # regressions beyond the criteria
    inconclusive: list[str] = field(default_factory=list)
    thin_baseline: list[str] = field(default_factory=list)  # reported, no verdict
    noisy: list[str] = field(default_factory=list)  # undecided: runs vary too much; reported
    figures: dict[str, dict[str, float]] = field(default_factory=dict)  # this run's, per scope

    @property
    def label(self) -> str | None:
        if self.baseline is None:
            return None
        return self.baseline.release or self.baseline.run_id

    def record(self) -> BaselineRecord:
        """As the gate's record holds it (``baseline``)."""
        return BaselineRecord(
            run_id=self.baseline.run_id if self.baseline else None,
            release=self.baseline.release if self.baseline else None,
            comparisons=[
                BaselineComparison.model_validate(c.model_dump() | {"text": c.describe()})
                for c in self.comparisons
            ],
            findings=self.findings,
            inconclusive=self.inconclusive,
            thin_baseline=self.thin_baseline,
            noisy=self.noisy,
            figures=self.figures,
        )


def _source_and_scope(crit: Criterion) -> tuple[str, str]:
    source = WS if crit.metric.startswith("ws_") else HTTP
    names = crit.scope.names or []
    return source, names[0] if len(names) == 1 else ALL


def _metric_of(crit: Criterion) -> Metric | None:
    try:
        return Metric(crit.stat or "p95")
    except ValueError:
        return None


def _criterion_result(crit: Criterion, found: Comparison | None) -> CriterionResult:
    status, breached, observed = "no baseline", False, None
    if found is not None:
        observed = found.change
        status = {
            Outcome.REGRESSION: "breach",
            Outcome.NO_REGRESSION: "pass",
            Outcome.INCONCLUSIVE: "inconclusive",
            Outcome.INSUFFICIENT: "insufficient",
        }[found.outcome]
        breached = found.outcome is Outcome.REGRESSION
    return CriterionResult(
        id=crit.id,
        level=crit.level,
        metric=crit.metric,
        stat=crit.stat or "p95",
        op=crit.op,
        threshold=crit.threshold,
        observed=None if observed is None else round(observed, 6),
        breached=breached,
        status=status,
        samples=found.current_samples if found else 0,
        window="stage vs baseline",
        description=crit.description or (found.describe() if found else ""),
        source=crit.source,
        reference=found.baseline_value if found else None,
    )


# A latency change is material when it is at least this share of the plan's limit for it (the
# stage's acceptance or rollback criteria on latency: ``p95 < 500 ms`` → 25 ms), and never less
# than CompareSettings' floor (5 ms): what the service's own target says is worth noticing.
MATERIAL_SHARE = 0.05
LATENCY_METRICS = {HTTP: "http_req_duration", WS: "ws_rtt"}


def _material_ms(stage_criteria: list[Criterion], source: str, floor: float) -> float:
    limits = [
        c.threshold
        for c in stage_criteria
        if c.metric == LATENCY_METRICS[source]
        and not c.relative_to
        and c.level in ("acceptance", "rollback")
        and c.op in (">", ">=")
        and c.threshold > 0
    ]
    return max(floor, MATERIAL_SHARE * min(limits)) if limits else floor


def _settings(relative: list[Criterion], stage_criteria: list[Criterion]) -> CompareSettings:
    """The plan's degradation threshold (the first relative criterion's; +30% by default) and
    the least latency change that matters (:data:`MATERIAL_SHARE` of its latency limits)."""
    base = CompareSettings()
    values: dict[str, float] = {
        "min_change_ms": _material_ms(stage_criteria, HTTP, base.min_change_ms),
        "min_change_ms_ws": _material_ms(stage_criteria, WS, base.min_change_ms_ws),
    }
    if relative:
        values["latency_threshold"] = relative[0].threshold
    return base.model_copy(update=values)


def _read_digest(root: str, stage: str) -> SecondsDigest | None:
    base = as_path(root)
    stored = base / digest_name(stage)
    try:
        if stored.exists():
            return SecondsDigest.from_dict(orjson.loads(stored.read_bytes()))
        folder = base / "stages" / stage
        return digest_paths([folder]) if folder.exists() else None
    except (OSError, ValueError, KeyError):
        return None


def _earlier_values(
    earlier: list[history.HistoryEntry], stage: str, comp: Comparison
) -> list[float]:
    """The earlier passing runs' values of ``comp``'s metric and scope, newest first."""
    label = scope_label((comp.source, comp.scope))
    out = []
    for entry in earlier:
        figures_ = entry.stages.get(stage)
        value = (figures_.scopes.get(label) or {}).get(comp.metric) if figures_ else None
        if isinstance(value, int | float):
            out.append(float(value))
    return out


def read_against_baseline(run: Run, stage: str, merged: MergedStage) -> BaselineReading:
    """Store this stage's digest, find the baseline and compare (see the module doc)."""
    digest = stage_digest(merged)
    run.artifacts.write_bytes(digest_name(stage), orjson.dumps(digest.to_dict()))
    relative = [c for c in run.plan.criteria_for(stage) if c.relative_to == "baseline"]
    root, key = run.config.artifacts_root, history_key(run)
    entry = history.baseline(
        root,
        key,
        plan=run.config.plan,
        scale=run.config.scale,
        time_scale=run.config.time_scale,
        exclude_run=run.run_id,
    )
    reading = BaselineReading(entry, figures=figures(digest))
    base = _read_digest(entry.run_root, stage) if entry is not None else None
    if base is None:
        reading.criteria = [_criterion_result(c, None) for c in relative]
        return reading
    settings = _settings(relative, run.plan.criteria_for(stage))
    earlier = history.passing_runs(
        history.entries(root, key),
        plan=run.config.plan,
        scale=run.config.scale,
        exclude_run=run.run_id,
    )[: settings.max_runs]
    reading.comparisons = [
        between_runs(comp, _earlier_values(earlier, stage, comp), settings)
        for comp in compare(digest, base, settings, baseline_label=reading.label)
    ]
    by_key = {(c.source, c.scope, c.metric): c for c in reading.comparisons}
    judged: set[tuple[str, str, Metric]] = set()  # comparisons a criterion reads
    for crit in relative:
        source, scope = _source_and_scope(crit)
        metric = _metric_of(crit)
        found = by_key.get((source, scope, metric)) if metric else None
        reading.criteria.append(_criterion_result(crit, found))
        if found is not None:
            judged.add((source, scope, found.metric))
    decisive = judged | {(HTTP, ALL, Metric.ERROR_RATE)}
    for comp in reading.comparisons:
        compared = (comp.source, comp.scope, comp.metric)
        if comp.outcome is Outcome.REGRESSION and compared not in judged:
            reading.findings.append(f"regression: {comp.describe()}")
        elif comp.outcome is Outcome.INCONCLUSIVE and compared in decisive:
            if comp.widened:  # the next run would vary as much: a re-run cannot help
                reading.noisy.append(
                    f"{comp.describe()}: undecided, healthy runs vary this much between runs "
                    f"(spread of {comp.between_runs} passing runs)"
                )
            elif comp.current_samples < comp.baseline_samples:  # more of this run can settle it
                reading.inconclusive.append(
                    f"{comp.describe()}: the interval straddles the threshold"
                )
            else:  # the baseline's side is the thin one: re-running this stage cannot help
                reading.thin_baseline.append(
                    f"{comp.describe()}: undecided, the baseline has fewer samples "
                    f"({comp.baseline_samples:,} vs {comp.current_samples:,})"
                )
    return reading
