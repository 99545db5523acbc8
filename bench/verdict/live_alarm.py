"""Live rollback criteria by simulation: false alarms and detection delay of the engine's live
rate test (loadgate.verdict.sequential), next to today's point estimate and a sliding-window exact
(Clopper-Pearson) bound with alpha spent over the stage's looks.

    .venv/bin/python bench/verdict/live_alarm.py            # the tables of live_alarm.md
    .venv/bin/python bench/verdict/live_alarm.py --quick    # fewer runs, a few seconds

Model: each shard sees its requests in one-second batches (the engine's windows), each request
failing independently with the stated rate. The criterion is the API stage's
``error-rate-rollback`` (``> 5%``, window 30 s, ``min_samples`` 100); the stage's alpha (0.01)
is split over 5 shards and the stage's 2 live rate criteria, as the engine splits it.

1. False alarms: ``--stages`` stages of ``--seconds`` seconds, 5 shards each, 20-80 requests a
   second per shard, at 2% (the issue's case) and at exactly 5% (the null's worst case): the
   fraction of stages that any shard aborts, with a 95% upper bound.
2. Detection: 60 s at 2%, then a 10% or 20% fault from a random moment of a second; for each
   request rate per shard, the seconds from the fault's start to the first shard's abort and
   to every shard stopped (each on its own test, or on the abort marker: ``--marker-s`` after
   the first abort), median and 95th percentile, and the fraction of runs with every shard
   stopped within 3 s. Requests are counted too: the information is in requests, not seconds.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import time
from collections import deque
from functools import cache

from loadgate.verdict.sequential import RateMonitor, detection_bound, split_alpha

THRESHOLD = 0.05
WINDOW_S = 30
MIN_SAMPLES = 100
SHARDS = 5
CRITERIA = 2
STAGE_ALPHA = 0.01
HORIZON_S = 2700  # the API stage: 44 minutes and its graceful ramp-down


@cache
def _cdf(n: int, p: float) -> tuple[float, ...]:
    out, acc, pmf = [], 0.0, (1.0 - p) ** n
    for k in range(n + 1):
        acc += pmf
        out.append(acc)
        pmf = pmf * (n - k) / (k + 1) * p / (1.0 - p) if k < n else 0.0
    return tuple(out)


def binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 0:
        return 0
    return min(bisect.bisect_left(_cdf(n, p), rng.random()), n)


def upper_tail(n: int, p: float, k: int) -> float:
    """P(Binomial(n, p) >= k), summed in log space from k up."""
    if k <= 0:
        return 1.0
    lg = math.lgamma
    base = lg(n + 1)
    total, i = 0.0, k
    while i <= n:
        term = math.exp(
            base - lg(i + 1) - lg(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
        )
        total += term
        if term < total * 1e-12:
            break
        i += 1
    return min(1.0, total)


def clopper_pearson_upper(k: int, n: int, level: float = 0.95) -> float:
    """Exact one-sided upper bound on a binomial proportion (bisection on the tail)."""
    if k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        # P(X <= k | mid) = 1 - P(X >= k + 1 | mid)
        if 1.0 - upper_tail(n, mid, k + 1) > 1.0 - level:
            lo = mid
        else:
            hi = mid
    return hi


class PointEstimate:
    """Today's live reading: the window's rate > threshold once it holds min_samples."""

    def __init__(self) -> None:
        self.win: deque[tuple[int, int]] = deque(maxlen=WINDOW_S)
        self.f = self.n = 0

    def push(self, f: int, n: int) -> bool:
        if len(self.win) == self.win.maxlen:
            of, on = self.win[0]
            self.f -= of
            self.n -= on
        self.win.append((f, n))
        self.f += f
        self.n += n
        return self.n >= MIN_SAMPLES and self.f > THRESHOLD * self.n


class WindowBound:
    """The alternative: an exact lower confidence bound on the window's rate above the
    threshold, alpha spent evenly over the stage's looks (Bonferroni): breach when
    P(Binomial(n, threshold) >= f) <= alpha / looks."""

    def __init__(self, alpha: float, looks: int) -> None:
        self.point = PointEstimate()
        self.level = alpha / looks

    def push(self, f: int, n: int) -> bool:
        if not self.point.push(f, n):
            return False
        return upper_tail(self.point.n, THRESHOLD, self.point.f) <= self.level


def false_alarms(rate: float, stages: int, seconds: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    alpha = split_alpha(STAGE_ALPHA, SHARDS, CRITERIA)
    counts = {"sequential": 0, "point estimate": 0, "window bound": 0}
    for _ in range(stages):
        hit = dict.fromkeys(counts, False)
        for _ in range(SHARDS):
            tests = {
                "sequential": RateMonitor(THRESHOLD, alpha, seconds),
                "point estimate": PointEstimate(),
                "window bound": WindowBound(alpha, seconds),
            }
            for _ in range(seconds):
                n = rng.randint(20, 80)
                f = binomial(rng, n, rate)
                for name, test in tests.items():
                    if not hit[name] and test.push(f, n):
                        hit[name] = True
        for name in counts:
            counts[name] += int(hit[name])
    return counts


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def detection(
    rate: float, rps: int, runs: int, marker_s: float, seed: int, kind: str = "sequential"
) -> dict[str, float]:
    """Seconds (and requests per shard) from a fault's start to the first abort and to every
    shard stopped."""
    rng = random.Random(seed)
    alpha = split_alpha(STAGE_ALPHA, SHARDS, CRITERIA)
    first, every, within3, first_req = [], [], 0, []
    pre, cap = 60, 120
    for _ in range(runs):
        phase = rng.random()  # the fault starts this far into second `pre`
        own = []
        for _ in range(SHARDS):
            if kind == "sequential":
                test = RateMonitor(THRESHOLD, alpha, HORIZON_S)
            else:
                test = WindowBound(alpha, HORIZON_S)
            for _ in range(pre):
                test.push(binomial(rng, rps, 0.02), rps)
            t = math.inf
            for k in range(cap):
                if k == 0:  # the second the fault starts in
                    before = round(rps * phase)
                    f = binomial(rng, before, 0.02) + binomial(rng, rps - before, rate)
                else:
                    f = binomial(rng, rps, rate)
                if test.push(f, rps):
                    t = (k + 1) - phase  # the window closes at the end of that second
                    break
            own.append(t)
        t_first = min(own)
        t_every = max(min(t, t_first + marker_s) for t in own)
        first.append(t_first)
        first_req.append(t_first * rps)
        every.append(t_every)
        within3 += int(t_every <= 3.0)
    return {
        "first_p50": _quantile(first, 0.5),
        "first_p95": _quantile(first, 0.95),
        "every_p50": _quantile(every, 0.5),
        "every_p95": _quantile(every, 0.95),
        "req_p50": _quantile(first_req, 0.5),
        "within3": within3 / runs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=300, help="length of a simulated stage")
    ap.add_argument("--runs", type=int, default=200, help="fault runs per cell")
    ap.add_argument("--marker-s", type=float, default=1.0, help="abort marker's latency")
    ap.add_argument("--rps", default="10,30,100,200,300,560,700,1000", help="requests/s/shard")
    ap.add_argument("--quick", action="store_true", help="50 stages, 50 runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.stages, args.runs = 50, 50
    t0 = time.time()
    alpha = split_alpha(STAGE_ALPHA, SHARDS, CRITERIA)
    print(
        f"error-rate-rollback (> 5%, window {WINDOW_S} s, min_samples {MIN_SAMPLES}); stage "
        f"alpha {STAGE_ALPHA} over {SHARDS} shards x {CRITERIA} criteria = {alpha:g} each\n"
    )
    print(
        f"1. False alarms: stages aborted by any of {SHARDS} shards, {args.stages} stages of "
        f"{args.seconds} s, 20-80 requests/s/shard (95% upper bound in brackets)\n"
    )
    print(f"| true rate | {'sequential':>18} | {'point estimate':>18} | {'window bound':>18} |")
    print("|---|---:|---:|---:|")
    for rate, seed in ((0.02, 2), (THRESHOLD, 5)):
        counts = false_alarms(rate, args.stages, args.seconds, seed)
        cells = []
        for name in ("sequential", "point estimate", "window bound"):
            k = counts[name]
            up = clopper_pearson_upper(k, args.stages)
            cells.append(f"{k / args.stages:6.1%} (<{up:5.1%})")
        print(f"| {rate:.0%} | " + " | ".join(f"{c:>18}" for c in cells) + " |")
    print(f"\n(stated bound for the sequential test: {STAGE_ALPHA:.0%} per stage)\n")

    rps_list = [int(x) for x in args.rps.split(",")]
    print(
        f"2. Detection after a fault starts mid-stage (60 s at 2% before), {args.runs} runs per "
        f"cell, abort marker {args.marker_s:g} s: seconds from the fault's start to the first "
        "shard's abort and to every shard stopped (p50 / p95), requests per shard until the "
        "first abort (p50), runs with every shard stopped within 3 s\n"
    )
    head = "| fault | req/s/shard | first abort p50 / p95 | all stopped p50 / p95 | req p50 |"
    print(head + " all ≤ 3 s |")
    print("|---|---:|---:|---:|---:|---:|")
    for rate in (0.10, 0.20):
        for rps in rps_list:
            d = detection(rate, rps, args.runs, args.marker_s, seed=int(rate * 100) * 7 + rps)
            print(
                f"| {rate:.0%} | {rps} | {d['first_p50']:.1f} / {d['first_p95']:.1f} s | "
                f"{d['every_p50']:.1f} / {d['every_p95']:.1f} s | {d['req_p50']:.0f} | "
                f"{d['within3']:.0%} |"
            )
    print(
        "\n3. The alternative, a 30 s window's exact lower bound with alpha over the stage's "
        "looks, on the same faults (first abort p50 / p95)\n"
    )
    print("| fault | req/s/shard | sequential | window bound |")
    print("|---|---:|---:|---:|")
    for rate in (0.10, 0.20):
        for rps in (100, 560):
            runs = max(20, args.runs // 4)
            seq = detection(rate, rps, runs, args.marker_s, seed=rps + 1)
            win = detection(rate, rps, runs, args.marker_s, seed=rps + 1, kind="window")
            print(
                f"| {rate:.0%} | {rps} | {seq['first_p50']:.1f} / {seq['first_p95']:.1f} s | "
                f"{win['first_p50']:.1f} / {win['first_p95']:.1f} s |"
            )
    print("\n4. Requests per shard the derivation says suffice (detection_bound, 44-min horizon)\n")
    print("| fault | p50 | p99 |")
    print("|---|---:|---:|")
    for rate in (0.10, 0.20):
        b50 = detection_bound(rate, THRESHOLD, alpha, HORIZON_S, beta=0.5)
        b99 = detection_bound(rate, THRESHOLD, alpha, HORIZON_S, beta=0.01)
        print(f"| {rate:.0%} | {b50:.0f} | {b99:.0f} |")
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
