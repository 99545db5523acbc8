"""``collect_logs`` keeps the end of each log and reads no more than that: a log file of any
size costs at most LOG_TAIL_BYTES of memory, and a target log that would never end (a FIFO)
is not read at all."""

from __future__ import annotations

import os
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from loadgate import pipeline
from loadgate.config.run import RunConfig
from loadgate.pipeline import LOG_TAIL_BYTES, collect_logs
from loadgate.run.folder import Run
from tests.support.helpers import reference_run

pytestmark = pytest.mark.timeout(120)
MB = 1_000_000


def make_run(artifacts_root: str, target_log: str = "") -> Run:
    config = RunConfig(
        **reference_run(
            target_url="http://127.0.0.1:8080", artifacts_root=artifacts_root, target_log=target_log
        )
    )
    return Run({"run_id": "r1", "config": config.model_dump(mode="json")})


def big_log(path: Path, size: int) -> bytes:
    """A sparse file of ``size`` bytes ending with a recognisable line; returns its last 5 MB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    end = b"the last line\n"
    with path.open("wb") as f:
        f.truncate(size - len(end))
        f.seek(size - len(end))
        f.write(end)
    return (b"\0" * LOG_TAIL_BYTES + end)[-LOG_TAIL_BYTES:]


def peak_memory(call: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_only_the_end_of_each_log_is_read(tmp_path) -> None:
    target = tmp_path / "service.log"
    tail = big_log(target, 40 * MB)
    run = make_run(str(tmp_path / "artifacts"), target_log=str(target))
    engine_log = Path(str(run.artifacts.path("stages", "api", "shard-0", "engine.log")))
    engine_tail = big_log(engine_log, 30 * MB)
    short = Path(str(run.artifacts.path("stages", "api", "attempt-2", "shard-0", "engine.log")))
    short.parent.mkdir(parents=True)
    short.write_bytes(b"a short log\n")

    copied, peak = peak_memory(lambda: collect_logs(run))

    assert copied["target"] == "logs/target.log"
    assert copied["generator"] == [
        "logs/generator/api-attempt-2-shard-0.log",
        "logs/generator/api-shard-0.log",
    ]
    logs = Path(str(run.artifacts.path("logs")))
    assert (logs / "target.log").read_bytes() == tail
    assert (logs / "generator" / "api-shard-0.log").read_bytes() == engine_tail
    assert (logs / "generator" / "api-attempt-2-shard-0.log").read_bytes() == b"a short log\n"
    # a 40 MB and a 30 MB log: one tail at a time in memory, never a whole file
    assert peak < 2.5 * LOG_TAIL_BYTES, peak


def test_a_target_log_that_is_not_a_regular_file_is_not_read(tmp_path, caplog) -> None:
    fifo = tmp_path / "service.fifo"
    os.mkfifo(fifo)  # opening it to read waits for a writer that never comes
    run = make_run(str(tmp_path / "artifacts"), target_log=str(fifo))
    out: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: out.update(collect_logs(run)), daemon=True)
    with caplog.at_level("WARNING"):
        worker.start()
        worker.join(10)
    if worker.is_alive():  # free the blocked reader before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("collect_logs waited on a FIFO")
    assert out["target"] is None
    assert not Path(str(run.artifacts.path("logs", "target.log"))).exists()
    assert "not a regular file" in caplog.text


def test_generator_logs_on_s3_are_read_from_their_end(s3, tmp_path) -> None:
    run = make_run(s3.url("runs"))
    tail = bytes(range(256)) * 40
    body = b"x" * (6 * MB) + tail
    run.artifacts.path("stages", "api", "shard-1", "engine.log").write_bytes(body)

    copied = collect_logs(run)

    assert copied["generator"] == ["logs/generator/api-shard-1.log"]
    kept = run.artifacts.path("logs", "generator", "api-shard-1.log").read_bytes()
    assert kept == body[-LOG_TAIL_BYTES:] and kept.endswith(tail)


def test_read_log_tail_of_a_short_and_an_empty_file(tmp_path) -> None:
    short, empty = tmp_path / "short.log", tmp_path / "empty.log"
    short.write_bytes(b"0123456789")
    empty.write_bytes(b"")
    assert pipeline.read_log_tail(short, limit=4) == b"6789"
    assert pipeline.read_log_tail(short, limit=100) == b"0123456789"
    assert pipeline.read_log_tail(empty) == b""
