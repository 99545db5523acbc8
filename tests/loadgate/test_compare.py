"""Comparing a stage with its baseline from per-second windows: statistical behaviour at stated
sample sizes and seeds, plus the digest's plumbing.

The windows are real window records (the engine's ``Recorder`` → ``window_record``, HDR
histograms encoded as the engine encodes them): four request names, 40 s per side, 40 requests
per name per second (1,600 per name, 6,400 in all), latencies log-normal (median 100 ms,
σ = 0.3), 0.5% failed. Repeated-run tests use B = 400 resamples to stay fast.
"""

from __future__ import annotations

import json
import math
import random

import orjson
import pytest

from loadgate.engine.merge import digest_paths
from loadgate.engine.results import FORMAT, META, ResultsWriter
from loadgate.engine.window import Recorder, window_record
from loadgate.verdict.compare import (
    CompareSettings,
    Comparison,
    Metric,
    Outcome,
    SecondsDigest,
    between_runs,
    compare,
    figures,
    t_quantile,
)

NAMES = [("GET", "/a"), ("POST", "/b"), ("GET", "/c"), ("PUT", "/d")]
MU, SIGMA = -2.3, 0.3  # median 100 ms
Q97 = 0.1003 * 1.7566  # exp(MU + 1.8808 * SIGMA): values above it are the top 3%
FAST = CompareSettings(resamples=400)


def side(
    rng: random.Random,
    *,
    seconds: int = 40,
    rps: int = 40,
    slower: dict[str, float] | None = None,
    errors: dict[str, float] | None = None,
    tail: dict[str, float] | None = None,
    t0: int = 1_000,
    mu: float = MU,
) -> list[dict]:
    """One run's window records (one record a second, as one shard writes them)."""
    records = []
    lognorm, uniform = rng.lognormvariate, rng.random
    for t in range(t0, t0 + seconds):
        rec = Recorder(t)
        for method, name in NAMES:
            factor = (slower or {}).get(name, 1.0)
            error = (errors or {}).get(name, 0.005)
            stretch = (tail or {}).get(name)
            for _ in range(rps):
                x = lognorm(mu, SIGMA) * factor
                if stretch and x > Q97:
                    x *= stretch
                bad = uniform() < error
                rec.http("s", method, name, 503 if bad else 200, x, bad)
        records.append(window_record(rec.roll(t + 1), at=float(t - t0 + 1), gen={}, sys={}))
    return records


def by_key(results: list[Comparison]) -> dict[tuple[str, Metric], Comparison]:
    return {(r.scope, r.metric): r for r in results}


@pytest.mark.slow
def test_same_release_is_no_regression_in_at_least_95_percent_of_40_runs() -> None:
    """Identical distributions, 40 repetitions (seeds 100..139): a run with any regression
    among its 25 comparisons is a false alarm; measured 0 of 40, bound 2 of 40 (5%)."""
    false_alarms = 0
    p95_no_regression = 0
    for seed in range(100, 140):
        rng = random.Random(seed)
        results = compare(side(rng), side(rng, t0=5_000), FAST.model_copy(update={"seed": seed}))
        assert len(results) == 25
        false_alarms += any(r.outcome is Outcome.REGRESSION for r in results)
        p95_no_regression += by_key(results)[("all", Metric.P95)].outcome is Outcome.NO_REGRESSION
    print(f"false alarms {false_alarms}/40, overall p95 no_regression {p95_no_regression}/40")
    assert false_alarms <= 2
    assert p95_no_regression >= 38


@pytest.mark.slow
def test_real_regressions_found_and_small_changes_not() -> None:
    """20 repetitions (seeds 200..219) of one current release against a healthy baseline:
    /a +40% latency, /b +10%, /c values above the baseline's p97 doubled (p99 ×2, p50 and p95
    unchanged), and every name +2 percentage points of errors (0.5% → 2.5%; 6,400 requests a
    side). Measured: a_p95 19/20, c_p99 20/20, c_tail 20/20, errors 20/20; bound 16/20 (80%)
    for detections and 0/20 for wrong regressions."""
    hits = {"a_p95": 0, "c_p99": 0, "c_tail": 0, "errors": 0}
    for seed in range(200, 220):
        rng = random.Random(seed)
        base = side(rng, t0=5_000)
        current = side(
            rng,
            slower={"/a": 1.4, "/b": 1.1},
            tail={"/c": 2.0},
            errors=dict.fromkeys(("/a", "/b", "/c", "/d"), 0.025),
        )
        got = by_key(compare(current, base, FAST.model_copy(update={"seed": seed})))
        hits["a_p95"] += got[("GET /a", Metric.P95)].outcome is Outcome.REGRESSION
        hits["c_p99"] += got[("GET /c", Metric.P99)].outcome is Outcome.REGRESSION
        hits["c_tail"] += got[("GET /c", Metric.TAIL_RATIO)].outcome is Outcome.REGRESSION
        hits["errors"] += got[("all", Metric.ERROR_RATE)].outcome is Outcome.REGRESSION
        for metric in (Metric.P50, Metric.P95, Metric.P99):
            assert got[("POST /b", metric)].outcome is not Outcome.REGRESSION  # +10%
            assert got[("PUT /d", metric)].outcome is not Outcome.REGRESSION
        for name in ("GET /c", "PUT /d", "POST /b"):
            assert got[(name, Metric.TAIL_RATIO)].outcome is not Outcome.REGRESSION or (
                name == "GET /c"
            )
        assert got[("GET /c", Metric.P50)].outcome is not Outcome.REGRESSION
        assert got[("GET /c", Metric.P95)].outcome is not Outcome.REGRESSION
    print("detections of 20:", hits)
    assert all(n >= 16 for n in hits.values()), hits


def test_evidence_description_and_json() -> None:
    rng = random.Random(7)
    base, current = side(rng, t0=5_000), side(rng, slower={"/a": 1.4}, errors={"/d": 0.025})
    got = by_key(compare(current, base, baseline_label="v41"))  # the defaults: B = 1,000
    a95 = got[("GET /a", Metric.P95)]
    assert a95.outcome is Outcome.REGRESSION and a95.resamples == 1000
    assert a95.ci_low < a95.change < a95.ci_high and a95.ci_low > 0.3
    assert (
        a95.current_value / a95.baseline_value - 1 == a95.change
        or abs(a95.current_value / a95.baseline_value - 1 - a95.change) < 1e-5
    )
    assert (a95.baseline_samples, a95.current_samples) == (1600, 1600)
    assert (a95.baseline_seconds, a95.current_seconds) == (40, 40)
    text = a95.describe()
    assert text.startswith("GET /a p95 +") and "(95% CI +" in text and text.endswith("vs v41")
    err = got[("PUT /d", Metric.ERROR_RATE)]
    assert err.change_kind == "absolute" and err.threshold == 0.01
    assert " pp (95% CI " in err.describe() and err.outcome is Outcome.REGRESSION
    assert got[("all", Metric.P95)].describe().startswith("p95 ")
    data = json.loads(a95.model_dump_json())
    assert data["outcome"] == "regression" and data["metric"] == "p95"
    assert Comparison.model_validate(data) == a95


def test_tiny_samples_are_insufficient() -> None:
    rng = random.Random(3)
    results = compare(side(rng, seconds=5, rps=5), side(rng, seconds=5, rps=5, t0=5_000))
    assert results and all(r.outcome is Outcome.INSUFFICIENT for r in results)
    assert all(r.ci_low is None and r.change is None for r in results)
    assert "too few samples (25 in 5 s" in by_key(results)[("GET /a", Metric.P95)].describe()
    # enough requests but too few seconds
    few = compare(side(rng, seconds=5, rps=100), side(rng, seconds=5, rps=100, t0=5_000))
    assert all(r.outcome is Outcome.INSUFFICIENT for r in few)


def test_seeded_digests_from_files_and_storage_give_the_same_intervals(tmp_path) -> None:
    rng = random.Random(11)
    base, current = side(rng, t0=5_000), side(rng, slower={"/a": 1.4})
    folder = tmp_path / "stage"
    for i, half in enumerate((current[0::2], current[1::2])):  # two shards of one stage
        writer = ResultsWriter(folder / f"shard-{i}")
        writer.write_meta({"format": FORMAT, "stage": "api", "shard": {"index": i, "count": 2}})
        for rec in half:
            writer.append_window(rec)
        writer.close()
    assert (folder / "shard-0" / META).is_file()
    from_files = digest_paths([folder], 2)
    stored = SecondsDigest.from_dict(orjson.loads(orjson.dumps(from_files.to_dict())))
    one = compare(current, base, FAST)
    two = compare(from_files, SecondsDigest.from_records(base), FAST)
    three = compare(stored, base, FAST)
    assert [r.model_dump() for r in one] == [r.model_dump() for r in two]
    assert [r.model_dump() for r in one] == [r.model_dump() for r in three]
    other_seed = compare(current, base, FAST.model_copy(update={"seed": 1}))
    assert [r.ci_low for r in other_seed] != [r.ci_low for r in one]


def test_a_percentile_needs_samples_beyond_it() -> None:
    """p95 read from a few hundred samples rests on a handful beyond it: no interval is put on
    it (a healthy release once read p95 +693% against such a baseline)."""
    settings = CompareSettings()
    assert settings.minimum_for(Metric.ERROR_RATE) == 100
    assert settings.minimum_for(Metric.P50) == 100
    assert settings.minimum_for(Metric.P95) == 300
    assert settings.minimum_for(Metric.P99) == 1500
    assert settings.minimum_for(Metric.TAIL_RATIO) == 1500
    assert CompareSettings(beyond=5).minimum_for(Metric.P95) == 100


def _runs_with_spread(rng: random.Random, count: int, spread: float, **kw) -> list[list[dict]]:
    """``count`` healthy runs (20 s × 40 requests/s × 4 names each) whose
    latencies all move together by a run-level factor exp(spread · Z): the machine, not the
    release."""
    out = []
    for i in range(count):
        factor = math.exp(spread * rng.gauss(0, 1)) * kw.get("last_factor", 1.0) ** (i == count - 1)
        slower = {name: factor for _, name in NAMES}
        out.append(side(rng, seconds=20, rps=40, slower=slower, t0=1_000 + 100 * i))
    return out


P95_ONLY = CompareSettings(resamples=400, metrics=(Metric.P95,), by_name=False)


def _p95_against_previous(runs: list[list[dict]], seed: int) -> tuple[Comparison, Comparison]:
    """The last run against the one before it: the bare comparison, and the same widened by
    the spread of the runs before the last (newest first, as the history gives them)."""
    earlier = [figures(SecondsDigest.from_records(r))["http all"]["p95"] for r in runs[:-1]]
    bare = compare(runs[-1], runs[-2], P95_ONLY.model_copy(update={"seed": seed}))[0]
    return bare, between_runs(bare, earlier[::-1], P95_ONLY)


@pytest.mark.slow
def test_spread_between_runs_keeps_false_alarms_rare() -> None:
    """Healthy runs whose latencies move together by a run-level factor (σ 0.2 on the log
    scale, as a shared machine does): 40 trials (seeds 300..339) of 7 runs, the last compared
    with the one before it, the 6 before it estimating the spread. The bare interval (this
    pair's noise only) reads p95 regressions in about one trial in eight (measured 5/40); widened,
    the false-alarm rate is bounded by 2/40 (5%; measured 0)."""
    bare_alarms = widened_alarms = 0
    for seed in range(300, 340):
        bare, wide = _p95_against_previous(_runs_with_spread(random.Random(seed), 7, 0.2), seed)
        assert wide.between_runs == 6 and wide.between_sd is not None
        assert wide.ci_low <= bare.ci_low and wide.ci_high >= bare.ci_high
        bare_alarms += bare.outcome is Outcome.REGRESSION
        widened_alarms += wide.outcome is Outcome.REGRESSION
    print(f"false alarms of 40: bare {bare_alarms}, widened {widened_alarms}")
    assert bare_alarms >= 3  # the spread is real: the bare interval does not see it
    assert widened_alarms <= 2


@pytest.mark.slow
def test_spread_between_runs_still_finds_a_real_regression_when_runs_agree() -> None:
    """Runs that agree (σ 0.03) and a last run 80% slower: found in at least 18 of 20 trials
    (seeds 400..419; measured 20/20); the widening is small when runs agree."""
    found = 0
    for seed in range(400, 420):
        runs = _runs_with_spread(random.Random(seed), 7, 0.03, last_factor=1.8)
        _, wide = _p95_against_previous(runs, seed)
        found += wide.outcome is Outcome.REGRESSION
    print(f"found {found}/20")
    assert found >= 18


def test_spread_needs_enough_earlier_runs_and_is_described() -> None:
    rng = random.Random(5)
    runs = _runs_with_spread(rng, 3, 0.5)
    bare = compare(runs[-1], runs[-2], P95_ONLY)[0]
    assert between_runs(bare, [10.0, 30.0, 5.0]) == bare  # 3 runs < min_runs (4)
    wide = between_runs(bare, [5.0, 30.0, 8.0, 20.0])
    assert wide.between_runs == 4 and wide.widened
    assert wide.outcome is Outcome.INCONCLUSIVE  # ±300% at least: nothing is decided
    assert "widened by the spread of 4 runs" in wide.describe()
    # an error rate spreads absolutely: 1.0 pp of spread over runs widens by pp
    err = compare(runs[-1], runs[-2], P95_ONLY.model_copy(update={"metrics": (Metric.ERROR_RATE,)}))
    widened = between_runs(err[0], [0.0, 0.02, 0.0, 0.02])
    assert widened.ci_high - widened.change > 0.02 and widened.widened
    # Student's t against the table (df 3, 4, 6, 9 at 97.5%)
    for df, exact in ((3, 3.182), (4, 2.776), (6, 2.447), (9, 2.262)):
        assert abs(t_quantile(0.975, df) - exact) < 0.01 * exact


def test_a_few_milliseconds_are_no_regression_whatever_the_ratio() -> None:
    """A service answering in ~1.5 ms, then ~3.5 ms slower (its machine busy with other work):
    +230% with an interval far above +30%, yet under the 5 ms a regression needs; 8 ms slower
    on a 20 ms service (+40%) still is one."""
    rng = random.Random(21)
    fast, all_names = math.log(0.0015), dict.fromkeys(("/a", "/b", "/c", "/d"), 3.3)
    base = side(rng, t0=5_000, mu=fast)
    got = by_key(compare(side(rng, slower=all_names, mu=fast), base, FAST))
    p50 = got[("all", Metric.P50)]
    assert p50.change > 1.5 and p50.ci_low > 0.3  # the ratio alone would be a regression
    assert p50.outcome is Outcome.NO_REGRESSION and not p50.material
    assert "under the 5 ms a regression needs" in (p50.note or "")
    base = side(rng, t0=5_000, mu=math.log(0.020))
    slower = side(rng, slower={"/a": 1.4}, mu=math.log(0.020))
    a50 = by_key(compare(slower, base, FAST))[("GET /a", Metric.P50)]
    assert a50.material and a50.outcome is Outcome.REGRESSION


def test_what_matters_follows_the_plans_latency_limit() -> None:
    """5% of the stage's latency limit (the shipped plan's p95 < 500 ms: 25 ms), never under
    5 ms; WebSocket round trips by their own limit."""
    from loadgate.config.run import resolve_plan_path
    from loadgate.plan import load_plan
    from loadgate.run.baseline import _settings

    plan = load_plan(resolve_plan_path("harmonyflow-10k"))
    for stage, http_ms in (("api", 25.0), ("session", 25.0), ("websocket", 5.0)):
        criteria = plan.criteria_for(stage)
        settings = _settings([c for c in criteria if c.relative_to], criteria)
        assert settings.min_change_ms == http_ms, stage
        assert settings.min_change_ms_ws == 5.0 and settings.latency_threshold == 0.3
    assert _settings([], []).min_change_ms == 5.0  # no limit in the plan: the floor
    # an 18 ms change is within a 25 ms floor: no regression; with the default floor it is
    rng = random.Random(5)
    base = side(rng, t0=5_000, mu=math.log(0.010))
    slower = side(rng, slower=dict.fromkeys(("/a", "/b", "/c", "/d"), 2.8), mu=math.log(0.010))
    strict = by_key(compare(slower, base, FAST))[("all", Metric.P50)]
    lenient = by_key(compare(slower, base, FAST.model_copy(update={"min_change_ms": 25.0})))
    assert strict.outcome is Outcome.REGRESSION
    assert lenient[("all", Metric.P50)].outcome is Outcome.NO_REGRESSION
