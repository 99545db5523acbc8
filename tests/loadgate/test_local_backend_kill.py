"""The local backend's shards die with the task however it ends: stopped by SIGTERM with no
handler (nothing runs ``finally``), killed by SIGKILL, or its whole process group killed. They
are stopped at once (SIGTERM to their process groups), not when they next write to the dead
task's pipe (a shard prints its progress every 10 s: it would go on sending load until then,
and a quiet one for ever); a stage that ends normally leaves nothing.

The task is a real process running ``run_stage_local`` against the real reference service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support.helpers import one_stage_plan, processes, scenario
from tests.support.target import requests_counted

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TASK = """
import signal, sys
from loadgate import pipeline
from loadgate.run import folder
from loadgate.backends.local import run_stage_local
from loadgate.config.run import build_run_config

target, plan, root = sys.argv[1:4]
if sys.argv[4:] == ["handle-sigterm"]:  # as Airflow's task runner does: raise, run finally
    def stop(signum, frame):
        raise SystemExit(143)
    signal.signal(signal.SIGTERM, stop)
params = {"profile": "kill", "target_url": target, "plan": plan, "scale": 1, "time_scale": 1,
          "stages": ["api"], "shards": 2, "artifacts_root": root}
run = folder.Run(pipeline.prepare(build_run_config(params, allowlist=[]), "kill-test"))
run.artifacts.write_json("checklist.json", [])
outcome = run_stage_local(run, "api", lambda line: print(line, flush=True))
print("outcome", outcome["exit_codes"], flush=True)
"""


def wait_until(predicate, timeout: float, poll: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()


def start_task(
    tmp_path: Path, target: str, duration: str, *options: str
) -> tuple[subprocess.Popen, Path]:
    plan = one_stage_plan(
        {
            "g": scenario(
                "constant-vus",
                vus=2,
                duration=duration,
                options={"path": "/healthz", "think_time": [0.05, 0.05]},
            )
        },
        name="kill-test",
        stage="api",
    )
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan))
    script = tmp_path / "task.py"
    script.write_text(TASK)
    root = tmp_path / "artifacts"
    out = (tmp_path / "task.out").open("wb")
    task = subprocess.Popen(
        [sys.executable, str(script), target, str(plan_path), str(root), *options],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a group of its own, as a task has: to kill it as a whole
    )
    out.close()
    return task, root


SIGTERM = lambda task: task.send_signal(signal.SIGTERM)  # noqa: E731


@pytest.mark.parametrize(
    ("kill", "options"),
    [
        pytest.param(SIGTERM, (), id="sigterm"),
        pytest.param(SIGTERM, ("handle-sigterm",), id="sigterm-handled"),
        pytest.param(lambda task: task.kill(), (), id="sigkill"),
        pytest.param(lambda task: os.killpg(task.pid, signal.SIGKILL), (), id="group-sigkill"),
    ],
)
def test_no_shard_outlives_a_killed_task(start_syncbridge, tmp_path, kill, options) -> None:
    svc = start_syncbridge(tmp_path / "svc")
    task, root = start_task(tmp_path, svc.url, "120s", *options)
    marker = str(root / "kill-test")  # in each shard's --out (the run root is per run id)
    try:
        assert wait_until(lambda: len(processes(marker)) == 3, timeout=60), (
            tmp_path / "task.out"
        ).read_text()[-3000:]
        every = processes(marker)
        shards = {pid: cmd for pid, cmd in every.items() if "run-stage" in cmd}
        assert len(shards) == 2 and len(every) == 3  # two shards and their watchdog
        # the shards send load, in process groups of their own (not the task's)
        assert wait_until(lambda: svc_requests(svc) > 20, timeout=30)
        for pid in shards:
            assert os.getpgid(pid) == pid != os.getpgid(task.pid)
        # just after both shards printed their progress: the next print is 10 s away
        output = tmp_path / "task.out"
        printed = [f"[api {i}/2] t=10s " for i in range(2)]
        assert wait_until(lambda: all(p in output.read_text() for p in printed), timeout=40)

        kill(task)
        code = task.wait(timeout=30)
        if options:  # the task stopped its shards itself (finally), then exited as asked
            assert code == 143 and not processes(marker), processes(marker)

        assert wait_until(lambda: not processes(marker), timeout=5), processes(marker)
        # and the target hears nothing more from them
        before = svc_requests(svc)
        time.sleep(1.0)
        assert svc_requests(svc) == before
    finally:
        if task.poll() is None:
            task.kill()
            task.wait()
        for pid in processes(marker):
            os.kill(pid, signal.SIGKILL)


def test_a_stage_that_ends_leaves_no_process(start_syncbridge, tmp_path) -> None:
    svc = start_syncbridge(tmp_path / "svc")
    task, root = start_task(tmp_path, svc.url, duration="2s")
    output = tmp_path / "task.out"
    assert task.wait(timeout=120) == 0, output.read_text()[-3000:]
    assert "outcome [0, 0]" in output.read_text()
    assert not processes(str(root / "kill-test"))  # no shard, and no watchdog (it names it)


def svc_requests(svc) -> float:
    """The requests the reference service counted on /healthz."""
    return requests_counted(svc, '/healthz"')
