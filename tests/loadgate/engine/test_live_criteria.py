"""The live rollback criteria against the real reference service on loopback: a release
answering 2% of requests with a 5xx is not rolled back by any shard; one answering 20% is,
with the evidence of the sequential test in the abort record and the marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.helpers import one_stage_plan, scenario, shipped_criteria

from ..conftest import loadgate, loadgate_bg, write_plan  # type: ignore[misc]

pytestmark = pytest.mark.slow

# the real plan's live rate criteria of the API stage
ROLLBACK = shipped_criteria("error-rate-rollback", "service-unavailable", stages=None)


def _plan(tmp_path: Path, duration: str, shards: int) -> Path:
    api_mix = scenario(
        "constant-vus",
        exec="syncbridge.api_mix",
        vus=4 * shards,
        duration=duration,
        options={"think_time": [0, 0.02]},
    )
    data = one_stage_plan(
        {"api_mix": api_mix}, name="live", stage="api", criteria=ROLLBACK, shards=shards
    )
    return write_plan(tmp_path, data)


def _shards(seeded, tmp_path: Path, plan: Path, shards: int) -> tuple[list[int], list[dict]]:
    common = ["--plan", str(plan), "--stage", "api", "--target", seeded.url]
    common += ["--users", str(seeded.users_file), "--quiet"]
    stage = tmp_path / "results" / "api"
    procs = []
    for i in range(shards):
        args = ["run-stage", *common, "--shard", f"{i}/{shards}"]
        args += ["--out", str(stage / f"shard-{i}")]
        procs.append(loadgate_bg(*args, log=tmp_path / f"s{i}.log"))
    codes = [p.wait(timeout=60) for p in procs]
    metas = [json.loads((stage / f"shard-{i}" / "meta.json").read_text()) for i in range(shards)]
    return codes, metas


def _failed_rate(tmp_path: Path) -> tuple[int, int]:
    proc = loadgate("summarize", str(tmp_path / "results" / "api"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    return summary["failed"], summary["requests"]


def test_two_percent_5xx_is_not_rolled_back(seeded, tmp_path: Path) -> None:
    """Three shards, 8 s each, every second each shard tests both live rate criteria."""
    seeded.service.set_faults({"error_rate": 0.02})
    codes, metas = _shards(seeded, tmp_path, _plan(tmp_path, "8s", 3), 3)
    assert codes == [0, 0, 0], [m.get("aborted") for m in metas]
    assert all(m["status"] == "completed" and m["aborted"] is None for m in metas)
    assert not (tmp_path / "results" / "api" / "ABORT").exists()
    failed, requests = _failed_rate(tmp_path)
    assert requests > 1000 and 0 < failed < 0.05 * requests  # the fault was really there


def test_twenty_percent_5xx_is_rolled_back_with_its_evidence(seeded, tmp_path: Path) -> None:
    seeded.service.set_faults({"error_rate": 0.2})
    codes, metas = _shards(seeded, tmp_path, _plan(tmp_path, "30s", 2), 2)
    assert codes == [3, 3]
    marker = json.loads((tmp_path / "results" / "api" / "ABORT").read_text())
    # the shard that wrote the marker (the other may have breached on its own a moment later)
    aborts = [m["aborted"] for m in metas]
    [ab] = [a for a in aborts if a["shard"] == marker["shard"] and not a["by_marker"]]
    assert ab["criterion"] == "error-rate-rollback" and ab["test"] == "sequential"
    assert ab["at_s"] <= 3.0 and ab["threshold"] == 0.05
    assert ab["observed"] > 0.1 and ab["samples"] >= 50 and ab["window"].startswith("last ")
    assert ab["statistic"] >= ab["boundary"] > 0
    assert ab["stage_alpha"] == 0.01 and ab["alpha"] == 0.01 / (2 * 2)  # 2 shards x 2 criteria
    assert ab["confidence"] == 1 - ab["alpha"]
    assert ab["window_samples"] >= ab["min_samples"] == 100
    assert ab["criterion_window"] == "last 30s"
    for key in ("criterion", "observed", "samples", "statistic", "boundary", "alpha", "window"):
        assert marker[key] == ab[key], key
    for meta in metas:  # every shard stopped within seconds, not the stage's 30 s
        assert meta["ended_at"] - meta["started_at"] < 8
        if meta["aborted"]["by_marker"]:
            assert meta["aborted"]["statistic"] == ab["statistic"]
