"""The gate triggered as a deploy pipeline triggers it, in a real Airflow deployment: REST
calls, and the ``loadgate gate`` command a pipeline runs.

One deployment for the module, in its production shape: the metadata database on a throwaway
PostgreSQL cluster, the scheduler with the LocalExecutor, the dag-processor, the triggerer and
the API server (``tests/support/airflow_server.py``; skipped where Debian's ``postgresql`` is
absent). The operator's settings are what a deployment has: the profiles in the
``loadgate_profiles`` Variable and the target's admin token in the ``loadgate_target``
connection, both by environment. A pipeline sends only the conf (profile, target, release,
load shape), with a token from ``POST /auth/token``.

``loadgate gate`` runs as a process of its own, with the URL and token (or a username and
password) in its environment, as a CI job has them; its tests read what it printed and its exit
code. The healthy and the faulty release are each gated once, triggered by the command: its
tests read its output, the REST tests the same run through the API (its tasks, report, Slack
thread, a UI rerun). Other runs are triggered with a plain ``POST .../dagRuns`` or a deploy
event on the DAG's Asset.

Also what people do from the UI: clear a gate and its downstream tasks, mark a running load
task failed. Slack is a local stand-in. Tiny scale, as the e2e tier: 20 users (100 for the
faulty release), the plan played at 1/100 of its length. The last test stops the deployment
and checks nothing is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import psutil
import pytest
import requests

from loadgate import client
from loadgate.backends.local import GRACE_S
from loadgate.run.artifacts import safe_name
from syncbridge.launcher import RunningService
from tests.support import target
from tests.support.airflow import connection_env, profiles_env
from tests.support.airflow_server import ADMIN_USER, DAG_ID, FULL, AirflowDeployment
from tests.support.helpers import REFERENCE_PLAN, processes, wait_for
from tests.support.slack_standin import SlackStandIn
from tests.support.target import api_requests

pytestmark = [pytest.mark.deployment, pytest.mark.slow]

ADMIN = "deployment-admin-token"
ASSET_URI = "loadgate://deploys/harmonyflow-syncbridge"  # dags/release_gate.py
RUN_TIMEOUT = 420  # a run's end, from its trigger (the e2e runs take 1-2 minutes)
LOADGATE = str(Path(sys.executable).parent / "loadgate")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def slack():
    with SlackStandIn() as standin:
        yield standin


@pytest.fixture(scope="module")
def airflow(start_airflow, tmp_path_factory, artifacts, slack) -> AirflowDeployment:
    operator = {"plan": REFERENCE_PLAN, "artifacts_root": str(artifacts)}
    operator["rollback"] = {"type": "syncbridge"}  # the example's action
    env = profiles_env(
        {
            "deploy": operator,
            # one shard: the 20%-error release breaches within seconds (as in the e2e tier)
            "deploy-1": {**operator, "shards": 1},
            # the form's default profile, which a deploy event's run (no conf) gets: small here
            "syncbridge": {**operator, "scale": 0.002, "time_scale": 0.01},
        }
    )
    env |= connection_env("loadgate_target", conn_type="http", password=ADMIN)
    env |= connection_env(
        "loadgate_slack",
        conn_type="slack",
        password="xoxb-deployment-token",
        extra={"base_url": f"{slack.url}/api/", "channel": "#deploys"},
    )
    airflow = start_airflow(
        tmp_path_factory.mktemp("airflow-pg"), components=FULL, postgres=True, env_extra=env
    )
    resp = airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    resp.raise_for_status()
    assert resp.json()["is_paused"] is False
    return airflow


def deploy(start_syncbridge, tmp_path: Path, release: str, faults: dict | None = None):
    return target.deploy(start_syncbridge, tmp_path, release, admin_token=ADMIN, faults=faults)


def trigger(airflow: AirflowDeployment, conf: dict[str, Any]) -> requests.Response:
    return airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})


def wait_for_end(airflow: AirflowDeployment, run_id: str, timeout: float = RUN_TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        resp.raise_for_status()
        run = resp.json()
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(2)
    raise AssertionError(
        f"run {run_id} did not end in {timeout:.0f} s: {task_states(airflow, run_id)}"
    )


def task_states(airflow: AirflowDeployment, run_id: str) -> dict[str, str | None]:
    resp = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    resp.raise_for_status()
    return {
        ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
        for ti in resp.json()["task_instances"]
    }


def task_log(airflow: AirflowDeployment, run_id: str, task_id: str, try_number: int = 1) -> str:
    resp = airflow.api(
        "GET",
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
        params={"full_content": True},
        headers={"Accept": "application/json"},
    )
    resp.raise_for_status()
    content = resp.json()["content"]  # structured: an exception is in its entry's error_detail
    if isinstance(content, list):
        return "\n".join(json.dumps(e) if isinstance(e, dict) else str(e) for e in content)
    return str(content)


def report_of(artifacts: Path, run_id: str) -> dict:
    return json.loads((artifacts / safe_name(run_id) / "report.json").read_text())


def non_load_time(artifacts: Path, run: dict, triggered_at: datetime) -> str:
    """The goal's two parts of a run's time that send no load: from the trigger to its first
    stage's start, and from its last gate's verdict to the run's end (from the run's timeline
    and the run's end as Airflow records it)."""
    events = [
        json.loads(line)
        for line in (artifacts / safe_name(run["dag_run_id"]) / "timeline.jsonl")
        .read_text()
        .splitlines()
    ]
    first_load = min(
        datetime.fromisoformat(e["at"]) for e in events if e["event"].startswith("stage ")
    )
    last_gate = max(
        datetime.fromisoformat(e["at"]) for e in events if e["event"].startswith("gate ")
    )
    ended = datetime.fromisoformat(run["end_date"])
    before = (first_load - triggered_at).total_seconds()
    after = (ended - last_gate).total_seconds()
    return (
        f"non-load time {before + after:.0f} s (goal <= 60 s): trigger to first stage "
        f"{before:.0f} s, last gate to run end {after:.0f} s"
    )


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


@dataclass
class CommandRun:
    """A release gated by ``loadgate gate``: its exit code and output, the run as Airflow ended
    it, its report, the service it gated, and the Slack stand-in's counts before it."""

    code: int
    out: str
    run: dict[str, Any]
    report: dict[str, Any]
    svc: RunningService
    messages_before: int
    updates_before: int

    @property
    def run_id(self) -> str:
        return str(self.run["dag_run_id"])


def command_run(
    airflow: AirflowDeployment,
    artifacts: Path,
    slack: SlackStandIn,
    svc: RunningService,
    *args: str,
) -> CommandRun:
    before, updates = len(slack.messages()), len(slack.updates())
    started, triggered_at = time.monotonic(), datetime.now(UTC)
    code, out = gate(airflow, "--target", svc.url, "--release", "v2", *args)
    run = wait_for_end(airflow, run_id_of(out))
    print(f"{run['dag_run_id']}: {run['state']} in {time.monotonic() - started:.0f} s")
    if run["state"] == "success":
        print(f"{run['dag_run_id']}: {non_load_time(artifacts, run, triggered_at)}")
    report = report_of(artifacts, run["dag_run_id"])
    return CommandRun(code, out, run, report, svc, before, updates)


@pytest.fixture(scope="module")
def healthy(airflow, artifacts, slack, start_syncbridge_for_module, tmp_path_factory) -> CommandRun:
    """A healthy release (20 users, 2 shards), gated by the command."""
    svc = deploy(start_syncbridge_for_module, tmp_path_factory.mktemp("healthy"), "v2")
    shape = ("--profile", "deploy", "--scale", "0.002", "--time-scale", "0.01")
    return command_run(airflow, artifacts, slack, svc, *shape)


@pytest.fixture(scope="module")
def faulty(airflow, artifacts, slack, start_syncbridge_for_module, tmp_path_factory) -> CommandRun:
    """A release failing 20% of its API requests (100 users, one shard: it sees enough
    requests to decide early), gated by the command."""
    svc = deploy(
        start_syncbridge_for_module,
        tmp_path_factory.mktemp("faulty"),
        "v2",
        faults={"error_rate": 0.2},
    )
    shape = ("--profile", "deploy-1", "--scale", "0.01", "--time-scale", "0.01")
    return command_run(airflow, artifacts, slack, svc, *shape)


def test_healthy_release_passes_with_each_stage_and_verdict(airflow, healthy) -> None:
    code, out = healthy.code, healthy.out
    assert code == client.EXIT_PASS, out
    for stage in ("api", "websocket", "session"):
        assert f"stage {stage}: started" in out, out
        assert f"stage {stage}: gate pass" in out, out
    assert "report: " in out and "report.html" in out, out
    assert "verdict pass (exit 0)" in out, out
    assert airflow.token() not in out
    assert healthy.run["state"] == "success"


def test_healthy_release_passes_and_a_ui_rerun_keeps_its_verdict(
    airflow, artifacts, slack, healthy
) -> None:
    svc, run, report, run_id = healthy.svc, healthy.run, healthy.report, healthy.run_id
    before, updates_before = healthy.messages_before, healthy.updates_before
    # the conf as the command sent it: the trigger's keys, nothing else
    assert run["conf"] == {
        "profile": "deploy",
        "target_url": svc.url,
        "release": "v2",
        "scale": 0.002,
        "time_scale": 0.01,
    }, run["conf"]
    states = task_states(airflow, run_id)
    assert run["state"] == "success", (states, report.get("reasons"))
    assert report["verdict"] == "pass", report["reasons"]
    for name, stage in report["stages"].items():
        assert stage["verdict"] == "pass", (name, stage["reasons"])
    assert report["stages"]["api"]["requests"] > 100
    assert states["rollback"] == "skipped"
    assert requests.get(f"{svc.url}/healthz", timeout=5).json()["release"] == "v2"
    assert_one_thread(airflow, slack, run_id, before, updates_before)

    # the UI's "Clear" on the last stage's gate with its downstream tasks
    seeding = (artifacts / safe_name(run_id) / "seeding.json").read_text()
    registered = target.requests_counted(svc, "/api/v1/auth/register")
    calls = len(slack.calls)
    resp = airflow.api(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": ["session.gate"],
            "include_downstream": True,
            "include_upstream": False,
            "only_failed": False,
            "reset_dag_runs": True,
        },
    )
    assert resp.status_code == 200, resp.text
    cleared = {ti["task_id"] for ti in resp.json()["task_instances"]}
    assert {"session.gate", "post_test.notify", "finalize"} <= cleared, cleared
    assert "seed_users" not in cleared and "session.load_test" not in cleared
    deadline = time.monotonic() + RUN_TIMEOUT
    while try_number(airflow, run_id, "finalize") < 2 or airflow.api(
        "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}"
    ).json()["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, task_states(airflow, run_id)
        time.sleep(2)
    rerun = wait_for_end(airflow, run_id)
    assert rerun["state"] == "success", task_states(airflow, run_id)
    assert report_of(artifacts, run_id)["verdict"] == "pass"
    assert try_number(airflow, run_id, "session.gate") == 2
    assert (artifacts / safe_name(run_id) / "seeding.json").read_text() == seeding
    assert target.requests_counted(svc, "/api/v1/auth/register") == registered
    assert len(slack.calls) == calls, slack.calls[calls:]  # none sent or updated twice


def assert_one_thread(
    airflow: AirflowDeployment, slack: SlackStandIn, run_id: str, before: int, updates: int
) -> None:
    """The run's Slack thread: the start message in the channel, a reply per gate with the
    stage's own figures, the verdict replied and posted to the channel, the start message
    updated to show it; the buttons open the run in Airflow and its report through Airflow."""
    start, *gates, final = slack.messages()[before:]
    (update,) = slack.updates()[updates:]
    assert "starting" in start["text"] and "thread_ts" not in start
    thread = update["ts"]
    assert slack.channel[thread]["edited"] and "PASS" in update["blocks"][0]["text"]["text"]
    headers = [g["blocks"][0]["text"]["text"] for g in gates]
    assert headers == [f"✅ Gate {s}: PASS" for s in ("api", "websocket", "session")], headers
    assert all(m["thread_ts"] == thread for m in (*gates, final))
    assert "reply_broadcast" not in gates[0] and final["reply_broadcast"] is True
    api, websocket, session = (json.dumps(g["blocks"][1]) for g in gates)
    assert "*Requests*" in api and "*p99*" in api and "*Requests*" in session
    assert "*Connections*" in websocket and "*RTT p95*" in websocket
    assert "*Requests*" not in websocket
    assert "pass" in final["text"]
    quoted = requests.utils.quote(run_id, safe="")
    run_url = f"{airflow.url}/dags/{DAG_ID}/runs/{quoted}"
    report_url = f"{airflow.url}/loadgate/reports/{DAG_ID}/{quoted}"

    def buttons(message: dict[str, Any]) -> list[str]:
        return [
            e["url"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
        ]

    assert buttons(start) == [run_url]
    assert buttons(final) == buttons(update) == [run_url, report_url]
    # they open: the UI's page of the run, and the report (the caller signed in)
    assert requests.get(run_url, timeout=30).status_code == 200
    report = requests.get(
        report_url, headers={"Authorization": f"Bearer {airflow.token()}"}, timeout=30
    )
    assert report.status_code == 200, report.text[:300]
    assert report.headers["content-type"].startswith("text/html")
    # the report's links to the logs the run collected open too, relative to where it is
    assert report.url == report_url + "/", report.url
    links = re.findall(r'href="(logs/[^"]+)"', report.text)
    assert links, "the report links no collected log"
    for link in links:
        log_page = requests.get(
            urljoin(report.url, link),
            headers={"Authorization": f"Bearer {airflow.token()}"},
            timeout=30,
        )
        assert log_page.status_code == 200, (link, log_page.text[:300])
        assert log_page.headers["content-type"].startswith("text/plain"), link
    unlisted = urljoin(report.url, "users.jsonl")  # the run folder's other files stay closed
    refused = requests.get(
        unlisted, headers={"Authorization": f"Bearer {airflow.token()}"}, timeout=30
    )
    assert refused.status_code == 404 and "password" not in refused.text


def try_number(airflow: AirflowDeployment, run_id: str, task_id: str) -> int:
    resp = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")
    resp.raise_for_status()
    return int(resp.json()["try_number"])


def test_faulty_release_exits_rollback(faulty) -> None:
    code, out = faulty.code, faulty.out
    assert code == client.EXIT_ROLLBACK, out
    assert "stage api: gate rollback" in out, out
    assert "stage websocket: skipped" in out, out
    assert "rollback: success" in out, out
    assert "verdict rollback (exit 3)" in out, out


def test_bad_release_is_rolled_back(airflow, faulty) -> None:
    svc, run, report = faulty.svc, faulty.run, faulty.report
    states = task_states(airflow, run["dag_run_id"])
    assert run["state"] == "failed", states
    assert report["verdict"] == "rollback", report["reasons"]
    assert report["stages"]["api"]["verdict"] == "rollback"
    assert report["stages"]["websocket"]["verdict"] == "not run"
    assert report["rollback"]["outcome"] == "rolled back, target healthy"
    assert states["rollback"] == "success" and states["finalize"] == "failed", states
    assert requests.get(f"{svc.url}/healthz", timeout=5).json()["release"] == "v-prev"
    assert svc.get_faults() == {}


INVALID = [
    pytest.param({"stages": ["api", "nope"]}, "nope", id="unknown-stage"),
    pytest.param({"scale": 0}, "scale", id="scale-0"),
    pytest.param(
        {"target_url": "https://api.harmonyflow.example"}, "allowlist", id="off-allowlist"
    ),
]


@pytest.mark.parametrize(("change", "message"), INVALID)
def test_invalid_conf_is_refused_before_any_load(
    airflow, artifacts, start_syncbridge, tmp_path, change, message
) -> None:
    svc = deploy(start_syncbridge, tmp_path, "v2")
    before = api_requests(svc)
    conf = {"profile": "deploy", "target_url": svc.url, "release": "v2", "scale": 0.002}
    conf |= {"time_scale": 0.01, **change}
    resp = trigger(airflow, conf)
    if resp.status_code != 200:  # refused by the API: the DAG's Params
        assert 400 <= resp.status_code < 500 and message in resp.text, resp.text
    else:  # refused by prepare, before the checklist
        run_id = resp.json()["dag_run_id"]
        run = wait_for_end(airflow, run_id)
        states = task_states(airflow, run_id)
        assert run["state"] == "failed", states
        assert states["prepare"] == "failed", states
        assert states["checklist"] != "success" and states["seed_users"] != "success", states
        log = task_log(airflow, run_id, "prepare")
        assert message in log, log[-3000:]
        assert not (artifacts / safe_name(run_id) / "users.jsonl").exists()
    assert api_requests(svc) == before


def test_asset_event_gates_its_release(airflow, artifacts, start_syncbridge, tmp_path) -> None:
    """A deploy event on the DAG's Asset, posted through the API, starts a run for its
    release and target (extra), on the form's default profile."""
    svc = deploy(start_syncbridge, tmp_path, "v3")
    resp = airflow.api("GET", "/assets", params={"uri_pattern": "deploys/harmonyflow"})
    resp.raise_for_status()
    (asset,) = [a for a in resp.json()["assets"] if a["uri"] == ASSET_URI]
    before = {run["dag_run_id"] for run in airflow.dag_runs()}
    extra = {"release": "v3", "target_url": svc.url}
    started = time.monotonic()
    resp = airflow.api("POST", "/assets/events", json={"asset_id": asset["id"], "extra": extra})
    assert resp.status_code == 200, resp.text
    deadline = time.monotonic() + 60
    while not (new := [r for r in airflow.dag_runs() if r["dag_run_id"] not in before]):
        assert time.monotonic() < deadline, "no run was started by the deploy event"
        time.sleep(1)
    (run,) = new
    assert run["run_type"] == "asset_triggered", run
    run = wait_for_end(airflow, run["dag_run_id"])
    print(f"{run['dag_run_id']}: {run['state']} in {time.monotonic() - started:.0f} s")
    report = report_of(artifacts, run["dag_run_id"])
    assert run["state"] == "success", (task_states(airflow, run["dag_run_id"]), report["reasons"])
    assert report["verdict"] == "pass", report["reasons"]
    record = json.loads((artifacts / safe_name(run["dag_run_id"]) / "run.json").read_text())
    assert record["config"]["release"] == "v3" and record["config"]["target_url"] == svc.url


def test_a_load_task_marked_failed_stops_its_shards(
    airflow, artifacts, start_syncbridge, tmp_path
) -> None:
    """The UI's "Mark as failed" on a running load task: the task is stopped, and with it
    every shard process (each in its own process group) within the shards' grace."""
    svc = deploy(start_syncbridge, tmp_path, "v2")
    conf = {"profile": "deploy", "target_url": svc.url, "release": "v2", "scale": 0.002}
    conf |= {"time_scale": 0.05, "stages": ["api"]}  # the API stage lasts about 2 minutes
    resp = trigger(airflow, conf)
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]
    root = str(artifacts / safe_name(run_id))
    deadline = time.monotonic() + 240
    while len([c for c in processes(root).values() if "shard-" in c]) < 2:
        assert time.monotonic() < deadline, task_states(airflow, run_id)
        time.sleep(0.5)
    time.sleep(3)  # load flowing
    assert api_requests(svc) > 0
    resp = airflow.api(
        "PATCH",
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/api.load_test",
        json={"new_state": "failed"},
    )
    assert resp.status_code == 200, resp.text
    marked = time.monotonic()
    while processes(root):
        assert time.monotonic() - marked < GRACE_S + 15, processes(root)
        time.sleep(0.2)
    print(f"shards stopped {time.monotonic() - marked:.1f} s after the task was marked failed")
    run = wait_for_end(airflow, run_id)
    states = task_states(airflow, run_id)
    assert run["state"] == "failed" and states["api.load_test"] == "failed", states
    stage = report_of(artifacts, run_id)["stages"]["api"]
    # the gate calls a stage stopped half-way what it is: not whole, never a pass
    assert stage["verdict"] == "invalid", stage
    assert any("results are incomplete" in reason for reason in stage["reasons"]), stage
    assert not processes(root)


def test_bad_token_is_a_clear_error(airflow):
    before = len(airflow.dag_runs())
    code, out = gate(airflow, "--target", "http://127.0.0.1:9", token="not-a-token")
    assert code == client.EXIT_ERROR, out
    assert ("401" in out or "403" in out) and "LOADGATE_AIRFLOW_TOKEN" in out, out
    assert "not-a-token" not in out
    assert len(airflow.dag_runs()) == before


def test_timeout_leaves_the_run_going(start_syncbridge, airflow, tmp_path):
    svc = deploy(start_syncbridge, tmp_path, "v2")
    code, out = gate(
        airflow,
        *("--target", svc.url, "--release", "v2", "--profile", "deploy", "--dry-run"),
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


def test_sigint_leaves_the_run_going(start_syncbridge, airflow, tmp_path):
    svc = deploy(start_syncbridge, tmp_path, "v2")
    argv, env = gate_command(
        airflow, "--target", svc.url, "--release", "v2", "--profile", "deploy", "--dry-run"
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


def test_a_pipeline_cancel_marks_the_run_failed_with_the_flag(start_syncbridge, airflow, tmp_path):
    """SIGTERM (a CI job cancelled) with --cancel-marks-failed: the run is marked failed and the
    command exits 143. The command logs in with a username and password, as a pipeline that
    holds no token does; neither reaches its output."""
    svc = deploy(start_syncbridge, tmp_path, "v2")
    argv, env = gate_command(
        airflow,
        *("--target", svc.url, "--release", "v2", "--profile", "deploy", "--dry-run"),
        "--cancel-marks-failed",
        login=True,
    )
    code, out = signalled_once_triggered(argv, env, signal.SIGTERM)
    assert code == client.EXIT_SIGTERM, out
    run_id = run_id_of(out)
    assert f"SIGTERM: marked the run {run_id} failed" in out, out
    assert airflow.password not in out
    assert run_state(airflow, run_id) == "failed"


def test_a_cancel_mark_that_airflow_undoes_is_made_again(start_syncbridge, airflow, tmp_path):
    """Airflow's scheduler can end a run marked failed as a success (a loop that took the run
    before the mark: seen in 1 of 12 cancels). Here the test does what it does, through the
    API, while the command watches the run after its mark: the command marks it failed again.

    The scheduler can also undo the first mark itself before the test's PATCH lands (CI of
    3 December: the command marked 3 times, the run ended failed), so the count is 2 or 3:
    at least the test's undo is made again, and never more than ``MARK_ATTEMPTS`` marks."""
    svc = deploy(start_syncbridge, tmp_path, "v2")
    argv, env = gate_command(
        airflow,
        *("--target", svc.url, "--release", "v2", "--profile", "deploy", "--dry-run"),
        "--cancel-marks-failed",
    )
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        first = ""
        while " triggered " not in first:
            line = proc.stdout.readline().decode()
            assert line, f"the command ended before it triggered a run:\n{first}"
            first += line
        run_id = run_id_of(first)
        proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: run_state(airflow, run_id) == "failed", timeout=4, poll=0.1)
        path = f"/dags/{DAG_ID}/dagRuns/{run_id}"
        resp = airflow.api("PATCH", path, json={"state": "success"})
        assert resp.status_code == 200, resp.text
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = first + rest.decode()
    assert proc.returncode == client.EXIT_SIGTERM, out
    marks = re.search(r"\(--cancel-marks-failed, (\d) times: Airflow set it success\)", out)
    assert marks, out
    assert 2 <= int(marks.group(1)) <= client.MARK_ATTEMPTS, out
    assert run_state(airflow, run_id) == "failed"


def test_stop_leaves_nothing_behind(airflow) -> None:
    """Last in the module: the deployment's stop() (the fixture's stop then does nothing)."""
    pids = airflow.pids()
    assert airflow.database is not None and airflow.database.pid in pids
    assert {proc.pid for proc in airflow.procs.values()} <= pids
    ports = [airflow.port, airflow.database.port]
    airflow.stop()
    deadline = time.monotonic() + 10
    while (left := [p for p in pids if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [psutil.Process(p).cmdline() for p in left if psutil.pid_exists(p)]
    for port in ports:  # free again (SO_REUSEADDR: as a server binds, past TIME_WAIT)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
    assert airflow.pids() == set()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
