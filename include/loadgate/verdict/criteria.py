"""Criteria evaluation, shared by the engine's live abort and by the gates.

One function, :func:`evaluate`, reads criteria over an :class:`~loadgate.engine.aggregate.
Aggregate`: the engine passes its own last N seconds (each rollback criterion's sliding
``window``) every second and stops the stage on a breached ``rollback`` criterion; a gate passes
the merged windows of all shards over the whole stage and decides pass / investigate / rollback.

Engine metrics (what the load generator measured) are listed in :data:`ENGINE_METRICS`; any
other metric a criterion names must be declared in the plan's ``system_metrics`` and is read
from the system samples the engine records once a second (``stat`` over the window's samples).

A criterion reads *insufficient* (never breached) while its denominator is below
``min_samples`` (so one failed request of two is no 50% error rate), and *unknown* when a
system metric has no value (the target's metrics unreachable): breached only if the criterion
says ``unknown: breach``.

Live rate criteria (a metric of kind ``rate`` with a threshold strictly between 0 and 1) are not
read as a point estimate: :class:`SlidingEvaluator` runs the sequential test of
:mod:`loadgate.verdict.sequential` on each second's counts, which breaches only when the
evidence says the true rate is past the threshold, with the stage's false-alarm probability
(``alpha``, split over the shards and the live rate criteria) bounded however often it looks.
The window's rate and samples are still reported, and ``min_samples`` is still a floor on the
window's samples. Other live criteria (system gauges, latencies, counts) keep the point reading.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from loadgate.engine.aggregate import Aggregate
from loadgate.engine.histogram import Accumulator
from loadgate.engine.shard import scale_count
from loadgate.plan.vocabulary import ENGINE_METRICS
from loadgate.verdict.sequential import DEFAULT_ALPHA, RateMonitor, split_alpha

if TYPE_CHECKING:
    from loadgate.plan.model import Criterion, Plan

_OPS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


@dataclass
class CriterionResult:
    id: str
    level: str
    metric: str
    stat: str
    op: str
    threshold: float
    observed: float | None
    breached: bool
    status: str  # pass | breach | insufficient | unknown
    samples: int
    window: str
    description: str = ""
    source: str = ""
    reference: float | None = None
    # the sequential test of a live rate criterion (test "sequential"; "point" otherwise):
    # ln of its e-value, the boundary ln(1/alpha) it breaches at, its alpha, and the evidence
    # span: the last ``span_s`` seconds, from the stage's second ``since_s`` (1-based) where
    # the strongest evidence starts, with its rate and requests
    test: str = "point"
    statistic: float | None = None
    boundary: float | None = None
    alpha: float | None = None
    since_s: int | None = None
    span_s: int | None = None
    span_observed: float | None = None
    span_samples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_rate(metric: str) -> bool:
    spec = ENGINE_METRICS.get(metric)
    return spec is not None and spec.kind == "rate"


def _measure(crit: Criterion, agg: Aggregate, stat: str) -> tuple[float | None, int]:
    """(value, samples) of a criterion's metric over the aggregate; value None = no data."""
    scen, names = crit.scope.scenarios, crit.scope.names
    metric = crit.metric
    if is_rate(metric):
        numerator, total = _rate_counts(crit, agg)
        return (numerator / total if total else None), total
    if metric == "http_req_duration":
        fig = agg.http_figures(scen, names)
        return _latency_value(fig.latency, stat), fig.latency.total
    if metric == "http_reqs":
        return _count_value(agg.http_figures(scen, names).requests, agg, stat)
    if metric in ("iterations", "dropped_iterations"):
        store = agg.iterations if metric == "iterations" else agg.dropped
        return _count_value(agg.count(store, scen), agg, stat)
    if metric == "vus":
        return float(agg.vus_max(scen)), agg.windows
    if metric.startswith("ws_"):
        ws = agg.ws_figures(scen, names)
        if metric == "ws_connections":
            return float(ws.open_max), agg.windows
        if metric == "ws_connect_duration":
            return _latency_value(ws.connect, stat), ws.connect.total
        if metric == "ws_rtt":
            return _latency_value(ws.latency, stat), ws.latency.total
        if metric == "ws_msgs_sent":
            return _count_value(ws.counts["msgs_out"], agg, stat)
        if metric == "ws_msgs_received":
            return _count_value(ws.counts["msgs_in"], agg, stat)
    return _system_value(agg.system_values(metric), stat, window_seconds(crit))  # 1 sample/s


def _rate_counts(crit: Criterion, agg: Aggregate) -> tuple[int, int]:
    """(numerator, denominator) of a rate metric over the aggregate."""
    scen, names = crit.scope.scenarios, crit.scope.names
    metric = crit.metric
    if metric.startswith("http_"):
        fig = agg.http_figures(scen, names)
        numerator = {
            "http_req_failed": fig.failed,
            "http_5xx_rate": fig.by_class.get("5xx", 0),
            "http_unavailable_rate": fig.unavailable,
            "http_availability": fig.requests - fig.unavailable,
        }[metric]
        return numerator, fig.requests
    if metric == "checks_failed_rate":
        passed, failed = agg.checks_figures(scen)
        return failed, passed + failed
    ws = agg.ws_figures(scen, names)
    if metric == "ws_error_rate":
        return ws.errors, ws.error_base
    if metric == "ws_connect_success_rate":
        return ws.counts["connects"], ws.attempts
    raise ValueError(f"{metric} is not a rate metric")


def _latency_value(acc: Accumulator, stat: str) -> float | None:
    if not acc.total:
        return None
    if stat == "avg":
        return acc.mean_ms()
    if stat == "max":
        return acc.max_ms()
    if stat == "min":
        return acc.min_ms()
    return acc.percentile_ms(float(stat[1:]))


def _count_value(n: int, agg: Aggregate, stat: str) -> tuple[float, int]:
    if stat == "per_s":
        return (n / agg.seconds if agg.seconds else 0.0), agg.windows
    return float(n), agg.windows


def _system_value(values: Sequence[float], stat: str, window: int = 1) -> tuple[float | None, int]:
    if not values:
        return None, 0
    n = len(values)
    if stat == "sustained":
        if n < window:
            return None, n
        return max(min(values[i : i + window]) for i in range(n - window + 1)), n
    if stat == "last":
        return values[-1], n
    if stat == "min":
        return min(values), n
    if stat == "avg":
        return sum(values) / n, n
    if stat == "sum":
        return float(sum(values)), n
    if stat == "p95":
        ordered = sorted(values)
        return ordered[max(0, math.ceil(0.95 * n) - 1)], n
    return max(values), n


def default_stat(crit: Criterion) -> str:
    if crit.stat:
        return crit.stat
    spec = ENGINE_METRICS.get(crit.metric)
    return spec.default_stat if spec else "max"


def evaluate_one(
    crit: Criterion,
    agg: Aggregate,
    *,
    window: str,
    baseline: float | None = None,
    scale: float = 1.0,
) -> CriterionResult:
    stat = default_stat(crit)
    value, samples = _measure(crit, agg, stat)
    reference = None
    if crit.relative_to == "baseline" and value is not None:
        reference = baseline if baseline is not None else crit.reference
        value = value / reference - 1.0 if reference else None
    op, threshold = crit.op, crit.threshold
    if crit.scaled and scale != 1.0:
        threshold = float(scale_count(round(threshold), scale))
    if value is None:
        is_system = crit.metric not in ENGINE_METRICS
        status = "unknown" if is_system or crit.relative_to else "insufficient"
        breached = status == "unknown" and crit.unknown == "breach"
        if breached:
            status = "breach"
    elif samples < crit.min_samples:
        status, breached = "insufficient", False
    else:
        breached = _OPS[op](value, threshold)
        status = "breach" if breached else "pass"
    return CriterionResult(
        id=crit.id,
        level=crit.level,
        metric=crit.metric,
        stat=stat,
        op=op,
        threshold=threshold,
        observed=None if value is None else round(value, 6),
        breached=breached,
        status=status,
        samples=samples,
        window=window,
        description=crit.description,
        source=crit.source,
        reference=reference,
    )


def evaluate(
    criteria: Iterable[Criterion],
    agg: Aggregate,
    *,
    window: str = "stage",
    baselines: Mapping[str, float] | None = None,
    scale: float = 1.0,
) -> list[CriterionResult]:
    """Every criterion over one aggregate (a gate: the merged stage). ``scale`` is the run's
    ``--scale`` (for ``scaled`` thresholds); ``baselines`` maps criterion ids to the previous
    release's value for ``relative_to: baseline``."""
    baselines = baselines or {}
    return [
        evaluate_one(c, agg, window=window, baseline=baselines.get(c.id), scale=scale)
        for c in criteria
    ]


def evaluate_stage(
    plan: Plan,
    stage: str,
    agg: Aggregate,
    *,
    levels: Sequence[str] = ("acceptance", "rollback", "investigate"),
    baselines: Mapping[str, float] | None = None,
    scale: float = 1.0,
) -> list[CriterionResult]:
    """A gate's reading: the stage's criteria of the given levels over the whole stage."""
    criteria = plan.criteria_for(stage, tuple(levels))
    return evaluate(criteria, agg, baselines=baselines, scale=scale)


def _needs_histograms(crit: Criterion) -> bool:
    spec = ENGINE_METRICS.get(crit.metric)
    return spec is not None and spec.kind == "latency"


def window_seconds(crit: Criterion) -> int:
    return max(1, math.ceil(crit.window - 1e-9))


DEFAULT_HORIZON_S = 3600


def is_sequential(crit: Criterion) -> bool:
    """A live criterion read by the sequential test: a rate with an absolute threshold strictly
    between 0 and 1 (``> 0`` stays a point reading: one failure is certain evidence)."""
    return (
        is_rate(crit.metric)
        and crit.relative_to is None
        and crit.op in (">", ">=", "<", "<=")
        and 0.0 < crit.threshold < 1.0
    )


class _Sequential:
    """One live rate criterion's test: it reads the criterion's failures (its numerator, or
    the complement for ``<``: availability below 99% is unavailability above 1%)."""

    def __init__(self, crit: Criterion, alpha: float, horizon: int) -> None:
        self.crit = crit
        self.upper = crit.op in (">", ">=")
        p0 = crit.threshold if self.upper else 1.0 - crit.threshold
        self.monitor = RateMonitor(p0, alpha, horizon)

    def push(self, agg: Aggregate) -> None:
        numerator, total = _rate_counts(self.crit, agg)
        failures = numerator if self.upper else total - numerator
        self.monitor.update(failures, total)

    def read(self, point: CriterionResult) -> CriterionResult:
        """The window's point reading with the sequential decision and evidence in it."""
        ev = self.monitor.evidence()
        point.test = "sequential"
        point.statistic = round(ev.statistic, 4) if ev.seconds else None
        point.boundary = round(ev.boundary, 4)
        point.alpha = ev.alpha
        point.since_s = ev.since
        point.span_s = None if ev.since is None else ev.seconds - ev.since + 1
        rate = ev.span_rate
        if rate is not None and not self.upper:
            rate = 1.0 - rate
        point.span_observed = None if rate is None else round(rate, 6)
        point.span_samples = ev.span_trials
        if point.status in ("pass", "breach"):  # enough samples in the window (the floor)
            point.breached = ev.breached
            point.status = "breach" if ev.breached else "pass"
        return point


class SlidingEvaluator:
    """The live reading: each criterion over its own last ``window`` seconds of records, and
    each rate criterion (:func:`is_sequential`) by the sequential test over every second of the
    stage so far, at false-alarm probability ``alpha / (shards * rate criteria)``.

    ``alpha`` is the stage's false-alarm budget, ``shards`` the number of shards that run the
    same test, ``horizon_s`` the stage's planned length in seconds (longer stages stay valid at
    a little more evidence per second past it). Push one record per second, then evaluate."""

    def __init__(
        self,
        criteria: Sequence[Criterion],
        scale: float = 1.0,
        *,
        alpha: float = DEFAULT_ALPHA,
        shards: int = 1,
        horizon_s: int = DEFAULT_HORIZON_S,
    ) -> None:
        self.criteria = list(criteria)
        self.scale = scale
        longest = max((window_seconds(c) for c in self.criteria), default=1)
        self._records: deque[dict[str, Any]] = deque(maxlen=longest)
        self._histograms = any(_needs_histograms(c) for c in self.criteria)
        rate = [c for c in self.criteria if is_sequential(c)]
        self.alpha = alpha
        self.alpha_each = split_alpha(alpha, shards, len(rate))
        self._sequential = {
            i: _Sequential(c, self.alpha_each, horizon_s)
            for i, c in enumerate(self.criteria)
            if is_sequential(c)
        }

    def push(self, record: dict[str, Any]) -> None:
        self._records.append(record)
        if self._sequential:
            agg = Aggregate(histograms=False).add_records((record,))
            for seq in self._sequential.values():
                seq.push(agg)

    def evaluate(self) -> list[CriterionResult]:
        by_window: dict[int, list[int]] = {}
        for i, crit in enumerate(self.criteria):
            by_window.setdefault(window_seconds(crit), []).append(i)
        out: list[tuple[int, CriterionResult]] = []
        records = list(self._records)
        for seconds, indexes in by_window.items():
            agg = Aggregate(histograms=self._histograms).add_records(records[-seconds:])
            crits = [self.criteria[i] for i in indexes]
            results = evaluate(crits, agg, window=f"last {seconds}s", scale=self.scale)
            for i, result in zip(indexes, results, strict=True):
                seq = self._sequential.get(i)
                out.append((i, seq.read(result) if seq else result))
        return [result for _, result in sorted(out, key=lambda pair: pair[0])]
