"""The per-second digest folded in the merge's pass over the windows is the digest read from the
windows alone, and folding it changes nothing in the merge.

Three shards of one stage, 30 s: HTTP in two scenarios (two request names, 2xx/4xx/5xx and
connection errors without a latency), WebSocket connections, messages and two latency names in
one scenario; each shard misses some seconds, and one ends with a truncated line (a killed
writer).
"""

from __future__ import annotations

import random
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadgate.engine.histogram import Accumulator, new_histogram
from loadgate.engine.merge import digest_paths, load_merged, stage_digest
from loadgate.engine.results import FORMAT, WINDOWS, ResultsWriter
from loadgate.engine.seconds import ALL, HTTP, STEP, WS, fold, sum_folded
from loadgate.engine.window import Recorder, window_record
from loadgate.runner.summary import summarize
from loadgate.verdict.compare import SecondsDigest

T0, SECONDS, SHARDS = 1_000, 30, 3


def _window(rng: random.Random, t: int) -> dict[str, Any]:
    rec = Recorder(t)
    for scenario, method, name in (
        ("api", "GET", "/a"),
        ("api", "POST", "/b"),
        ("b2", "GET", "/a"),
    ):
        for _ in range(rng.randint(0, 40)):
            roll = rng.random()
            if roll < 0.03:
                rec.http(scenario, method, name, 0, None, True, "connect")
                continue
            status = 503 if roll < 0.08 else (404 if roll < 0.12 else 200)
            rec.http(scenario, method, name, status, rng.lognormvariate(-3, 0.7), status >= 500)
    if rng.random() < 0.8:
        for _ in range(rng.randint(1, 4)):
            rec.ws_connected("ws", rng.uniform(0.001, 0.02))
        for _ in range(rng.randint(0, 30)):
            rec.ws_message_out("ws")
            rec.ws_latency("ws", rng.choice(["echo", "push"]), rng.lognormvariate(-4, 0.5))
        if rng.random() < 0.3:
            rec.ws_connect_failed("ws")
            rec.ws_closed("ws", unexpected=True)
    rec.vu_started("api")
    return window_record(rec.roll(t + 1), at=float(t - T0 + 1), gen={"cpu": 0.3}, sys={})


def _stage(root: Path) -> list[dict[str, Any]]:
    """Writes the shards; returns every record read back (the truncated one excluded)."""
    rng = random.Random(5)
    records = []
    for i in range(SHARDS):
        writer = ResultsWriter(root / f"shard-{i}")
        writer.write_meta(
            {
                "format": FORMAT,
                "stage": "api",
                "plan": {"name": "t"},
                "shard": {"index": i, "count": SHARDS},
                "started_at": float(T0),
                "ended_at": float(T0 + SECONDS),
                "status": "completed",
                "aborted": None,
                "generator": {"limits": {"loop_lag_ms": 200, "cpu": 0.9}},
            }
        )
        for t in range(T0, T0 + SECONDS):
            if rng.random() < 0.15:  # a second this shard has no window for
                continue
            rec = _window(rng, t)
            writer.append_window(rec)
            records.append(orjson.loads(orjson.dumps(rec)))
        writer.close()
    with open(root / "shard-1" / WINDOWS, "ab") as fh:
        fh.write(orjson.dumps(_window(rng, T0 + SECONDS))[:50])
    return records


def _canonical(digest: SecondsDigest) -> dict[str, Any]:
    data = digest.to_dict()
    data["scopes"] = sorted(data["scopes"], key=lambda s: (s["source"], s["scope"]))
    return data


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("stage")
    return root, _stage(root)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # a pool: 2 s
def test_digest_folded_in_the_merge_equals_the_digest_from_the_windows(
    stage: tuple[Path, list[dict[str, Any]]], workers: int
) -> None:
    root, records = stage
    merged = load_merged([root], workers=workers, digest=True)
    assert merged.digest is not None and merged.truncated_lines == 1
    folded = _canonical(merged.digest)
    assert folded == _canonical(digest_paths([root], 1))
    assert folded == _canonical(digest_paths([root], 2))
    assert folded == _canonical(SecondsDigest.from_records(records))
    scopes = {(s["source"], s["scope"]) for s in folded["scopes"]}
    assert scopes == {
        (HTTP, ALL),
        (HTTP, "GET /a"),
        (HTTP, "POST /b"),
        (WS, ALL),
        (WS, "echo"),
        (WS, "push"),
    }
    assert folded["seconds"] == list(range(T0, T0 + SECONDS))
    assert stage_digest(merged) is merged.digest
    assert load_merged([root], workers=workers).digest is None


def _reference_fold(acc: Accumulator) -> tuple[int, list[int]]:
    """HdrHistogram's own counts accumulated in Python, read at each coarse bin's end from the
    first bin with a sample to the last."""
    counts = list(acc.to_histogram().counts)
    nonzero = [j for j, c in enumerate(counts) if c]
    first, last = nonzero[0] // STEP, nonzero[-1] // STEP
    running = list(accumulate(counts))
    return first, [running[(k + 1) * STEP - 1] for k in range(first, last + 1)]


def _second_of(records: list[dict[str, Any]], t: int, method: str, name: str) -> Accumulator:
    acc = Accumulator()
    for rec in records:
        if rec["t"] == t:
            for _s, m, n, _cls, _count, _failed, hdr in rec["http"]:
                if (m, n) == (method, name):
                    acc.add_encoded(hdr)
    return acc


def test_digest_holds_each_seconds_counts_and_cumulative_latency(
    stage: tuple[Path, list[dict[str, Any]]],
) -> None:
    """Checked against the records directly: a second's requests, failures, and the samples at
    or below each coarse bin's end (HdrHistogram's own counts, accumulated in Python)."""
    root, records = stage
    digest = load_merged([root], workers=1, digest=True).digest
    assert digest is not None
    series = digest.scopes[(HTTP, "GET /a")]
    for i, t in enumerate(digest.seconds):
        entries = [
            e for r in records if r["t"] == t for e in r["http"] if (e[1], e[2]) == ("GET", "/a")
        ]
        assert series.n[i] == sum(e[4] for e in entries)
        assert series.failed[i] == sum(e[5] for e in entries)
        first, expected = _reference_fold(_second_of(records, t, "GET", "/a"))
        assert series.k0[i] == first and list(series.cum[i]) == expected
    everything = digest.scopes[(HTTP, ALL)]
    assert everything.pooled.total == sum(
        s.pooled.total for (src, scope), s in digest.scopes.items() if src == HTTP and scope != ALL
    )
    assert sum(everything.n) == sum(e[4] for r in records for e in r["http"])


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # a pool: 2 s
def test_folding_the_digest_changes_nothing_in_the_merge(
    stage: tuple[Path, list[dict[str, Any]]], workers: int
) -> None:
    root, _ = stage
    plain = load_merged([root], workers=workers)
    folded = load_merged([root], workers=workers, digest=True)
    assert summarize(plain) == summarize(folded)
    a, b = plain.aggregate, folded.aggregate
    assert list(a.http) == list(b.http)
    for key, agg in a.http.items():
        other = b.http[key]
        assert (agg.count, agg.failed) == (other.count, other.failed), key
        assert (agg.acc is None) == (other.acc is None), key
        if agg.acc is not None and other.acc is not None:
            assert agg.acc.encode() == other.acc.encode(), key
    assert a.ws_figures().latency.encode() == b.ws_figures().latency.encode()
    assert a.ws_figures().counts == b.ws_figures().counts and a.windows == b.windows


def _acc(rng: random.Random, n: int, sigma: float) -> Accumulator:
    hist = new_histogram()
    for _ in range(n):
        hist.record_value(min(max(int(rng.lognormvariate(11, sigma)), 1), 120_000_000))
    acc = Accumulator()
    acc.add_histogram(hist)
    return acc


def test_fold_is_the_cumulative_count_at_each_coarse_bins_end() -> None:
    rng = random.Random(3)
    for trial in range(40):
        acc = _acc(rng, rng.randint(1, 2_000), rng.uniform(0.01, 3.0))
        if trial % 10 == 0:  # both ends of the range
            acc.add_histogram(_one(1))
            acc.add_histogram(_one(120_000_000))
        k0, cum = fold(acc)
        assert (k0, list(cum)) == _reference_fold(acc)
    assert list(fold(Accumulator())[1]) == []


def _one(value: int) -> Any:
    hist = new_histogram()
    hist.record_value(value)
    return hist


def test_folds_add_up_to_the_fold_of_the_sum() -> None:
    rng = random.Random(4)
    for _ in range(20):
        parts = [_acc(rng, rng.randint(1, 500), rng.uniform(0.05, 2.0)) for _ in range(3)]
        whole = Accumulator()
        for part in parts:
            whole.add(part)
        k0, cum = fold(whole)
        got_k0, got = sum_folded([fold(part) for part in parts])
        assert (got_k0, list(got)) == (k0, list(cum))
