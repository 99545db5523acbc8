"""Merging shards equals one process: counts exact, percentiles from the summed histograms."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from loadgate.engine.histogram import new_histogram, record_seconds
from loadgate.engine.merge import load_merged
from loadgate.engine.results import FORMAT, ResultsWriter
from loadgate.engine.window import Recorder, window_record
from loadgate.runner.summary import render_text, summarize

NAMES = [("GET", "/a"), ("POST", "/b/{id}")]


def _events(seed: int, seconds: int = 20):
    rng = random.Random(seed)
    out = []
    for t in range(1000, 1000 + seconds):
        for _ in range(rng.randint(20, 60)):
            method, name = rng.choice(NAMES)
            status = rng.choice([200] * 30 + [404, 503])
            out.append((t, method, name, status, rng.lognormvariate(-4, 0.8)))
        if rng.random() < 0.2:
            out.append((t, "GET", "/a", 0, None))  # a connect error
    return out


def _write(dir_: Path, events, index: int, count: int) -> None:
    writer = ResultsWriter(dir_)
    writer.write_meta(
        {
            "format": FORMAT,
            "stage": "api",
            "plan": {"name": "t"},
            "shard": {"index": index, "count": count},
            "started_at": 1000.0,
            "ended_at": 1020.0,
            "status": "completed",
            "aborted": None,
            "generator": {"limits": {"loop_lag_ms": 200, "cpu": 0.9, "max_fraction": 0.05}},
        }
    )
    by_t: dict[int, list] = {}
    for ev in events:
        by_t.setdefault(ev[0], []).append(ev)
    for t in sorted(by_t):
        rec = Recorder(t)
        for _, method, name, status, dur in by_t[t]:
            if status == 0:
                rec.http("s", method, name, 0, None, True, "connect")
            else:
                rec.http("s", method, name, status, dur, status >= 400)
        writer.append_window(window_record(rec.roll(t + 1), at=t - 999.0, gen={}, sys={}))
    writer.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_shards_merged_equal_one_process(tmp_path: Path, workers: int) -> None:
    events = _events(7)
    _write(tmp_path / "single", events, 0, 1)
    rng = random.Random(1)
    split: list[list] = [[], [], []]
    for ev in events:
        split[rng.randrange(3)].append(ev)
    for i, part in enumerate(split):
        _write(tmp_path / "sharded" / f"shard-{i}", part, i, 3)
    one = summarize(load_merged([tmp_path / "single"]))
    many = summarize(load_merged([tmp_path / "sharded"], workers=workers))
    for key in ("requests", "failed", "error_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
        assert one[key] == many[key], key
    assert one["by_name"] == many["by_name"]
    assert one["errors"] == many["errors"] and one["errors"]["connect"] > 0
    # and the percentiles are those of one HDR histogram of every value
    ref = new_histogram()
    for ev in events:
        if ev[4] is not None:
            record_seconds(ref, ev[4])
    assert many["p95_ms"] == ref.get_value_at_percentile(95) / 1000
    assert many["requests"] == len(events)


def test_summary_fields_and_text(tmp_path: Path) -> None:
    _write(tmp_path / "s", _events(2, seconds=5), 0, 1)
    summary = summarize(load_merged([tmp_path / "s"]))
    for key in (
        "requests", "failed", "error_rate", "p50_ms", "p95_ms", "p99_ms", "max_vus", "aborted",
        "by_name", "ws", "generator_saturated",
    ):  # fmt: skip
        assert key in summary
    assert set(summary["by_name"]) == {"GET /a", "POST /b/{id}"}
    text = render_text(summary)
    assert "http_reqs" in text and "{ GET /a }" in text
