"""A stage compared with the same stage of a baseline release, from their per-second windows.

Every comparison is a statistic computed on the merged histograms of a side (never an average of
per-second percentiles), its change against the baseline, and a confidence interval for that
change that knows how noisy both runs were.

Metrics, overall (scope ``all``) and per request name (``"METHOD name"``; per latency name for
WebSocket round trips):

- latency ``p50``, ``p95``, ``p99``: relative change ``current / baseline - 1``;
- ``tail_ratio`` = p99 / p50, the spread: relative change. A release whose tail grows while its
  median stays put shows up here (and on p99), which a location test such as Mann-Whitney misses;
- ``error_rate`` = failed / requests (WebSocket: errors / (connection attempts + messages sent)):
  absolute change, ``current - baseline``, in rate units (0.01 = 1 percentage point).

The interval is a block bootstrap over seconds. A run's seconds are its resampling units: each
side is resampled independently, whole seconds with replacement (all shards' windows of a
second stay together, so within-second correlation and load changes over time are kept), B
times (default 1,000), and the statistic is recomputed on the merged histograms of each
resample. The i-th resamples of both sides give the i-th bootstrap change; the interval is the
percentile interval of the B changes at the chosen confidence (default 95%, two-sided). A long
stage is resampled in blocks of consecutive seconds so that at most ``max_blocks`` (600) units
exist: 45 minutes → blocks of 5 s. The random generator is seeded (``seed``): the same inputs
give the same intervals.

What makes it fast: each second's histogram of a scope is folded once into cumulative counts
over coarse bins (16 HDR buckets, 0.8–1.6% wide). For each percentile only the bins where its
bootstrap values can fall are kept (the pooled percentile ± 5 standard errors, the standard
error in probability from the blocks' counts, Woodruff-style), at most 32 edges; the kept
counts of all metrics of a block are packed into one integer with a 32- or 64-bit field each,
so that summing a resample's blocks is one integer addition per block, done in C. A resampled
percentile is read by bisecting its cumulative counts and interpolating log-linearly between
the two surrounding edges. The values reported (baseline, current, change) are the exact ones
from the pooled HDR histograms, as in the stage summary.

Outcomes (:class:`Outcome`), against a threshold per metric (latency and spread: relative,
default +30%, the plan's ``relative_to: baseline`` criteria; error rate: absolute, default
+1 percentage point):

- ``regression``: the interval's lower bound is above the threshold;
- ``no_regression``: its upper bound is below the threshold;
- ``inconclusive``: the interval straddles the threshold;
- a latency change smaller than ``min_change_ms`` (by default 5 ms; the gate sets 5% of the
  plan's latency limit where that is more; for the spread, the change of its p99) is no
  regression whatever its ratio: a p50 of 1.5 ms becoming 5 ms on a machine busy with other
  work is +223% and nothing a user of a service with a 500 ms limit notices;
- ``insufficient``: either side has fewer samples than the metric needs (error rate and p50:
  ``min_samples``, 100; a percentile: at least ``beyond`` (15) samples beyond it, so p95 300
  and p99 and the tail ratio 1,500) or fewer seconds with samples than ``min_seconds`` (10).

Under identical releases the true change is 0, so a false regression needs an interval wholly
above +30%: far rarer than the nominal 2.5% of a one-sided bound at 0.

That interval knows the noise within the two runs, not how much two healthy runs of the same
release differ (the machine's neighbours, a mix percentile sitting on the boundary between
request kinds): measured on the reference service, a p95 of a few milliseconds read 7–32 ms over
eight healthy runs. :func:`between_runs` widens a comparison by that spread, estimated from the
same figure (:func:`figures`) of earlier passing runs (Keptn compares with several earlier
results): under a healthy release the log-ratio of two runs' values has a standard deviation
of √2·s (s the spread of the log values over ``n`` runs), so the interval on each side is at
least the Student's t prediction half-width t(n − 1)·√2·s. Error rates spread absolutely.
"""

from __future__ import annotations

import math
import random
import statistics
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loadgate.engine.histogram import value_at_index
from loadgate.engine.merge import MergedStage, stage_digest
from loadgate.engine.seconds import (
    ALL,
    HTTP,
    STEP,
    WS,
    Record,
    ScopeKey,
    ScopeSeries,
    SecondsDigest,
    fold,
)

MAX_EDGES = 32  # coarse edges kept per percentile
SPAN_SE = 5.0  # edges cover the pooled percentile ± this many standard errors


class Outcome(StrEnum):
    REGRESSION = "regression"
    NO_REGRESSION = "no_regression"
    INCONCLUSIVE = "inconclusive"
    INSUFFICIENT = "insufficient"


class Metric(StrEnum):
    P50 = "p50"
    P95 = "p95"
    P99 = "p99"
    TAIL_RATIO = "tail_ratio"
    ERROR_RATE = "error_rate"


QUANTILES: dict[Metric, float] = {Metric.P50: 50.0, Metric.P95: 95.0, Metric.P99: 99.0}
_LABEL = {
    Metric.P50: "p50",
    Metric.P95: "p95",
    Metric.P99: "p99",
    Metric.TAIL_RATIO: "p99/p50",
    Metric.ERROR_RATE: "error rate",
}


class CompareSettings(BaseModel):
    """Thresholds, sample minimums and bootstrap parameters (the defaults are the plan's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_threshold: float = Field(0.30, gt=0, description="relative p50/p95/p99 change")
    spread_threshold: float = Field(0.30, gt=0, description="relative p99/p50 change")
    error_rate_threshold: float = Field(0.01, gt=0, description="absolute rate change")
    confidence: float = Field(0.95, gt=0.5, lt=1)
    resamples: int = Field(1000, ge=100)
    seed: int = 0
    min_samples: int = Field(100, ge=1, description="requests or latency samples per side")
    min_tail_samples: int = Field(500, ge=1, description="the same for p99 and the tail ratio")
    min_seconds: int = Field(10, ge=1, description="seconds with samples per side")
    max_blocks: int = Field(600, ge=10, description="resampling units per side at most")
    beyond: int = Field(
        15, ge=1, description="samples a percentile needs beyond it (p95: 300, p99: 1,500)"
    )
    metrics: tuple[Metric, ...] = tuple(Metric)
    by_name: bool = True
    min_change_ms: float = Field(
        5.0,
        ge=0,
        description="a latency change smaller than this (ms; for the spread: of its p99) is "
        "no regression, whatever its relative size",
    )
    min_change_ms_ws: float = Field(5.0, ge=0, description="the same for WebSocket latencies")
    min_runs: int = Field(
        4, ge=3, description="earlier passing runs needed to estimate the spread between runs"
    )
    max_runs: int = Field(10, ge=3, description="the newest passing runs that estimate it")

    def minimum_for(self, metric: Metric) -> int:
        """Samples each side needs for ``metric``: a percentile read from a handful of samples
        beyond it is no estimate a bootstrap can put an interval on, so p95 needs ``beyond`` /
        5% and p99 (and the p99/p50 spread) ``beyond`` / 1%."""
        if metric is Metric.ERROR_RATE:
            return self.min_samples
        q = 99.0 if metric is Metric.TAIL_RATIO else QUANTILES[metric]
        floor = self.min_tail_samples if metric in (Metric.P99, Metric.TAIL_RATIO) else 0
        return max(self.min_samples, floor, math.ceil(self.beyond / (1 - q / 100) - 1e-9))


class Comparison(BaseModel):
    """One metric of one scope, current vs baseline, with its evidence."""

    metric: Metric
    source: str  # http | ws
    scope: str  # "all", or a request name ("METHOD name") / WebSocket latency name
    unit: str  # ms (latency), ratio (p99/p50), rate (error rate)
    outcome: Outcome
    baseline_value: float | None
    current_value: float | None
    change: float | None  # relative (latency, spread) or absolute (error rate)
    change_kind: str  # relative | absolute
    ci_low: float | None
    ci_high: float | None
    confidence: float
    threshold: float
    baseline_samples: int
    current_samples: int
    baseline_seconds: int
    current_seconds: int
    resamples: int
    method: str
    baseline_label: str | None = None
    note: str | None = None
    material: bool = True  # latency: the change is at least min_change_ms
    between_runs: int = 0  # earlier passing runs that estimated the spread between runs
    between_sd: float | None = None  # that spread (log scale for relative changes)
    widened: bool = False  # the spread between runs, not this pair's noise, set the interval

    @property
    def label(self) -> str:
        what = _LABEL[self.metric]
        if self.source == WS:
            what = f"ws {what}" if self.scope == ALL else f"ws {self.scope} {what}"
        elif self.scope != ALL:
            what = f"{self.scope} {what}"
        return what

    def describe(self) -> str:
        """``p95 +38% (95% CI +31%…+45%) vs v41``; error rates in percentage points."""
        versus = f" vs {self.baseline_label}" if self.baseline_label else ""
        conf = f"{self.confidence * 100:g}%"
        if self.outcome is Outcome.INSUFFICIENT or self.change is None:
            return (
                f"{self.label}: too few samples ({self.current_samples:,} in "
                f"{self.current_seconds} s vs {self.baseline_samples:,} in "
                f"{self.baseline_seconds} s){versus}"
            )
        if self.change_kind == "absolute":
            pp = 100.0

            def show(v: float | None) -> str:
                return "?" if v is None else f"{v * pp:+.1f}"

            return (
                f"{self.label} {show(self.change)} pp ({conf} CI {show(self.ci_low)}…"
                f"{show(self.ci_high)} pp{self._runs_note()}){versus}"
            )

        def pct(v: float | None) -> str:
            return "?" if v is None else f"{round(v * 100):+d}%"

        return (
            f"{self.label} {pct(self.change)} ({conf} CI {pct(self.ci_low)}…"
            f"{pct(self.ci_high)}{self._runs_note()}){versus}"
        )

    def _runs_note(self) -> str:
        return f", widened by the spread of {self.between_runs} runs" if self.widened else ""


# --- per-second digests (built in :mod:`loadgate.engine.seconds`) ----------------------------


def _bin_value(k: int) -> float:
    """The highest value (µs) of coarse bin ``k``."""
    return float(value_at_index(k * STEP + STEP - 1))


# --- one side's bootstrap ---------------------------------------------------------------------


@dataclass
class _QuantileSpec:
    key: ScopeKey
    q: float
    edges: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    offset: int = 0  # field of the first edge
    total_at: int = 0  # field of the latency total


@dataclass
class _RateSpec:
    key: ScopeKey
    offset: int = 0  # fields: n, failed


def _blocks(length: int, max_blocks: int) -> list[range]:
    size = max(1, math.ceil(length / max_blocks))
    return [range(a, min(a + size, length)) for a in range(0, length, size)]


def _edges(series: ScopeSeries, blocks: list[range], q: float) -> list[int]:
    """The coarse bins that the resampled ``q`` percentile can fall in (plus one below)."""
    k_first, pooled = fold(series.pooled)
    total = series.pooled.total
    target = max(int(q / 100.0 * total + 0.5), 1)
    k_hat = k_first + bisect_left(pooled, target)
    frac = q / 100.0
    d = []
    for block in blocks:
        c = sum(series.cum_at(i, k_hat) for i in block)
        n = sum(series.latency_total(i) for i in block)
        d.append(c - frac * n)
    mean = sum(d) / len(d)
    se = math.sqrt(sum((x - mean) ** 2 for x in d)) / total
    lo = max(0.0, frac - SPAN_SE * se) * total - 1
    hi = min(1.0, frac + SPAN_SE * se) * total + 1
    last = len(pooled) - 1
    i_lo = max(0, min(bisect_left(pooled, lo), last) - 1)
    i_hi = min(bisect_left(pooled, hi), last)
    chosen = set(range(i_lo, i_hi + 1))
    if len(chosen) > MAX_EDGES:
        chosen = {i_lo, i_hi, k_hat - k_first, max(k_hat - k_first - 1, 0)}
        for j in range(MAX_EDGES - 2):
            level = lo + (hi - lo) * (j + 1) / (MAX_EDGES - 1)
            chosen.add(min(bisect_left(pooled, level), last))
    return [k_first + i for i in sorted(chosen)]


def _take(series: ScopeSeries, i: int, edges: list[int]) -> list[int]:
    """Second ``i``'s cumulative counts at the given coarse bins (consecutive: sliced in C)."""
    c = series.cum[i]
    e = len(edges)
    if not c:
        return [0] * e
    k0, length = series.k0[i], len(c)
    if edges[-1] - edges[0] + 1 != e:
        last = c[-1]
        return [
            int(c[j]) if 0 <= j < length else (0 if j < 0 else last)
            for j in (k - k0 for k in edges)
        ]
    a = edges[0] - k0
    if a >= length:
        return [int(c[-1])] * e
    if a + e <= 0:
        return [0] * e
    lead = max(0, -a)
    mid = c[max(a, 0) : a + e].tolist()
    return [0] * lead + mid + [int(c[-1])] * (e - lead - len(mid))


def _quantile(fields: array[int], spec: _QuantileSpec) -> tuple[float, bool]:
    """A resample's percentile (µs) from its packed counts; True when clamped to the edges."""
    total = fields[spec.total_at]
    if not total:
        return math.nan, False
    target = max(int(spec.q / 100.0 * total + 0.5), 1)
    e = len(spec.edges)
    cums = fields[spec.offset : spec.offset + e]
    p = bisect_left(cums, target)
    if p == 0:
        return spec.values[0], True
    if p == e:
        return spec.values[-1], True
    below, above = cums[p - 1], cums[p]
    v0, v1 = spec.values[p - 1], spec.values[p]
    return v0 * (v1 / v0) ** ((target - below) / (above - below)), False


class _Side:
    """One run's resampling units and packed counts for a set of metrics."""

    def __init__(self, digest: SecondsDigest, settings: CompareSettings) -> None:
        digest.finish()
        self.digest = digest
        self.blocks = _blocks(len(digest.seconds), settings.max_blocks)

    def bootstrap(
        self,
        quantiles: list[_QuantileSpec],
        rates: list[_RateSpec],
        resamples: int,
        rng: random.Random,
    ) -> tuple[dict[tuple[ScopeKey, float], list[float]], dict[ScopeKey, list[float]], int]:
        scopes = self.digest.scopes
        width = 0
        totals: dict[ScopeKey, int] = {}
        for spec in quantiles:
            series = scopes[spec.key]
            spec.edges = _edges(series, self.blocks, spec.q)
            spec.values = [_bin_value(k) for k in spec.edges]
            if spec.key not in totals:
                totals[spec.key] = width
                width += 1
            spec.total_at = totals[spec.key]
            spec.offset = width
            width += len(spec.edges)
        for rate in rates:
            rate.offset = width
            width += 2
        seconds_rows: list[list[int]] = []
        biggest = 1
        for i in range(len(self.digest.seconds)):
            row: list[int] = [0] * width
            for key, at in totals.items():
                row[at] = scopes[key].latency_total(i)
            for spec in quantiles:
                series = scopes[spec.key]
                row[spec.offset : spec.offset + len(spec.edges)] = _take(series, i, spec.edges)
            for rate in rates:
                series = scopes[rate.key]
                row[rate.offset] = series.n[i]
                row[rate.offset + 1] = series.failed[i]
            biggest = max(biggest, max(row, default=0))
            seconds_rows.append(row)
        size = len(self.blocks[0]) if self.blocks else 1
        code = "I" if biggest * size * len(self.blocks) < 2**32 else "Q"
        nbytes = array(code).itemsize * width
        per_second = [int.from_bytes(array(code, row).tobytes(), "little") for row in seconds_rows]
        packed = [sum(per_second[i] for i in block) for block in self.blocks]
        q_out: dict[tuple[ScopeKey, float], list[float]] = {(s.key, s.q): [] for s in quantiles}
        r_out: dict[ScopeKey, list[float]] = {r.key: [] for r in rates}
        clamped = 0
        units = len(packed)
        choices = rng.choices
        for _ in range(resamples):
            total = sum(choices(packed, k=units))
            fields = array(code)
            fields.frombytes(total.to_bytes(nbytes, "little"))
            for spec in quantiles:
                value, clamp = _quantile(fields, spec)
                clamped += clamp
                q_out[(spec.key, spec.q)].append(value)
            for rate in rates:
                n = fields[rate.offset]
                r_out[rate.key].append(fields[rate.offset + 1] / n if n else math.nan)
        return q_out, r_out, clamped


# --- comparing --------------------------------------------------------------------------------


def _interval(values: list[float], confidence: float) -> tuple[float | None, float | None]:
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return None, None
    alpha = (1.0 - confidence) / 2.0

    def at(p: float) -> float:
        pos = p * (len(data) - 1)
        i = int(pos)
        j = min(i + 1, len(data) - 1)
        return data[i] + (data[j] - data[i]) * (pos - i)

    return at(alpha), at(1.0 - alpha)


def _outcome(
    low: float | None, high: float | None, threshold: float, material: bool = True
) -> Outcome:
    if low is None or high is None:
        return Outcome.INSUFFICIENT
    if not material:  # too small in absolute terms to matter, whatever the ratio
        return Outcome.NO_REGRESSION
    if low > threshold:
        return Outcome.REGRESSION
    if high < threshold:
        return Outcome.NO_REGRESSION
    return Outcome.INCONCLUSIVE


def _as_digest(side: SecondsDigest | MergedStage | Iterable[Record]) -> SecondsDigest:
    if isinstance(side, SecondsDigest):
        return side
    if isinstance(side, MergedStage):
        return stage_digest(side)
    return SecondsDigest.from_records(side)


def _seconds_with(series: ScopeSeries | None, latency: bool) -> int:
    if series is None:
        return 0
    if latency:
        return sum(1 for c in series.cum if c)
    return sum(1 for n in series.n if n)


def _ms(us: float) -> float:
    return us / 1000.0


def compare(
    current: SecondsDigest | MergedStage | Iterable[Record],
    baseline: SecondsDigest | MergedStage | Iterable[Record],
    settings: CompareSettings | None = None,
    *,
    baseline_label: str | None = None,
) -> list[Comparison]:
    """Every metric of every scope present on both sides, current vs baseline.

    ``current`` and ``baseline`` are digests, merged stages or window records (of any shards).
    Scopes seen on one side only are skipped (nothing to compare); the order is: HTTP overall,
    HTTP per name (sorted), WebSocket overall, WebSocket per latency name.
    """
    settings = settings or CompareSettings()
    cur, base = _Side(_as_digest(current), settings), _Side(_as_digest(baseline), settings)
    keys = [k for k in cur.digest.scopes if k in base.digest.scopes]
    if not settings.by_name:
        keys = [k for k in keys if k[1] == ALL]
    keys.sort(key=lambda k: (k[0] != HTTP, k[1] != ALL, k[1]))
    wanted = set(settings.metrics)
    if Metric.TAIL_RATIO in wanted:
        wanted |= {Metric.P50, Metric.P99}

    plan: list[tuple[ScopeKey, Metric]] = []
    quantile_specs: dict[str, list[_QuantileSpec]] = {"cur": [], "base": []}
    rate_specs: dict[str, list[_RateSpec]] = {"cur": [], "base": []}
    for key in keys:
        sides = {"cur": cur.digest.scopes[key], "base": base.digest.scopes[key]}
        has_latency = all(s.pooled.total for s in sides.values())
        has_rate = all(sum(s.n) for s in sides.values())
        for metric in settings.metrics:
            if metric is Metric.ERROR_RATE:
                if has_rate:
                    plan.append((key, metric))
            elif has_latency:
                plan.append((key, metric))
        if has_latency:
            for name, series in sides.items():
                for metric, q in QUANTILES.items():
                    if metric in wanted and series.pooled.total:
                        quantile_specs[name].append(_QuantileSpec(key, q))
        if has_rate and Metric.ERROR_RATE in wanted:
            for name in sides:
                rate_specs[name].append(_RateSpec(key))

    b = settings.resamples
    cur_q, cur_r, cur_clamped = cur.bootstrap(
        quantile_specs["cur"], rate_specs["cur"], b, random.Random(f"{settings.seed}:current")
    )
    base_q, base_r, base_clamped = base.bootstrap(
        quantile_specs["base"], rate_specs["base"], b, random.Random(f"{settings.seed}:baseline")
    )
    blocks_note = (
        f"blocks of {len(cur.blocks[0]) if cur.blocks else 1} s / "
        f"{len(base.blocks[0]) if base.blocks else 1} s"
    )
    clamp_share = (cur_clamped + base_clamped) / max(
        1, b * (len(quantile_specs["cur"]) + len(quantile_specs["base"]))
    )

    out: list[Comparison] = []
    for key, metric in plan:
        c_series, b_series = cur.digest.scopes[key], base.digest.scopes[key]
        is_rate = metric is Metric.ERROR_RATE
        minimum = settings.minimum_for(metric)
        if is_rate:
            c_n, b_n = sum(c_series.n), sum(b_series.n)
        else:
            c_n, b_n = c_series.pooled.total, b_series.pooled.total
        c_s, b_s = _seconds_with(c_series, not is_rate), _seconds_with(b_series, not is_rate)
        common: dict[str, Any] = {
            "metric": metric,
            "source": key[0],
            "scope": key[1],
            "confidence": settings.confidence,
            "baseline_samples": b_n,
            "current_samples": c_n,
            "baseline_seconds": b_s,
            "current_seconds": c_s,
            "resamples": b,
            "baseline_label": baseline_label,
        }
        moved_ms = math.inf  # an error rate's change is judged by its threshold alone
        if is_rate:
            b_val = sum(b_series.failed) / b_n
            c_val = sum(c_series.failed) / c_n
            change: float = c_val - b_val
            boot = [c - x for c, x in zip(cur_r[key], base_r[key], strict=True)]
            threshold = settings.error_rate_threshold
            kind, unit = "absolute", "rate"
            method = (
                f"difference of rates; percentile {b}-resample bootstrap over seconds "
                f"({blocks_note})"
            )
        else:
            if metric is Metric.TAIL_RATIO:
                bp = b_series.pooled.percentiles_us([50, 99])
                cp = c_series.pooled.percentiles_us([50, 99])
                b_val, c_val = bp[99] / max(bp[50], 1), cp[99] / max(cp[50], 1)
                moved_ms = _ms(cp[99] - bp[99])
                b_boot = [
                    x / y for x, y in zip(base_q[(key, 99.0)], base_q[(key, 50.0)], strict=True)
                ]
                c_boot = [
                    x / y for x, y in zip(cur_q[(key, 99.0)], cur_q[(key, 50.0)], strict=True)
                ]
                threshold, unit = settings.spread_threshold, "ratio"
            else:
                q = QUANTILES[metric]
                b_val = _ms(b_series.pooled.percentiles_us([q])[q])
                c_val = _ms(c_series.pooled.percentiles_us([q])[q])
                moved_ms = c_val - b_val
                b_boot, c_boot = base_q[(key, q)], cur_q[(key, q)]
                threshold, unit = settings.latency_threshold, "ms"
            change = c_val / b_val - 1.0 if b_val else math.nan
            boot = [c / x - 1.0 for c, x in zip(c_boot, b_boot, strict=True)]
            kind = "relative"
            method = (
                f"ratio of percentiles of merged histograms; percentile {b}-resample "
                f"bootstrap over seconds ({blocks_note})"
            )
        if c_n < minimum or b_n < minimum or min(c_s, b_s) < settings.min_seconds:
            out.append(
                Comparison(
                    **common,
                    unit=unit,
                    outcome=Outcome.INSUFFICIENT,
                    baseline_value=round(b_val, 6),
                    current_value=round(c_val, 6),
                    change=None,
                    change_kind=kind,
                    ci_low=None,
                    ci_high=None,
                    threshold=threshold,
                    method=method,
                    note=f"needs {minimum} samples in {settings.min_seconds} s on each side",
                )
            )
            continue
        low, high = _interval(boot, settings.confidence)
        note = None
        if not is_rate and clamp_share > 0.01:
            note = f"{clamp_share:.1%} of resampled percentiles fell outside the kept bins"
        floor = settings.min_change_ms_ws if key[0] == WS else settings.min_change_ms
        material = moved_ms >= floor
        if not material:
            note = f"{moved_ms:+.1f} ms: under the {floor:g} ms a regression needs" + (
                f"; {note}" if note else ""
            )
        out.append(
            Comparison(
                **common,
                unit=unit,
                outcome=_outcome(low, high, threshold, material),
                material=material,
                baseline_value=round(b_val, 6),
                current_value=round(c_val, 6),
                change=None if math.isnan(change) else round(change, 6),
                change_kind=kind,
                ci_low=None if low is None else round(low, 6),
                ci_high=None if high is None else round(high, 6),
                threshold=threshold,
                method=method,
                note=note,
            )
        )
    return out


def regressions(comparisons: Sequence[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.outcome is Outcome.REGRESSION]


# --- the spread between runs --------------------------------------------------------------------


def scope_label(key: ScopeKey) -> str:
    """``("http", "all")`` → ``"http all"``: how :func:`figures` names a scope."""
    return f"{key[0]} {key[1]}"


def figures(digest: SecondsDigest) -> dict[str, dict[str, float]]:
    """Each scope's whole-stage values of the compared metrics (latencies in ms): what the
    release history keeps of a run, so that later runs can see how much healthy runs vary."""
    out: dict[str, dict[str, float]] = {}
    for key, series in sorted(digest.scopes.items()):
        row: dict[str, float] = {}
        if series.pooled.total:
            p = series.pooled.percentiles_us([50.0, 95.0, 99.0])
            row[Metric.P50] = round(_ms(p[50.0]), 6)
            row[Metric.P95] = round(_ms(p[95.0]), 6)
            row[Metric.P99] = round(_ms(p[99.0]), 6)
            row[Metric.TAIL_RATIO] = round(p[99.0] / max(p[50.0], 1), 6)
        n = sum(series.n)
        if n:
            row[Metric.ERROR_RATE] = round(sum(series.failed) / n, 8)
        if row:
            out[scope_label(key)] = {str(k): v for k, v in row.items()}
    return out


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile, by the Cornish-Fisher expansion in 1/df (Abramowitz & Stegun
    26.7.5): within 1% of the exact value for df ≥ 3 at the usual confidences."""
    if df < 1:
        raise ValueError("df must be at least 1")
    z = statistics.NormalDist().inv_cdf(p)
    z3, z5, z7, z9 = z**3, z**5, z**7, z**9
    return (
        z
        + (z3 + z) / (4 * df)
        + (5 * z5 + 16 * z3 + 3 * z) / (96 * df**2)
        + (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * df**3)
        + (79 * z9 + 776 * z7 + 1482 * z5 - 1920 * z3 - 945 * z) / (92160 * df**4)
    )


def between_runs(
    comp: Comparison, earlier: Sequence[float], settings: CompareSettings | None = None
) -> Comparison:
    """``comp`` with its interval widened to the spread of ``earlier`` passing runs' values of
    the same metric and scope (see the module doc); unchanged with fewer than ``min_runs`` of
    them or without an interval."""
    settings = settings or CompareSettings()
    if comp.change is None or comp.ci_low is None or comp.ci_high is None:
        return comp
    relative = comp.change_kind == "relative"
    values = [math.log(v) for v in earlier if v > 0] if relative else list(earlier)
    values = values[: settings.max_runs]
    if len(values) < settings.min_runs or (relative and comp.ci_low <= -1):
        return comp
    sd = statistics.stdev(values)
    half = t_quantile((1 + comp.confidence) / 2, len(values) - 1) * math.sqrt(2) * sd

    def to(v: float) -> float:
        return math.log1p(v) if relative else v

    def back(v: float) -> float:
        return math.expm1(v) if relative else v

    centre, low, high = to(comp.change), to(comp.ci_low), to(comp.ci_high)
    widened = centre - half < low or centre + half > high
    low, high = min(low, centre - half), max(high, centre + half)
    return comp.model_copy(
        update={
            "ci_low": round(back(low), 6),
            "ci_high": round(back(high), 6),
            "outcome": _outcome(back(low), back(high), comp.threshold, comp.material),
            "between_runs": len(values),
            "between_sd": round(sd, 6),
            "widened": widened,
        }
    )
