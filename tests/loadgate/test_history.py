"""Release history: one object per entry, locally and on S3; baseline selection; pins; the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from loadgate.cli import main
from loadgate.run import history
from loadgate.run.history import HistoryEntry, HistoryError, entry_from_gates, history_key

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
KEY = "sb-example--harmonyflow-10k"
RUNS = ("good", "pinned-run", "bad")


def _entry(
    run: str,
    minutes: int,
    verdict: str = "pass",
    plan: str = "p",
    scale: float = 0.1,
    time_scale: float = 1.0,
) -> HistoryEntry:
    return HistoryEntry(
        run_id=run,
        release=f"v{minutes}",
        verdict=verdict,
        recorded_at=T0 + timedelta(minutes=minutes),
        plan=plan,
        scale=scale,
        time_scale=time_scale,
        run_root=f"/runs/{run}",
    )


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    if request.param == "s3":
        return request.getfixturevalue("s3").url("artifacts")
    return str(tmp_path / "artifacts")


def test_history_key_is_a_safe_slug() -> None:
    assert history_key("syncbridge", "harmonyflow-10k") == "syncbridge--harmonyflow-10k"
    assert history_key("https://SB.example:8443/api/", "HarmonyFlow 10k") == (
        "sb-example-8443-api--harmonyflow-10k"
    )
    assert history_key("http://user:secret@host/", "p") == "host--p"
    with pytest.raises(ValueError):
        history_key("http://", "p")


def test_append_lists_oldest_first_each_entry_its_own_object(root) -> None:
    for run, minutes in (("r3", 30), ("r1", 10), ("r2", 20)):
        history.append(root, KEY, _entry(run, minutes))
    assert [e.run_id for e in history.entries(root, KEY)] == ["r1", "r2", "r3"]
    assert [e.run_id for e in history.entries(root, KEY, limit=2)] == ["r2", "r3"]
    assert history.entries(root, "other-key") == []
    with pytest.raises(HistoryError):
        history.entries(root, "../escape")


def test_eight_concurrent_writers_lose_no_entry(root) -> None:
    same_time = [_entry(f"run-{i}", 0) for i in range(8)]  # same timestamp: names still unique
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda e: history.append(root, KEY, e), same_time))
    history.append(root, KEY, same_time[0])  # the same run twice keeps both
    found = history.entries(root, KEY)
    assert sorted(e.run_id for e in found) == sorted([f"run-{i}" for i in range(8)] + ["run-0"])


def test_baseline_is_newest_pass_of_same_plan_and_scale_unless_pinned(root) -> None:
    history.append(root, KEY, _entry("good-old", 1))
    history.append(root, KEY, _entry("good", 2))
    history.append(root, KEY, _entry("bad", 3, verdict="rollback"))
    history.append(root, KEY, _entry("other-plan", 4, plan="q"))
    history.append(root, KEY, _entry("other-scale", 5, scale=1.0))
    history.append(root, KEY, _entry("current", 6))
    pick = history.baseline(root, KEY, plan="p", scale=0.1, exclude_run="current")
    assert pick is not None and pick.run_id == "good"
    assert history.baseline(root, KEY, plan="p", scale=0.1).run_id == "current"
    assert history.baseline(root, KEY, plan="none", scale=0.1) is None
    history.pin(root, KEY, "good-old")
    assert history.pinned(root, KEY) == "good-old"
    assert history.baseline(root, KEY, plan="p", scale=0.1, exclude_run="current").run_id == (
        "good-old"
    )
    with pytest.raises(HistoryError):
        history.pin(root, KEY, "no-such-run")
    assert history.unpin(root, KEY) and not history.unpin(root, KEY)
    assert history.baseline(root, KEY, plan="p", scale=0.1, exclude_run="current").run_id == "good"


def test_baseline_prefers_a_run_as_long_as_this_one(tmp_path) -> None:
    """A short run's handful of samples does not set a long run's baseline while a passing run
    of the same time scale exists; without one, any passing run of the plan and scale does."""
    root = str(tmp_path / "artifacts")
    history.append(root, KEY, _entry("long", 1, time_scale=0.1))
    history.append(root, KEY, _entry("short", 2, time_scale=0.005))
    pick = history.baseline(root, KEY, plan="p", scale=0.1, time_scale=0.1)
    assert pick is not None and pick.run_id == "long"
    assert history.baseline(root, KEY, plan="p", scale=0.1, time_scale=0.005).run_id == "short"
    assert history.baseline(root, KEY, plan="p", scale=0.1, time_scale=0.02).run_id == "short"
    assert history.baseline(root, KEY, plan="p", scale=0.1).run_id == "short"


def test_entry_from_gate_results() -> None:
    gate = {
        "verdict": "pass",
        "summary": {
            "requests": 1200,
            "rps": 20.0,
            "error_rate": 0.004,
            "p50_ms": 80.0,
            "p95_ms": 210.5,
            "p99_ms": 400.0,
            "max_vus": 20,
            "ws": {"max_connections": 0},
            "system": {"cpu_utilization": {"max": 0.7}, "memory_utilization": {"max": 0.4}},
            "rates": {"offered": 21.0, "achieved": 19.5},
        },
        "baseline": {"figures": {"http all": {"p95": 210.5, "error_rate": 0.004}}},
    }
    entry = entry_from_gates(
        run_id="r",
        verdict="pass",
        plan="p",
        scale=0.002,
        time_scale=0.1,
        run_root="s3://b/runs/r",
        gates={"api": gate, "websocket": {"verdict": "error", "summary": None}},
        release="v42",
    )
    api = entry.stages["api"]
    assert (api.requests, api.offered_rps, api.achieved_rps, api.p95_ms) == (
        1200,
        21.0,
        19.5,
        210.5,
    )
    assert (api.peak_users, api.peak_connections, api.cpu_peak, api.memory_peak) == (
        20,
        None,
        0.7,
        0.4,
    )
    assert api.scopes == {"http all": {"p95": 210.5, "error_rate": 0.004}}  # for the spread
    assert entry.stages["websocket"].verdict == "error" and entry.stages["websocket"].requests == 0
    assert entry.stages["websocket"].scopes == {}
    assert HistoryEntry.model_validate_json(entry.model_dump_json()) == entry


def test_cli_lists_marks_pins_and_rejects_unknown(tmp_path, capsys) -> None:
    root = str(tmp_path / "artifacts")
    history.append(root, KEY, _entry("good", 1))
    history.append(root, KEY, _entry("pinned-run", 2))
    history.append(root, KEY, _entry("bad", 3, verdict="rollback"))
    assert main(["history", KEY, "--root", root, "--pin", "pinned-run"]) == 0
    capsys.readouterr()
    assert main(["history", KEY, "--root", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {run: i for i, line in enumerate(lines) for run in line.split() if run in RUNS}
    assert list(rows) == ["good", "pinned-run", "bad"]  # oldest first, newest last
    rows = {run: lines[i] for run, i in rows.items()}
    assert rows["pinned-run"].startswith("*B") and rows["good"].startswith("  ")
    assert main(["history", KEY, "--root", root, "--json", "--limit", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pinned"] == data["baseline"] == "pinned-run"
    assert [e["run_id"] for e in data["entries"]] == ["bad"]
    assert main(["history", KEY, "--root", root, "--unpin"]) == 0
    capsys.readouterr()
    assert main(["history", KEY, "--root", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["baseline"] == "pinned-run"  # newest pass
    assert main(["history", KEY, "--root", root, "--pin", "nope"]) == 2
    assert "not in history" in capsys.readouterr().err
    # by the profile's name alone, when it has one history; several: named, not guessed
    profile = KEY.split("--")[0]
    assert main(["history", profile, "--root", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["key"] == KEY
    history.append(root, f"{profile}--other-plan", _entry("x", 4))
    assert main(["history", profile, "--root", root]) == 2
    assert "has several histories" in capsys.readouterr().err


def test_cli_unknown_key_or_root_is_a_clear_error(tmp_path) -> None:
    for root in (tmp_path / "artifacts", tmp_path / "missing"):
        if root.name == "artifacts":
            history.append(str(root), KEY, _entry("r", 1))
        proc = subprocess.run(
            [sys.executable, "-m", "loadgate", "history", "no-such-key", "--root", str(root)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 2
        assert f"no history 'no-such-key' under {root}" in proc.stderr
