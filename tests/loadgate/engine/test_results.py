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


def test_segments_are_read_in_order_after_the_single_file(tmp_path: Path) -> None:
    """A shard folder copied from a store (``aws s3 sync``) reads as it does there."""
    writer = ResultsWriter(tmp_path)
    writer.write_meta(_meta())
    writer.append_window(_record(1000, 1))
    writer.close()
    (tmp_path / "windows").mkdir()
    for n, t in ((2, 1003), (1, 1001), (10, 1004)):
        (tmp_path / "windows" / f"{n:06d}.jsonl").write_bytes(orjson.dumps(_record(t, 2)) + b"\n")
    (tmp_path / "windows" / "000003.jsonl.tmp").write_bytes(b"junk")  # not a segment
    assert [w["t"] for w in read_shard(tmp_path).windows] == [1000, 1001, 1003, 1004]
    assert load_merged([tmp_path]).aggregate.http_figures().requests == 7


def test_uploading_writer_ships_segments_then_meta(s3, tmp_path: Path) -> None:
    from loadgate.engine.upload import UploadingResultsWriter
    from loadgate.storage import as_path

    dest = as_path(s3.url("r", "shard-0"))
    writer = UploadingResultsWriter(dest, scratch=tmp_path / "scratch", upload_every_s=60)
    writer.write_meta(_meta(ended=False))
    writer.append_window(_record(1000, 3))
    writer.ship()  # what the thread does every upload_every_s
    with open(tmp_path / "scratch" / "windows.jsonl", "ab") as fh:
        fh.write(b'{"t": 10')  # a line being written: not shipped yet
    writer.ship()
    assert s3.keys("r/") == ["r/shard-0/meta.json", "r/shard-0/windows/000001.jsonl"]
    assert not read_shard(str(dest)).finished
    with open(tmp_path / "scratch" / "windows.jsonl", "ab") as fh:
        fh.write(b"01}\n")
    writer.append_window(_record(1002, 2))
    writer.write_meta(_meta(ended=True))
    writer.close()
    shard = read_shard(str(dest))
    assert [w["t"] for w in shard.windows] == [1000, 1001, 1002] and shard.finished
    assert s3.keys("r/shard-0/windows/") == [f"r/shard-0/windows/00000{i}.jsonl" for i in (1, 2)]


def test_uploading_writer_stops_the_stage_when_the_store_refuses(
    s3, tmp_path: Path, monkeypatch, capsys
) -> None:
    from loadgate.engine import upload
    from loadgate.storage import as_path

    monkeypatch.setattr(upload, "MAX_FAILING_S", 0.0)
    monkeypatch.setattr(upload, "FINAL_UPLOAD_S", 0.0)
    dest = as_path("s3://no-such-bucket-for-loadgate/r/shard-0")
    writer = upload.UploadingResultsWriter(dest, scratch=tmp_path / "s", upload_every_s=60)
    writer.write_meta(_meta(ended=False))
    assert not writer._attempt() and writer.error
    with pytest.raises(ResultsError, match="cannot upload results"):
        writer.append_window(_record(1000, 1))
    writer.close()
    assert "could not upload the results" in capsys.readouterr().err
    assert (tmp_path / "s" / "meta.json").exists()  # the local copy is kept
