"""The live rate test (loadgate.verdict.sequential) by simulation: its false-alarm rate over whole
stages and shards, and its detection delay for faults that start mid-stage.

Each simulated stage runs 5 shards; each shard sees Bernoulli requests in one-second batches
(20-80 requests a second, drawn per second) and runs one test at the stage's alpha split over
the shards (and, for the delay tests, over the plan's two live rate criteria of the API stage).
Seeds are fixed, so the figures are reproducible; the bounds asserted are the claims (alpha
plus a binomial margin whose chance of being passed by a correct test is about 1 in 1,000), not
the figures these seeds happen to give.
"""

from __future__ import annotations

import bisect
import math
import random
from functools import cache

import pytest

from loadgate.verdict.sequential import (
    RateMonitor,
    alternative,
    detection_bound,
    log_weight,
    split_alpha,
)

SHARDS = 5
STAGES = 200
STAGE_S = 180  # seconds of a simulated stage (its planned horizon)
THRESHOLD = 0.05


@cache
def _cdf(n: int, p: float) -> tuple[float, ...]:
    out, acc, pmf = [], 0.0, (1.0 - p) ** n
    for k in range(n + 1):
        acc += pmf
        out.append(acc)
        pmf = pmf * (n - k) / (k + 1) * p / (1.0 - p)
    return tuple(out)


def binomial(rng: random.Random, n: int, p: float) -> int:
    """An exact Binomial(n, p) draw by inversion."""
    return min(bisect.bisect_left(_cdf(n, p), rng.random()), n)


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(Binomial(n, p) >= k)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def margin(n: int, p: float, risk: float = 0.001) -> int:
    """The largest count a Binomial(n, p) passes with probability below ``risk``."""
    k = 0
    while binomial_tail(n, p, k + 1) >= risk:
        k += 1
    return k


def false_alarms(rate: float, alphas: tuple[float, ...], seed: int) -> list[int]:
    """Stages (of STAGES) aborted by at least one of SHARDS shards, for each stage alpha; the
    tests of every alpha watch the same simulated requests."""
    rng = random.Random(seed)
    aborted = [0] * len(alphas)
    for _ in range(STAGES):
        hit = [False] * len(alphas)
        for _ in range(SHARDS):
            monitors = [RateMonitor(THRESHOLD, split_alpha(a, SHARDS, 1), STAGE_S) for a in alphas]
            for _ in range(STAGE_S):
                n = rng.randint(20, 80)
                f = binomial(rng, n, rate)
                for i, m in enumerate(monitors):
                    if not hit[i] and m.push(f, n):
                        hit[i] = True
        aborted = [a + int(h) for a, h in zip(aborted, hit, strict=True)]
    return aborted


@pytest.mark.slow
def test_false_alarms_at_the_threshold_stay_below_alpha() -> None:
    """The null's worst case: every request fails with probability exactly the threshold. At
    the default alpha 0.01 and at 0.2 (where the bound is near enough to be seen), the
    fraction of stages aborted by any shard is at most alpha (plus the binomial margin)."""
    alphas = (0.01, 0.2)
    aborted = false_alarms(THRESHOLD, alphas, seed=20260901)
    for alpha, count in zip(alphas, aborted, strict=True):
        assert count <= margin(STAGES, alpha), (alpha, count)
    assert aborted[1] <= STAGES * 0.2  # the figure itself, not only the margin


def test_a_two_percent_release_is_never_rolled_back() -> None:
    """The issue's case: 2% failures against a 5% threshold, 200 stages x 5 shards."""
    [count] = false_alarms(0.02, (0.01,), seed=7)
    assert count <= margin(STAGES, 0.01)
    assert count == 0  # at 2% the test is far inside its bound


def test_a_single_monitor_never_breaches_on_a_rate_below_the_threshold_it_reports() -> None:
    m = RateMonitor(THRESHOLD, 0.001, 100)
    for _ in range(100):
        ev = m.update(2, 100)
    assert not ev.breached and ev.statistic < ev.boundary
    assert ev.boundary == pytest.approx(math.log(1000))


def _delay(rate: float, rps: int, alpha_each: float, horizon: int, seed: int) -> list[int]:
    """Requests after a fault's start until the test breaches, over 200 runs: 30 s at 2% then
    ``rate`` from a second boundary; each run ends at the breach (or after 120 s)."""
    rng = random.Random(seed)
    delays = []
    for _ in range(200):
        m = RateMonitor(THRESHOLD, alpha_each, horizon)
        for _ in range(30):
            m.push(binomial(rng, rps, 0.02), rps)
        assert not m.breached
        sent = 0
        for _ in range(120):
            sent += rps
            if m.push(binomial(rng, rps, rate), rps):
                break
        delays.append(sent if m.breached else math.inf)
    return delays


@pytest.mark.parametrize(("rate", "rps"), [(0.10, 100), (0.20, 100), (0.20, 30)])
def test_a_fault_mid_stage_is_detected_within_the_derived_bound(rate: float, rps: int) -> None:
    """The API stage's test (alpha 0.01 over 5 shards and 2 live rate criteria, a 44-minute
    horizon): a fault that starts mid-stage is detected within detection_bound's requests (its
    99% normal-approximation bound, rounded up to whole seconds) in 95%+ of runs."""
    alpha_each, horizon = split_alpha(0.01, SHARDS, 2), 2700
    bound = detection_bound(rate, THRESHOLD, alpha_each, horizon, beta=0.01)
    seconds = math.ceil(bound / rps)
    delays = _delay(rate, rps, alpha_each, horizon, seed=int(rate * 1000) + rps)
    within = sum(d <= seconds * rps for d in delays)
    assert within >= 0.95 * len(delays), (bound, sorted(delays)[190:])
    # the order of magnitude the README states: hundreds of requests for 10%, ~100 for 20%
    assert bound < {0.10: 2000, 0.20: 300}[rate]


def test_the_detection_bound_follows_the_threshold_it_was_derived_for() -> None:
    h = math.log(1 / 0.001) + math.log(4) - log_weight(2700, 2700)
    p1 = alternative(THRESHOLD, 2.0)  # odds ratio 2: ~9.5%, the alternative nearest 10%
    drift = 0.10 * math.log(p1 / THRESHOLD) + 0.90 * math.log((1 - p1) / (1 - THRESHOLD))
    median = detection_bound(0.10, THRESHOLD, 0.001, 2700, beta=0.5)
    assert median == pytest.approx(h / drift, rel=0.01)
    assert detection_bound(0.05, THRESHOLD, 0.001, 2700) == math.inf  # no drift at the null


def test_evidence_names_the_fault_start() -> None:
    m = RateMonitor(THRESHOLD, 0.001, 600)
    for _ in range(50):
        m.update(1, 100)
    ev = None
    for _ in range(10):
        ev = m.update(25, 100)
        if ev.breached:
            break
    assert ev is not None and ev.breached
    assert ev.since == 51 and ev.span_rate == pytest.approx(0.25)
    assert ev.span_trials == 100 * (ev.seconds - 50)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        RateMonitor(0.0, 0.01, 10)
    with pytest.raises(ValueError):
        RateMonitor(0.05, 1.5, 10)
    with pytest.raises(ValueError):
        RateMonitor(0.05, 0.01, 10).update(5, 3)


def test_a_stage_longer_than_its_horizon_keeps_a_summable_weight() -> None:
    weights = [math.exp(log_weight(t, 100)) for t in range(1, 100_000)]
    assert sum(weights) <= 1.0
    assert math.exp(log_weight(50, 100)) == pytest.approx(0.9 / 100)
