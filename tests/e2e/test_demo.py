"""``make demo`` as a person sees it: the demo module as a process (the real reference service,
the real DAG under ``airflow dags test``) at a tiny scale, its output read as printed.

It prints what a person watches (the checklist items, the seeding, each stage's progress, each
gate's verdict, the verdict and the report's path) and none of Airflow's log lines, which go to
a file it names. Everything it starts is stopped when it ends, also when it is interrupted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.helpers import processes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TIMEOUT_S = 600
# Airflow's log lines: "2026-12-01T01:51:56.597847Z [info     ] …", "[2026-…] {…} INFO - …"
AIRFLOW_LINE = re.compile(r"^\s*\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d|INFO - |\[(info|warning|debug)\s")


def run_demo(workdir: Path, *args: str) -> tuple[int, str, str, float]:
    """The demo, to its end (interrupted as Ctrl-C does past ``TIMEOUT_S``): exit code, stdout,
    stderr, seconds. ``args`` after the tiny scale's (which they may override)."""
    argv = [sys.executable, "-m", "loadgate_syncbridge.demo", "--workdir", str(workdir)]
    argv += ["--scale", "0.002", "--time-scale", "0.01", "--shards", "1", *args]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the demo stops Airflow and the service
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"the demo took over {TIMEOUT_S} s:\n{out[-3000:]}\n{err[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err, time.monotonic() - started


def test_the_demo_prints_what_a_person_watches(tmp_path: Path) -> None:
    code, out, err, took = run_demo(tmp_path)
    print(f"\nthe demo took {took:.0f} s:\n{out}")  # shown with -s
    left = processes(str(tmp_path))
    assert not left, left  # the service, Airflow and the shards are gone
    lines = out.splitlines()
    noise = [line for line in lines + err.splitlines() if AIRFLOW_LINE.search(line)]
    assert not noise, noise[:10]

    runs = list((tmp_path / "artifacts").glob("*/report.json"))
    assert len(runs) == 1, out + err
    root = runs[0].parent
    report = json.loads(runs[0].read_text())
    for item in json.loads((root / "checklist.json").read_text()):
        assert any(line.startswith("  ") and f"  {item['item']}" in line for line in lines), item
    assert "checklist: passed" in lines
    assert any(re.fullmatch(r"seeding users: 20 / 20 ready in .*", line) for line in lines), out
    for stage in ("api", "websocket", "session"):
        progress = [line for line in lines if re.match(rf"  {stage}\s+\d+ s │ VUs\s+\d+/\d+", line)]
        assert progress, (stage, out)
        verdict = json.loads((root / "gates" / f"{stage}.json").read_text())["verdict"]
        assert any(line.startswith(f"gate {stage}: {verdict.upper()}") for line in lines), out
    assert f"verdict: {report['verdict'].upper()} (release v1)" in lines
    assert f"report: {root / 'report.html'}" in lines and (root / "report.html").is_file()
    # Airflow's output: in the file the demo names, all of it
    logs = list((tmp_path / "logs").glob("airflow-*.log"))
    assert len(logs) == 1 and any(str(logs[0]) in line for line in lines), out
    log = logs[0].read_text()
    assert "DagRun Finished: dag_id=release_gate" in log
    assert "seed_users" in log and "api.load_test" in log
    assert AIRFLOW_LINE.search(log, re.M)
    healthy = report["verdict"] in ("pass", "investigate", "inconclusive")
    assert code == (0 if healthy else 1), (code, out, err)


def test_the_bad_release_demo_watches_the_gate_roll_it_back(tmp_path: Path) -> None:
    """``make demo-bad-release``: v2 fails 20% of its API requests; the live criteria stop the API
    stage, the gate decides rollback, the later stages are skipped, the rollback puts v1 back
    and the demo says so. The demo succeeds (exit 0) because the gate did what it shows. 100
    users: enough requests to tell 20% from the 5% threshold within seconds (as in the e2e
    tier's bad release)."""
    code, out, err, took = run_demo(tmp_path, "--bad-release", "--scale", "0.01")
    print(f"\nthe bad-release demo took {took:.0f} s:\n{out}")  # shown with -s
    assert not processes(str(tmp_path))
    lines = out.splitlines()
    assert not [line for line in lines + err.splitlines() if AIRFLOW_LINE.search(line)]
    assert any("deployed release v2 with a fault" in line for line in lines), out
    (report_path,) = (tmp_path / "artifacts").glob("*/report.json")
    report = json.loads(report_path.read_text())
    assert report["verdict"] == "rollback", report["reasons"]
    assert report["stages"]["websocket"]["verdict"] == "not run"
    assert any(line.startswith("gate api: ROLLBACK") for line in lines), out
    assert not any(line.startswith("gate websocket:") for line in lines), out
    assert "stage websocket: not run" in lines and "stage session: not run" in lines, out
    rolled_back = "rollback (syncbridge): rolled back, target healthy, the target reports "
    rolled_back += "release v1"
    assert rolled_back in lines, out
    assert "verdict: ROLLBACK (release v2)" in lines, out
    assert code == 0, (code, out, err)
