"""``loadgate gate`` as a deploy pipeline runs it, against a real Airflow (api-server,
dag-processor, scheduler with the LocalExecutor, triggerer; the metadata database on PostgreSQL,
skipped where Debian's ``postgresql`` is absent) and the real reference service on loopback.

The command runs as a process of its own, with the URL and token in its environment, as a CI
job has them; each test reads what it printed and its exit code. Loads are tiny (20–100
users, the plan at 1/100 of its length), as in the e2e tier.
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
import requests

from loadgate import client
from tests.support import target
from tests.support.airflow import connection_env, profiles_env
from tests.support.airflow_server import ADMIN_USER, DAG_ID, FULL, AirflowDeployment
from tests.support.helpers import REFERENCE_PLAN, wait_for

pytestmark = [pytest.mark.deployment, pytest.mark.slow]

ADMIN = "gate-client-admin-token"
LOADGATE = str(Path(sys.executable).parent / "loadgate")


@pytest.fixture(scope="module")
def gate_env(start_airflow, tmp_path_factory):
    """Airflow in its production shape (scheduler with the LocalExecutor, PostgreSQL), and the
    profiles a deployment would have: ``gate`` (2 shards) and ``gate-one-shard`` (for the
    faulty release: one shard sees enough requests to decide early)."""
    home = tmp_path_factory.mktemp("airflow-gate-client")
    common = {
        "plan": REFERENCE_PLAN,
        "artifacts_root": str(home / "artifacts"),
        "rollback": {"type": "syncbridge"},
        "shards": 2,
    }
    env = profiles_env({"gate": common, "gate-one-shard": {**common, "shards": 1}})
    env |= connection_env("loadgate_target", conn_type="http", password=ADMIN)
    return start_airflow(home, components=FULL, postgres=True, env_extra=env)


def deploy(start_syncbridge, tmp_path: Path, faults: dict | None = None):
    """v2 over v-prev (the rollback goes back to v-prev), with the admin token the profile's
    rollback action uses."""
    return target.deploy(start_syncbridge, tmp_path, "v2", admin_token=ADMIN, faults=faults)


def gate_command(
    airflow: AirflowDeployment, *args: str, token: str | None = None, login: bool = False
) -> tuple:
    """The command and its environment: a token, or with ``login`` the admin's username and
    password (the client obtains its token from ``POST /auth/token``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADGATE_AIRFLOW_")}
    env["LOADGATE_AIRFLOW_URL"] = airflow.url
    if login:
        env |= {
            "LOADGATE_AIRFLOW_USERNAME": ADMIN_USER,
            "LOADGATE_AIRFLOW_PASSWORD": airflow.password,
        }
    else:
        env["LOADGATE_AIRFLOW_TOKEN"] = token if token is not None else airflow.token()
    return [LOADGATE, "gate", "--unpause", "--poll", "1", *args], env


def gate(airflow: AirflowDeployment, *args: str, token: str | None = None, timeout: float = 600):
    argv, env = gate_command(airflow, *args, token=token)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    print(proc.stdout + proc.stderr)  # the progress a pipeline's log shows
    return proc.returncode, proc.stdout + proc.stderr


def run_state(airflow: AirflowDeployment, run_id: str) -> str:
    return {run["dag_run_id"]: run["state"] for run in airflow.dag_runs()}[run_id]


def finished_tasks(airflow: AirflowDeployment, run_id: str) -> int:
    """How many of the run's tasks have ended, read with the REST client the command uses."""
    from airflow_client import client as rest

    config = rest.Configuration(host=airflow.url, access_token=airflow.token())
    with rest.ApiClient(config) as api:
        resp = rest.TaskInstanceApi(api).get_task_instances_without_preload_content(
            DAG_ID, run_id, limit=100
        )
        assert resp.status == 200, resp.data
        tis = json.loads(resp.data)["task_instances"]
    return sum(ti["state"] in ("success", "skipped") for ti in tis)


def wait_run_end(airflow: AirflowDeployment, run_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run_state(airflow, run_id)
        if state in ("success", "failed"):
            return state
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not end in {timeout:.0f} s")


def run_id_of(output: str) -> str:
    found = re.search(r" triggered \S+ run (\S+): target ", output)
    assert found, f"no run triggered:\n{output}"
    return found[1]


def test_healthy_release_passes_with_each_stage_and_verdict(start_syncbridge, gate_env, tmp_path):
    airflow = gate_env
    svc = deploy(start_syncbridge, tmp_path)
    code, out = gate(
        airflow,
        *("--target", svc.url, "--release", "v2", "--profile", "gate"),
        *("--scale", "0.002", "--time-scale", "0.01"),
    )
    assert code == client.EXIT_PASS, out
    for stage in ("api", "websocket", "session"):
        assert f"stage {stage}: started" in out, out
        assert f"stage {stage}: gate pass" in out, out
    assert "report: " in out and "report.html" in out, out
    assert "verdict pass (exit 0)" in out, out
    assert airflow.token() not in out
    run_id = run_id_of(out)
    assert run_state(airflow, run_id) == "success"


def test_faulty_release_exits_rollback(start_syncbridge, gate_env, tmp_path):
    airflow = gate_env
    svc = deploy(start_syncbridge, tmp_path, faults={"error_rate": 0.2})
    code, out = gate(
        airflow,
        *("--target", svc.url, "--release", "v2", "--profile", "gate-one-shard"),
        *("--scale", "0.01", "--time-scale", "0.01", "--stages", "api,websocket"),
    )
    assert code == client.EXIT_ROLLBACK, out
    assert "stage api: gate rollback" in out, out
    assert "stage websocket: skipped" in out, out
    assert "rollback: success" in out, out
    assert "verdict rollback (exit 3)" in out, out
    assert requests.get(f"{svc.url}/healthz", timeout=5).json()["release"] == "v-prev"


def test_bad_token_is_a_clear_error(gate_env):
    airflow = gate_env
    before = len(airflow.dag_runs())
    code, out = gate(airflow, "--target", "http://127.0.0.1:9", token="not-a-token")
    assert code == client.EXIT_ERROR, out
    assert ("401" in out or "403" in out) and "LOADGATE_AIRFLOW_TOKEN" in out, out
    assert "not-a-token" not in out
    assert len(airflow.dag_runs()) == before


def test_timeout_leaves_the_run_going(start_syncbridge, gate_env, tmp_path):
    airflow = gate_env
    svc = deploy(start_syncbridge, tmp_path)
    code, out = gate(
        airflow,
        *("--target", svc.url, "--release", "v2", "--profile", "gate", "--dry-run"),
        *("--timeout", "2"),
    )
    assert code == client.EXIT_TIMEOUT, out
    assert "timeout" in out and "goes on" in out, out
    run_id = run_id_of(out)
    assert run_state(airflow, run_id) in ("queued", "running")
    goes_on_without_the_client(airflow, run_id)


def signalled_once_triggered(argv: list[str], env: dict, sig: signal.Signals) -> tuple[int, str]:
    """Run the command, send ``sig`` once it says it triggered the run; its code and output."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode())
            if " triggered " in lines[-1]:
                break
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines) + rest.decode()
    print(out)
    return proc.returncode, out


def test_sigint_leaves_the_run_going(start_syncbridge, gate_env, tmp_path):
    airflow = gate_env
    svc = deploy(start_syncbridge, tmp_path)
    argv, env = gate_command(
        airflow, "--target", svc.url, "--release", "v2", "--profile", "gate", "--dry-run"
    )
    code, out = signalled_once_triggered(argv, env, signal.SIGINT)
    assert code == client.EXIT_SIGINT, out
    assert "SIGINT" in out and "goes on" in out, out
    goes_on_without_the_client(airflow, run_id_of(out))


def goes_on_without_the_client(airflow: AirflowDeployment, run_id: str) -> None:
    """The run's tasks keep finishing after the command left; then the test stops the run (a
    dry run of about 20 tasks: its end proves no more, and the next test's run waits for it)."""
    done = finished_tasks(airflow, run_id)
    assert wait_for(lambda: finished_tasks(airflow, run_id) > done, timeout=60, poll=1)
    assert run_state(airflow, run_id) in ("running", "success")
    resp = airflow.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})
    assert resp.status_code == 200 or run_state(airflow, run_id) == "success", resp.text
    assert wait_run_end(airflow, run_id, timeout=60) in ("failed", "success")


def test_a_pipeline_cancel_marks_the_run_failed_with_the_flag(start_syncbridge, gate_env, tmp_path):
    """SIGTERM (a CI job cancelled) with --cancel-marks-failed: the run is marked failed and the
    command exits 143. The command logs in with a username and password, as a pipeline that
    holds no token does; neither reaches its output."""
    airflow = gate_env
    svc = deploy(start_syncbridge, tmp_path)
    argv, env = gate_command(
        airflow,
        *("--target", svc.url, "--release", "v2", "--profile", "gate", "--dry-run"),
        "--cancel-marks-failed",
        login=True,
    )
    code, out = signalled_once_triggered(argv, env, signal.SIGTERM)
    assert code == client.EXIT_SIGTERM, out
    run_id = run_id_of(out)
    assert f"SIGTERM: marked the run {run_id} failed" in out, out
    assert airflow.password not in out
    assert run_state(airflow, run_id) == "failed"
