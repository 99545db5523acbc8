"""StageTail (loadgate.run.live) on shard folders written by hand: which seconds it may report
while shards start and write at different moments."""

from __future__ import annotations

from pathlib import Path

import orjson

from loadgate.engine.results import META, WINDOWS
from loadgate.run.live import StageTail


def write_shard(folder: Path, seconds: range, ended: bool = False) -> None:
    """A shard folder holding one window per second of ``seconds``, one request each."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META).write_bytes(orjson.dumps({"ended_at": 1.0 if ended else None}))
    lines = [orjson.dumps({"t": t, "http": [["s", "GET", "/x", "2xx", 1, 0, ""]]}) for t in seconds]
    (folder / WINDOWS).write_bytes(b"".join(line + b"\n" for line in lines))


def test_a_shard_that_starts_late_but_a_second_earlier_sets_the_stage_start(tmp_path) -> None:
    # shard 0 is seen first; shard 1's first window is a second earlier (it started first but
    # its folder appeared later): the stage starts at shard 1's first second
    write_shard(tmp_path / "shard-0", range(101, 110))
    tail = StageTail(tmp_path, shards=2)
    assert tail.poll() == []  # shard 1 may still write any second
    write_shard(tmp_path / "shard-1", range(100, 106))
    first = tail.poll()
    assert [(i.start_s, i.end_s, i.requests) for i in first] == [(0, 5, 9)]
    write_shard(tmp_path / "shard-0", range(101, 112), ended=True)
    write_shard(tmp_path / "shard-1", range(100, 111), ended=True)
    rest = tail.poll()
    assert tail.done
    assert [(i.start_s, i.end_s, i.requests) for i in rest] == [(5, 10, 10), (10, 12, 3)]
