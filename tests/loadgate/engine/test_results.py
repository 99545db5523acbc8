"""Results are written incrementally and read back whatever happened to the writer."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from loadgate.engine.merge import load_merged
from loadgate.engine.results import FORMAT, ResultsError, ResultsWriter, read_shard
from loadgate.engine.window import Recorder, window_record


def _meta(stage: str = "api", index: int = 0, count: int = 1, ended: bool = True) -> dict:
    return {
        "format": FORMAT,
        "stage": stage,
        "plan": {"name": "t"},
        "shard": {"index": index, "count": count},
        "started_at": 1000.0,
        "ended_at": 1003.0 if ended else None,
        "status": "completed" if ended else "running",
        "aborted": None,
        "generator": {"limits": {"loop_lag_ms": 200, "cpu": 0.9, "max_fraction": 0.05}},
    }


def _record(t: int, n: int) -> dict:
    rec = Recorder(t)
    for i in range(n):
        rec.http("s", "GET", "/x", 200, 0.001 * (i + 1), False)
    rec.vu_started("s")
    return window_record(rec.roll(t + 1), at=float(t - 999), gen={"cpu": 0.1}, sys={})


def test_truncated_last_line_is_skipped(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path)
    writer.write_meta(_meta(ended=False))
    for t in range(1000, 1003):
        writer.append_window(_record(t, 5))
    writer.close()
    with open(tmp_path / "windows.jsonl", "ab") as fh:
        fh.write(orjson.dumps(_record(1003, 5))[:40])  # a killed writer's half line
    shard = read_shard(tmp_path)
    assert len(shard.windows) == 3 and shard.truncated_lines == 1 and not shard.finished
    merged = load_merged([tmp_path])
    assert merged.aggregate.http_figures().requests == 15
    assert merged.status == "incomplete" and merged.incomplete == [str(tmp_path.resolve())]


def test_meta_is_required_and_checked(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"no meta\.json"):
        load_merged([tmp_path])
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        load_merged([tmp_path])
    (tmp_path / "meta.json").write_text('{"format": "other"}')
    with pytest.raises(ResultsError, match="loadgate-results"):
        load_merged([tmp_path])


def test_mixed_stages_are_refused(tmp_path: Path) -> None:
    for stage in ("api", "session"):
        w = ResultsWriter(tmp_path / stage)
        w.write_meta(_meta(stage))
        w.close()
    with pytest.raises(ResultsError, match="different stages"):
        load_merged([tmp_path / "api", tmp_path / "session"])


def test_a_stage_directory_holds_its_shards(tmp_path: Path) -> None:
    for i in range(3):
        w = ResultsWriter(tmp_path / f"shard-{i}")
        w.write_meta(_meta(index=i, count=3))
        w.append_window(_record(1000, 2))
        w.close()
    merged = load_merged([tmp_path])
    assert len(merged.shards) == 3 and merged.aggregate.http_figures().requests == 6
    assert merged.aggregate.vus_max() == 3  # one VU per shard in the same second
