"""``loadgate run-stage --out s3://…`` against the real reference service and a real S3 API on
loopback (moto's server mode): the results, the abort marker and the users file on S3."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from loadgate.engine.exitcodes import EXIT_ERROR
from loadgate.engine.results import read_shard
from loadgate.storage import as_path
from tests.support.s3 import S3Server, new_bucket

from ..conftest import (  # type: ignore[misc]
    api_counts,
    loadgate,
    loadgate_bg,
    summarize_json,
    write_plan,
)
from .test_run_stage import (
    _healthz,
    _long_probe,
    _probe_plan,
    abort_plans,
    abort_two_shards,
    kill_and_summarize,
)

pytestmark = pytest.mark.slow


def _segments(s3, prefix: str) -> list[str]:
    return [k for k in s3.keys(prefix) if k.startswith(prefix + "windows/")]


def test_results_on_s3_equal_a_local_run(syncbridge_service, s3, tmp_path, monkeypatch) -> None:
    url = syncbridge_service.url
    scratch = tmp_path / "scratch"  # as a pod's results emptyDir
    monkeypatch.setenv("LOADGATE_RESULTS_DIR", str(scratch))
    plan = write_plan(
        tmp_path,
        _probe_plan(
            {
                "executor": "constant-arrival-rate",
                "rate": 100,
                "duration": "3s",
                "pre_allocated_vus": 4,
                # a second's arrivals: a stall of the shard never leaves an arrival without a
                # VU (with 10, a busy suite's run sent 299 of 300)
                "max_vus": 100,
            }
        ),
    )
    base = ["run-stage", "--plan", str(plan), "--stage", "s", "--target", url]
    before = _healthz(url)
    local = loadgate(*base, "--quiet", "--out", str(tmp_path / "local" / "shard-0"))
    assert local.returncode == 0, local.stderr
    remote_out = s3.url("run", "stages", "s", "shard-0")
    remote = loadgate(*base, "--out", remote_out, "--upload-every", "1")
    assert remote.returncode == 0, remote.stderr
    assert "stage s · plan probe · 1 shard(s)" in remote.stdout  # read back from S3
    assert _healthz(url) - before == 600
    on_s3, on_disk = summarize_json(remote_out), summarize_json(tmp_path / "local")
    assert on_s3["requests"] == on_disk["requests"] == 300
    assert on_s3["by_name"]["GET /healthz"]["status_classes"] == {"2xx": 300}
    assert on_s3["status"] == "completed" and on_s3["failed"] == 0
    # the stage folder on S3 reads as the local one does
    assert summarize_json(s3.url("run", "stages", "s"))["requests"] == 300
    prefix = "run/stages/s/shard-0/"
    keys = s3.keys(prefix)
    assert prefix + "meta.json" in keys and prefix + "windows.jsonl" not in keys
    segments = _segments(s3, prefix)
    assert len(segments) >= 2 and segments[0] == prefix + "windows/000001.jsonl"
    windows = b"".join(s3.get(k) for k in segments).splitlines()
    assert len(windows) == len(read_shard(remote_out).windows) >= 3
    meta = json.loads(s3.get(prefix + "meta.json"))
    assert meta["status"] == "completed" and meta["exit_code"] == 0
    assert meta["generator"]["windows"] == len(windows)  # every window shipped, once
    assert list(scratch.iterdir()) == []  # the local copy is gone once shipped


def test_abort_on_s3_stops_the_other_shard_through_the_marker(seeded, s3, tmp_path) -> None:
    with_criteria, without = abort_plans(tmp_path)
    users = s3.url("run", "users.jsonl")  # the users file is an object of the run root
    loadgate_users = seeded.users_file.read_bytes()
    as_path(users).write_bytes(loadgate_users)
    seeded.service.set_faults({"error_rate": 0.2})
    stage = s3.url("run", "stages", "api")
    common = ["--stage", "api", "--target", seeded.url, "--users", users]
    abort_two_shards(with_criteria, without, common, stage, tmp_path)
    marker = json.loads(s3.get("run/stages/api/ABORT"))
    assert marker["shard"] == "0/2" and marker["criterion"] == "error-rate-rollback"
    meta0 = json.loads(s3.get("run/stages/api/shard-0/meta.json"))
    assert meta0["status"] == "aborted" and meta0["aborted"]["by_marker"] is False
    assert meta0["aborted"]["at_s"] <= 3.0
    meta1 = json.loads(s3.get("run/stages/api/shard-1/meta.json"))
    assert meta1["status"] == "aborted" and meta1["aborted"]["by_marker"] is True
    assert meta1["ended_at"] - meta0["ended_at"] < 4  # the marker is looked for every second
    summary = summarize_json(stage)
    assert summary["status"] == "aborted" and summary["shards"] == 2
    assert summary["aborted"]["criterion"] == "error-rate-rollback" and summary["requests"] > 50
    everything = b"".join(s3.get(k) for k in s3.keys("run/stages/"))
    assert b"LoadTest123!" not in everything  # no credentials in the results
    # a shard started after the abort sends nothing and says so on S3
    before = api_counts(seeded.url)
    late = loadgate(
        "run-stage", "--plan", str(without), *common, "--shard", "1/2",
        "--out", f"{stage}/shard-late",
    )  # fmt: skip
    assert late.returncode == 3 and "already aborted" in late.stderr
    assert api_counts(seeded.url) == before
    late_meta = json.loads(s3.get("run/stages/api/shard-late/meta.json"))
    assert late_meta["status"] == "aborted" and late_meta["aborted"]["by_marker"] is True


def _wait_keys(s3, prefix: str, n: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(s3.keys(prefix)) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} objects under {prefix}")


def _long_run(url: str, out: str, tmp_path: Path, *options: str):
    plan = str(_long_probe(tmp_path))
    args = ["run-stage", "--plan", plan, "--stage", "s", "--target", url, "--out", out]
    return loadgate_bg(*args, *options, log=tmp_path / "log")


def test_a_killed_shard_leaves_readable_segments(
    syncbridge_service, s3, tmp_path, monkeypatch
) -> None:
    """A killed shard cannot clear its local scratch folder: it is left where
    ``LOADGATE_RESULTS_DIR`` says (a pod's emptyDir; here the test's folder, not the system's
    temporary folder, which every suite run would leave a folder in)."""
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("LOADGATE_RESULTS_DIR", str(scratch))
    url = syncbridge_service.url
    out = s3.url("killed", "shard-0")
    before = _healthz(url)
    proc = _long_run(url, out, tmp_path, "--upload-every", "1")
    _wait_keys(s3, "killed/shard-0/windows/", 3)
    sent, summary = kill_and_summarize(proc, url, before, out)
    assert sent - summary["requests"] <= 3 * 4 * 20  # about the last upload interval, at most
    meta = json.loads(s3.get("killed/shard-0/meta.json"))
    assert meta["ended_at"] is None and meta["status"] == "running"
    (left,) = scratch.glob("loadgate-results-*")
    assert (left / "meta.json").exists()


def test_sigterm_ships_everything_before_exiting(syncbridge_service, s3, tmp_path) -> None:
    url = syncbridge_service.url
    out = s3.url("term", "shard-0")
    before = _healthz(url)
    proc = _long_run(url, out, tmp_path, "--term-grace", "3")
    _wait_keys(s3, "term/shard-0/meta.json", 1)  # started
    time.sleep(2.5)  # a few windows, none uploaded yet (every 5 s by default)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 143, (tmp_path / "log").read_text()[-3000:]
    meta = json.loads(s3.get("term/shard-0/meta.json"))
    assert meta["status"] == "terminated" and meta["exit_code"] == 143 and meta["ended_at"]
    summary = summarize_json(out)
    assert summary["requests"] == _healthz(url) - before > 0  # nothing lost


def test_results_that_never_reach_the_store_fail_the_run(
    syncbridge_service, tmp_path, monkeypatch
) -> None:
    """The store goes away mid-stage: the shard still ends, keeps its results on local disk,
    says where, and exits with the error code (the task fails rather than pass unread)."""
    server = S3Server()
    try:
        for name, value in server.env(str(tmp_path)).items():
            monkeypatch.setenv(name, value)
        bucket = new_bucket(server)
        scratch = tmp_path / "scratch"
        monkeypatch.setenv("LOADGATE_RESULTS_DIR", str(scratch))
        out = bucket.url("gone", "shard-0")
        proc = _long_run(syncbridge_service.url, out, tmp_path, "--term-grace", "1")
        _wait_keys(bucket, "gone/shard-0/meta.json", 1)
    finally:
        server.stop()
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=45) == EXIT_ERROR  # 1 s grace, at most ~21 s of final upload
    log = (tmp_path / "log").read_text()
    assert "could not upload the results" in log
    kept = [p for p in scratch.iterdir() if p.is_dir()]
    assert len(kept) == 1 and str(kept[0]) in log
    shard = read_shard(kept[0])
    assert shard.meta["status"] == "terminated" and len(shard.windows) >= 2
