"""A sequential test for live rate criteria, valid however often the engine looks.

The question each shard asks once a second, for a rollback criterion such as ``http_req_failed
> 5%``: *does the evidence say that the true failure rate is now above the threshold?* A point
estimate over a sliding window, looked at every second by every shard, answers "yes" far too
often: 7 failures in 127 requests (5.5%) happen by chance to a 2% release. This module answers
with a test whose false-alarm probability over the whole stage is bounded by a stated ``alpha``,
however many seconds it is looked at, and that still stops a fault that starts mid-stage within
a few hundred requests of its start.

The test: a weighted Shiryaev-Roberts mixture of likelihood ratios
---------------------------------------------------------------------

Null hypothesis: every request fails with probability at most ``p0`` (the threshold) given all
that happened before it. Observations arrive in one-second batches: second ``t`` brings ``n_t``
requests of which ``f_t`` failed.

For an alternative rate ``p1 > p0`` the likelihood ratio of second ``t`` is

    LR_t(p1) = (p1 / p0) ** f_t * ((1 - p1) / (1 - p0)) ** (n_t - f_t)

and the product ``M_s,t(p1) = LR_s * ... * LR_t`` is the evidence for "the rate has been
``p1`` since second ``s``" (a fault that started at ``s``). Under the null each request's
factor has conditional mean ``<= 1`` (``E[LR] = p (p1/p0) + (1-p) (1-p1)/(1-p0)`` grows with
``p`` and is 1 at ``p = p0``), so ``M_s,t`` is a non-negative supermartingale in ``t`` that
starts at 1, whatever the number of requests per second and whenever the engine looks.

The statistic mixes these over every possible start second ``s`` (weights ``w_s``) and over a
few alternatives ``p1_j`` (weights ``pi_j``):

    Z_t = sum_j pi_j * sum_{s <= t} w_s * M_s,t(p1_j),      sum_j pi_j = 1, sum_s w_s <= 1

``Z`` is itself a non-negative supermartingale with ``Z_0 <= 1`` (start seconds not reached
yet contribute ``w_s * 1``, which only the analysis counts). Ville's inequality gives

    P_null( Z_t >= 1 / alpha  for any t, ever ) <= alpha

so the test breaches when ``ln Z_t >= ln(1 / alpha)`` and its false-alarm probability over the
whole stage, looked at every second, is at most ``alpha``. It updates in O(1) per second per
alternative: ``R_t = (R_{t-1} + w_t) * LR_t``.

Weights over start seconds: the engine knows the stage's planned length ``H`` seconds (the
``horizon``), so ``w_s = (1 - tail) / H`` for ``s <= H``; a stage that runs longer keeps a
valid test through ``w_{H+k} = tail / (k (k + 1))`` (they sum to ``tail``). The price of
watching ``H`` seconds is ``ln H`` nats of evidence, the same as a union bound over ``H``
restart points, but a sum is never smaller than a maximum, so the test breaches no later than a
Bernoulli CUSUM with Ville's bound and a union bound over its restart points (it is that CUSUM
with ``max`` replaced by ``sum``).

Alternatives: ``p1`` at odds ratios 1.5, 2, 3 and 5 to the threshold (1.5x-5x the rate when
the threshold is small; always below 1). A fault at rate ``p`` is detected at the speed of the
alternative closest to it, at a cost of ``ln 4`` nats for not knowing ``p`` in advance.

Splitting alpha: the stage's false-alarm budget ``alpha`` (0.01 by default) is split evenly
over the shards and the live rate criteria, ``alpha / (shards * criteria)`` each; a false abort
anywhere needs one of them to breach, so by the union bound the stage is aborted by a healthy
release (every rate at or below its threshold) with probability at most ``alpha``.

Detection delay. After a fault raises the rate to ``p`` at second ``tau``, the term of start
second ``tau`` (the next second boundary) and the alternative ``j`` alone reach the boundary
when its log-likelihood ratio ``S_n`` over the ``n`` post-fault requests passes

    h_j = ln(1 / alpha) + ln(1 / pi_j) + ln(1 / w_tau)

``S_n`` has mean ``n D`` and variance ``n V`` per request, with ``D = p ln(p1/p0) + (1-p)
ln((1-p1)/(1-p0))`` (the drift; positive for ``p`` above ``p0`` by enough) and ``V = p (1-p)
ln(p1 (1-p0) / (p0 (1-p1)))**2``, so about ``h_j / D`` requests suffice, and
:func:`detection_bound` gives the ``n`` that the normal approximation says suffices with
probability ``1 - beta``. For 10% against 5% (``D`` about 0.02 nats per request) and ``alpha``
= 0.001 over a 44-minute stage that is about 790 requests at the median and 1,780 at 99%; for
20%, 120 and 265. The sum over other start seconds and alternatives only adds evidence.

Why not a confidence bound on the sliding window: an exact (Clopper-Pearson) lower bound on the
window's rate, with alpha split over the stage's looks, is valid too, but a fault that starts
mid-window is diluted by the healthy seconds before it: with 2% before and 10% after, a 30 s
window's rate passes 5% only 12 s after the fault, and the bound later still. The likelihood
ratio from each start second sees only the faulty seconds. ``bench/verdict/live_alarm.py``
compares both by simulation.

What it does not claim: requests are not independent in a real service; the guarantee holds
as long as each request's failure probability, given what came before, is at most the
threshold. A burst of failures above the threshold for some seconds is a rate above the
threshold and is (rightly) detected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_ALPHA = 0.01
ODDS_RATIOS: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0)
TAIL = 0.1  # weight kept for start seconds past the planned horizon
NEG_INF = -math.inf


def split_alpha(alpha: float, shards: int, criteria: int) -> float:
    """Each (shard, criterion) test's share of the stage's false-alarm budget."""
    return alpha / (max(1, shards) * max(1, criteria))


def alternative(p0: float, odds_ratio: float) -> float:
    """The rate whose odds are ``odds_ratio`` times the odds of ``p0``."""
    odds = p0 / (1.0 - p0) * odds_ratio
    return odds / (1.0 + odds)


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def log_weight(t: int, horizon: int, tail: float = TAIL) -> float:
    """ln w_t of start second ``t`` (1-based): uniform over the horizon, then a summable tail."""
    if t <= horizon:
        return math.log((1.0 - tail) / horizon)
    k = t - horizon
    return math.log(tail / (k * (k + 1)))


@dataclass(frozen=True)
class Evidence:
    """Where the test stands after the latest second.

    ``statistic`` is ``ln Z`` (the log of the e-value), ``boundary`` is ``ln(1 / alpha)``; the
    test breaches when the first reaches the second. ``since`` is the start second (1-based,
    the stage's seconds as pushed) of the strongest single piece of evidence, with its counts:
    the failures and requests since the fault most likely started.
    """

    breached: bool
    statistic: float
    boundary: float
    alpha: float
    seconds: int
    since: int | None
    span_failures: int
    span_trials: int

    @property
    def span_rate(self) -> float | None:
        return self.span_failures / self.span_trials if self.span_trials else None


class RateMonitor:
    """The sequential test of one rate criterion on one shard: breach when the true rate is
    above ``threshold``, with false-alarm probability at most ``alpha`` over the whole stage.

    Feed it one second at a time with :meth:`update` (failures, requests of that second)."""

    def __init__(
        self,
        threshold: float,
        alpha: float,
        horizon: int,
        *,
        odds_ratios: Sequence[float] = ODDS_RATIOS,
        tail: float = TAIL,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"a sequential rate test needs 0 < threshold < 1, got {threshold}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if not odds_ratios or min(odds_ratios) <= 1.0:
            raise ValueError("the alternatives' odds ratios must be above 1")
        self.threshold = threshold
        self.alpha = alpha
        self.horizon = max(1, int(horizon))
        self.tail = tail
        self.boundary = math.log(1.0 / alpha)
        p0 = threshold
        self.alternatives = [alternative(p0, r) for r in odds_ratios]
        # per alternative: ln LR of one failure and of one success
        self._lf = [math.log(p1 / p0) for p1 in self.alternatives]
        self._ls = [math.log((1.0 - p1) / (1.0 - p0)) for p1 in self.alternatives]
        self._log_pi = math.log(1.0 / len(self.alternatives))
        k = len(self.alternatives)
        self._log_r = [NEG_INF] * k  # ln sum_{s<=t} w_s M_s,t, per alternative
        self._best = [NEG_INF] * k  # ln max_{s<=t} w_s M_s,t, per alternative
        self._since = [0] * k
        self._span = [[0, 0] for _ in range(k)]  # failures, requests since _since
        self.seconds = 0
        self.statistic = NEG_INF
        self.breached = False

    def update(self, failures: int, trials: int) -> Evidence:
        """One more second: ``failures`` of ``trials`` requests failed."""
        self.push(failures, trials)
        return self.evidence()

    def push(self, failures: int, trials: int) -> bool:
        """:meth:`update` without building the evidence; returns whether it is breached."""
        if failures < 0 or trials < failures:
            raise ValueError(f"bad counts: {failures} failures of {trials}")
        self.seconds += 1
        lw = log_weight(self.seconds, self.horizon, self.tail)
        successes = trials - failures
        log_r, best, span = self._log_r, self._best, self._span
        exp, log1p = math.exp, math.log1p
        for j, (lf, ls) in enumerate(zip(self._lf, self._ls, strict=True)):
            step = failures * lf + successes * ls
            a = log_r[j]
            # ln(e^a + e^lw), then the second's likelihood ratio
            a = lw + log1p(exp(a - lw)) if a <= lw else a + log1p(exp(lw - a))
            log_r[j] = a + step
            if lw > best[j]:
                best[j] = lw
                self._since[j] = self.seconds
                span[j] = [0, 0]
            best[j] += step
            span[j][0] += failures
            span[j][1] += trials
        top = max(log_r)
        total = top + math.log(sum(exp(x - top) for x in log_r)) + self._log_pi
        self.statistic = total
        if total >= self.boundary:
            self.breached = True
        return self.breached

    def evidence(self) -> Evidence:
        if self.seconds == 0:
            return Evidence(False, NEG_INF, self.boundary, self.alpha, 0, None, 0, 0)
        j = max(range(len(self.alternatives)), key=lambda i: self._best[i])
        failures, trials = self._span[j]
        return Evidence(
            breached=self.statistic >= self.boundary,
            statistic=self.statistic,
            boundary=self.boundary,
            alpha=self.alpha,
            seconds=self.seconds,
            since=self._since[j],
            span_failures=failures,
            span_trials=trials,
        )


def drift(p: float, p0: float, p1: float) -> tuple[float, float]:
    """(mean, variance) per request of the log-likelihood ratio of ``p1`` vs ``p0`` when the
    true rate is ``p``."""
    lf, ls = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    mean = p * lf + (1 - p) * ls
    return mean, p * (1 - p) * (lf - ls) ** 2


def detection_bound(
    p: float,
    threshold: float,
    alpha: float,
    horizon: int,
    *,
    beta: float = 0.01,
    odds_ratios: Sequence[float] = ODDS_RATIOS,
    tail: float = TAIL,
) -> float:
    """Requests after a fault's start (counted from the next second boundary) after which the
    test has breached with probability about ``1 - beta`` (normal approximation of the best
    single alternative's log-likelihood ratio from that boundary; the rest of the mixture
    only adds evidence). ``inf`` if ``p`` is too close to the threshold for any alternative."""
    z = _normal_quantile(1 - beta)
    best = math.inf
    for r in odds_ratios:
        p1 = alternative(threshold, r)
        mean, var = drift(p, threshold, p1)
        if mean <= 0:
            continue
        h = math.log(1 / alpha) + math.log(len(odds_ratios)) - log_weight(horizon, horizon, tail)
        # smallest n with n * mean - z * sqrt(n * var) >= h
        root = (z * math.sqrt(var) + math.sqrt(z * z * var + 4 * mean * h)) / (2 * mean)
        best = min(best, root * root)
    return best


def _normal_quantile(q: float) -> float:
    """The standard normal's ``q`` quantile (bisection on erf; q in (0, 1))."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
