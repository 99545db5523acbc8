"""Parallel pods: the Kubernetes backend under a real scheduler.

``airflow dags test`` runs mapped tasks one after another, so there a stage's shard pods never
overlap (``tests/e2e/test_release_gate_kubernetes.py`` strips the plan's "N users at once"
targets for that reason). Here a real Airflow (scheduler with the LocalExecutor, PostgreSQL,
8 task slots) maps the KubernetesPodOperator over the shards, against the test Kubernetes API
server (``tests/support/k8s``: each pod's container is a local process, the times it ran are
recorded as a kubelet reports them):

- a healthy release, two shards a stage, the plan with its concurrency targets: the shards'
  pods of each stage ran at the same time (from their containers' start and end), the stage
  reached its users and connections at once only across pods, and the run passes;
- a faulty release (20% of API requests answer 5xx): one shard's live test aborts the stage and
  writes the abort marker, and its running sibling stops through the marker within seconds;
  the run ends failed with verdict rollback, and no pod or process is left.

A DAG runs one run at a time (``max_active_runs=1``), so the faulty release is gated by a
second DAG: the same plan under another name in ``LOADGATE_PLANS_DIR``, each release on its own
reference service and namespace. The healthy run is triggered when the faulty stage's shards
have stopped: the two runs' tasks overlap, their load does not (two load stages at once on two
cores would judge the generators as much as the service). A faulty run whose sibling shard
decided before it could read the marker, or started after it, is gated again (``marker_race``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from loadgate.backends.kubernetes.manifests import RUN_LABEL, SHARD_LABEL, STAGE_LABEL, run_label
from loadgate.engine.abort import MARKER, POLL_S
from loadgate.run.artifacts import safe_name
from syncbridge.launcher import RunningService
from syncbridge.launcher import start_syncbridge as start_service
from tests.support import target
from tests.support.airflow import connection_env, profiles_env
from tests.support.airflow_server import FULL, AirflowDeployment
from tests.support.helpers import REFERENCE_PLAN, processes
from tests.support.k8s import FakeKubeAPI

pytestmark = [pytest.mark.deployment, pytest.mark.slow]

ADMIN = "parallel-pods-admin-token"
PLAN_FILE = Path(__file__).resolve().parents[2] / "include" / "loadgate_syncbridge" / "plans"
HEALTHY = "harmonyflow-10k-pods"  # the plan's DAG: release_gate_harmonyflow-10k-pods
FAULTY = "harmonyflow-10k-pods-abort"
NAMESPACE = {HEALTHY: "loadgate-healthy", FAULTY: "loadgate-faulty"}
STAGES = ["api", "websocket"]  # the stages with an "N at once" target
AT_ONCE = {"api": "api-max-vus", "websocket": "ws-concurrent-connections"}
LATE_SHARD_S = 3.0  # the faulty run's shard 1 starts this much later (see pod_start_delay)
SIBLING_STOP_S = 10.0  # a sibling ends within this of the marker (the marker is read every 1 s)
RUN_TIMEOUT = 420


def pod_start_delay(pod: dict[str, Any]) -> float:
    """Seconds a pod stays Pending: the faulty run's shard 1 a few seconds (a slower node).

    Both shards see the same 20% of errors, so both would abort on their own within a second
    of each other. Started later, shard 1 is sending load but has too few requests to decide
    (the live rate criteria need 50 to 100) when shard 0 aborts: what stops it is the marker.

    The delay sits midway in the window that works. Shard 0 decides about 5.4 s after its first
    request and the marker is read every second, so with each shard's start-up (pod start to
    first request: 2 s on a quiet machine, 4 s or more when the suite starts) s0 and s1, shard 1
    must start after s0 + 1 - s1 and before s0 + 5.4 - s1. At 4 s a busy start (s0 2.2 s, s1
    over 3.6 s) left shard 1 aborted by the marker before its first request. No delay fits
    every machine (a shard's decision took 5.0 s in one run and 7.7 s in the other shard of
    it): a run that misses the window is gated again (``marker_race``).
    """
    meta = pod["metadata"]
    late = meta["namespace"] == NAMESPACE[FAULTY] and meta["labels"].get(SHARD_LABEL) == "1"
    return LATE_SHARD_S if late else 0.0


@dataclass
class GateRun:
    dag_id: str
    run_id: str
    state: str
    root: Path
    report: dict[str, Any]
    seconds: float

    def gate(self, stage: str) -> dict[str, Any]:
        return json.loads((self.root / "gates" / f"{stage}.json").read_text())

    def shard_folders(self, stage: str) -> dict[int, Path]:
        return shard_folders(self.root, stage)


def shard_folders(root: Path, stage: str) -> dict[int, Path]:
    """A run's shard folders of ``stage``: shard index -> folder."""
    return {int(p.name.split("-")[1]): p for p in (root / "stages" / stage).glob("shard-*")}


@dataclass
class Runs:
    healthy: GateRun
    faulty: GateRun
    services: dict[str, RunningService]


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubeAPI]:
    server = FakeKubeAPI(pending_s=pod_start_delay, grace_cap_s=3.0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> Path:
    """``LOADGATE_PLANS_DIR``: the example's plan, whole (its concurrency targets kept), under
    two names, each its own DAG."""
    folder = tmp_path_factory.mktemp("plans")
    plan = yaml.safe_load((PLAN_FILE / f"{REFERENCE_PLAN}.yaml").read_text())
    assert any(c.get("scaled") for c in plan["criteria"])  # the "N users at once" targets
    for name in (HEALTHY, FAULTY):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({**plan, "name": name}))
    return folder


@pytest.fixture(scope="module")
def airflow(start_airflow, tmp_path_factory, kube, plans, artifacts) -> AirflowDeployment:
    def profile(plan: str) -> dict[str, Any]:
        return {
            "plan": plan,
            "artifacts_root": str(artifacts),
            "rollback": {"type": "syncbridge"},  # the example's action
            "backend": "kubernetes",
            "shards": 2,
            "kubernetes": {"namespace": NAMESPACE[plan], "image": "loadgate:test"},
        }

    home = tmp_path_factory.mktemp("airflow-pods")
    kubeconfig = kube.write_kubeconfig(home.parent / "kubeconfig", namespace=NAMESPACE[HEALTHY])
    env = profiles_env({"pods": profile(HEALTHY), "pods-abort": profile(FAULTY)})
    env |= connection_env("loadgate_target", conn_type="http", password=ADMIN)
    env |= kube.airflow_connection_env(kubeconfig)
    env["LOADGATE_PLANS_DIR"] = str(plans)
    airflow = start_airflow(home, components=FULL, postgres=True, parallelism=8, env_extra=env)
    for plan in (HEALTHY, FAULTY):
        dag_id = f"release_gate_{plan}"
        deadline = time.monotonic() + 120
        while not airflow.api("GET", f"/dags/{dag_id}").ok:
            assert time.monotonic() < deadline, f"{dag_id} was not parsed"
            time.sleep(1)
        resp = airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        resp.raise_for_status()
    return airflow


@pytest.fixture(scope="module")
def services() -> Iterator[list[RunningService]]:
    """The reference services this module starts (module-scoped: both releases at once)."""
    started: list[RunningService] = []
    yield started
    for svc in started:
        svc.stop()


def deploy(services: list[RunningService], folder: Path, faults: dict | None = None):
    def start(workdir, **opts) -> RunningService:
        svc = start_service(workdir, **opts)
        services.append(svc)
        return svc

    return target.deploy(start, folder, "v2", admin_token=ADMIN, faults=faults)


def dag_of(plan: str) -> str:
    return f"release_gate_{plan}"


def trigger(airflow: AirflowDeployment, plan: str, conf: dict[str, Any]) -> str:
    resp = airflow.api(
        "POST", f"/dags/{dag_of(plan)}/dagRuns", json={"logical_date": None, "conf": conf}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["dag_run_id"]


def run_state(airflow: AirflowDeployment, dag_id: str, run_id: str) -> str:
    resp = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
    resp.raise_for_status()
    return resp.json()["state"]


def task_states(airflow: AirflowDeployment, dag_id: str, run_id: str) -> dict[str, Any]:
    resp = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    resp.raise_for_status()
    return {
        ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
        for ti in resp.json()["task_instances"]
    }


def wait_for_end(
    airflow: AirflowDeployment, plan: str, run_id: str, artifacts: Path, started: float
) -> GateRun:
    dag_id = dag_of(plan)
    deadline = started + RUN_TIMEOUT
    while (state := run_state(airflow, dag_id, run_id)) not in ("success", "failed"):
        assert time.monotonic() < deadline, task_states(airflow, dag_id, run_id)
        time.sleep(2)
    seconds = time.monotonic() - started
    print(f"{dag_id} {run_id}: {state} in {seconds:.0f} s")
    root = artifacts / safe_name(run_id)
    report_path = root / "report.json"
    assert report_path.exists(), task_states(airflow, dag_id, run_id)
    report = json.loads(report_path.read_text())
    return GateRun(dag_id, run_id, state, root, report, seconds)


FAULTY_ATTEMPTS = 3  # faulty runs at most, until one exercises the marker (see marker_race)
MARKER_SLACK_S = 0.5  # beyond the 1 s between ticks: a tick's own work


def marker_race(root: Path) -> str | None:
    """Why a faulty run's ``api`` stage did not exercise the marker, or None when it did (or
    failed in a way the test must report).

    The test needs the sibling running and sending when the first shard writes the marker, and
    not yet able to decide on its own. Both shards see the same errors, so when the machine's
    speed changes within seconds the sibling can decide on its own by its first tick after the
    marker (shards tick on the same whole seconds, and a tick checks the criteria before the
    marker), or start after the marker and stop before sending anything. Either is the product
    behaving as it should, with nothing to test; a sibling that decides on its own later than
    that has ignored the marker, and is left to the test to fail on.
    """
    marker = json.loads((root / "stages" / "api" / MARKER).read_text())
    first = int(str(marker["shard"]).split("/")[0])
    for shard, folder in shard_folders(root, "api").items():
        if shard == first:
            continue
        meta = json.loads((folder / "meta.json").read_text())
        aborted = meta.get("aborted") or {}
        if aborted.get("by_marker") is False:
            decided = meta["started_at"] + aborted["at_s"]
            if decided < marker["at"] + POLL_S + MARKER_SLACK_S:
                return (
                    f"shard {aborted['shard']} decided on its own ({aborted['criterion']}) "
                    f"{decided - marker['at']:+.2f} s from the marker, by its first tick after it"
                )
        elif aborted.get("by_marker") and requests_sent(folder) == 0:
            return f"{folder.name} started after the marker and sent nothing"
    return None


def api_shards_done(root: Path) -> bool:
    """Both shards of the ``api`` stage have ended (a shard's ``meta.json`` is written when it
    starts, with no ``ended_at``, and again when it ends)."""
    folders = list(shard_folders(root, "api").values())
    if len(folders) != 2:
        return False
    try:
        metas = [json.loads((f / "meta.json").read_text()) for f in folders]
    except (OSError, ValueError):  # not written yet, or being written
        return False
    return all(m.get("ended_at") is not None for m in metas)


@pytest.fixture(scope="module")
def runs(airflow, services, artifacts, tmp_path_factory) -> Runs:
    """Both releases gated: the faulty one first; the healthy one once the faulty stage's
    shards have stopped (its load over), while the faulty run rolls back and reports.

    A faulty run whose shards missed the marker race (:func:`marker_race`) is let end, and the
    faulty release is deployed and gated again, at most ``FAULTY_ATTEMPTS`` times."""
    folder = tmp_path_factory.mktemp("services")
    healthy_svc = deploy(services, folder / "healthy")
    base = {"release": "v2", "time_scale": 0.01, "stages": STAGES}
    for attempt in range(1, FAULTY_ATTEMPTS + 1):
        faulty_svc = deploy(services, folder / f"faulty-{attempt}", faults={"error_rate": 0.2})
        # 50 users a shard: shard 0 gathers its evidence within seconds of the ramp
        faulty_started = time.monotonic()
        faulty_id = trigger(
            airflow,
            FAULTY,
            {**base, "profile": "pods-abort", "target_url": faulty_svc.url, "scale": 0.01},
        )
        root = artifacts / safe_name(faulty_id)
        deadline = faulty_started + RUN_TIMEOUT
        while not ((root / "stages" / "api" / MARKER).exists() and api_shards_done(root)):
            state = run_state(airflow, dag_of(FAULTY), faulty_id)
            assert state not in ("success", "failed"), (
                f"the faulty run ended {state} with no abort marker: "
                f"{task_states(airflow, dag_of(FAULTY), faulty_id)}"
            )
            assert time.monotonic() < deadline, task_states(airflow, dag_of(FAULTY), faulty_id)
            time.sleep(0.5)
        print(f"api shards stopped {time.monotonic() - faulty_started:.0f} s after the trigger")
        missed = marker_race(root)
        if missed is None or attempt == FAULTY_ATTEMPTS:
            break
        print(f"faulty run {attempt} missed the marker race ({missed}): gated again")
        wait_for_end(airflow, FAULTY, faulty_id, artifacts, faulty_started)
    healthy_started = time.monotonic()
    healthy_id = trigger(  # 20 users: 10 a shard
        airflow, HEALTHY, {**base, "profile": "pods", "target_url": healthy_svc.url, "scale": 0.002}
    )
    faulty = wait_for_end(airflow, FAULTY, faulty_id, artifacts, faulty_started)
    healthy = wait_for_end(airflow, HEALTHY, healthy_id, artifacts, healthy_started)
    print(f"both runs done {time.monotonic() - faulty_started:.0f} s after the last faulty trigger")
    return Runs(healthy, faulty, {HEALTHY: healthy_svc, FAULTY: faulty_svc})


def stage_pods(kube: FakeKubeAPI, plan: str, run: GateRun, stage: str) -> dict[int, dict]:
    """The containers of a stage's shard pods, as they ran: shard -> record."""
    label = run_label(run.run_id)
    found = {}
    for record in kube.container_runs(NAMESPACE[plan]):
        labels = record["labels"]
        if labels.get(RUN_LABEL) == label and labels.get(STAGE_LABEL) == stage:
            shard = int(labels[SHARD_LABEL])
            assert shard not in found, f"{stage} shard {shard} ran twice"
            found[shard] = record
    return found


def peak_at_once(folder: Path, stage: str) -> int:
    """One shard's own peak: users (api) or open connections (websocket) in a second."""
    peak = 0
    for line in (folder / "windows.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if stage == "websocket":
            value = sum(ws.get("open_max", ws.get("open", 0)) for ws in rec.get("ws", {}).values())
        else:
            value = sum(slot[1] for slot in rec.get("vus", {}).values())
        peak = max(peak, value)
    return peak


def requests_sent(folder: Path) -> int:
    total = 0
    for line in (folder / "windows.jsonl").read_text().splitlines():
        total += sum(entry[4] for entry in json.loads(line).get("http", ()))
    return total


def test_healthy_release_runs_its_shards_at_once_and_passes(kube, runs) -> None:
    run = runs.healthy
    assert run.state == "success", run.report.get("reasons")
    assert run.report["verdict"] == "pass", run.report["reasons"]
    for stage in STAGES:
        pods = stage_pods(kube, HEALTHY, run, stage)
        assert sorted(pods) == [0, 1], pods
        t0 = min(p["started_at"] for p in pods.values())
        for shard, pod in sorted(pods.items()):
            assert pod["finished_at"] is not None and pod["exit_code"] == 0, pod
            print(
                f"{stage} shard {shard} ({pod['pod']}): {pod['started_at'] - t0:5.1f} s → "
                f"{pod['finished_at'] - t0:5.1f} s"
            )
        overlap = min(p["finished_at"] for p in pods.values()) - max(
            p["started_at"] for p in pods.values()
        )
        longest = max(p["finished_at"] - p["started_at"] for p in pods.values())
        print(f"{stage}: the shards' pods ran {overlap:.1f} s at once (the longer {longest:.1f} s)")
        assert overlap > 0, f"{stage}: the shard pods ran one after the other"

        # "N at once" reached across the pods, never by one alone
        criterion = next(c for c in run.gate(stage)["criteria"] if c["id"] == AT_ONCE[stage])
        peaks = {s: peak_at_once(f, stage) for s, f in run.shard_folders(stage).items()}
        print(
            f"{stage}: {AT_ONCE[stage]} {criterion['observed']:g} at once across pods "
            f"(target {criterion['threshold']:g}), each shard's own peak {peaks}"
        )
        assert criterion["status"] == "pass", criterion
        assert criterion["observed"] >= criterion["threshold"] > 0, criterion
        assert len(peaks) == 2 and all(p < criterion["threshold"] for p in peaks.values()), peaks
        assert run.report["stages"][stage]["verdict"] == "pass", run.report["stages"][stage]
    assert kube.pods(NAMESPACE[HEALTHY]) == []  # cleanup_pods deleted them


def test_one_shards_abort_stops_its_running_sibling(kube, runs) -> None:
    run = runs.faulty
    assert run.state == "failed", run.report.get("reasons")
    assert run.report["verdict"] == "rollback", run.report["reasons"]
    assert run.report["stages"]["api"]["verdict"] == "rollback"
    assert run.report["stages"]["websocket"]["verdict"] == "not run"
    assert run.report["rollback"]["outcome"] == "rolled back, target healthy"
    svc = runs.services[FAULTY]
    assert requests.get(f"{svc.url}/healthz", timeout=5).json()["release"] == "v-prev"

    marker = json.loads((run.root / "stages" / "api" / MARKER).read_text())
    first = int(str(marker["shard"]).split("/")[0])
    pods = stage_pods(kube, FAULTY, run, "api")
    assert sorted(pods) == [0, 1], pods
    metas = {
        s: json.loads((f / "meta.json").read_text()) for s, f in run.shard_folders("api").items()
    }
    t0 = min(p["started_at"] for p in pods.values())
    print(
        f"abort marker: shard {marker['shard']}, {marker['criterion']} at {marker['at'] - t0:.1f} s"
    )
    for shard, pod in sorted(pods.items()):
        folder = run.shard_folders("api")[shard]
        print(
            f"api shard {shard} ({pod['pod']}): {pod['started_at'] - t0:5.1f} s → "
            f"{pod['finished_at'] - t0:5.1f} s, exit {pod['exit_code']}, "
            f"{requests_sent(folder)} requests, aborted {metas[shard]['aborted']}"
        )
        assert pod["exit_code"] == 3, pod  # stopped by a criterion: its task skipped
        assert metas[shard]["status"] == "aborted", metas[shard]
    assert metas[first]["aborted"]["by_marker"] is False
    (sibling,) = [s for s in pods if s != first]
    late = pods[sibling]
    assert metas[sibling]["aborted"]["by_marker"] is True, metas[sibling]
    # the sibling was running (and sending) when the marker was written, and ended soon after
    assert late["started_at"] < marker["at"], (late, marker)
    assert requests_sent(run.shard_folders("api")[sibling]) > 0
    stopped = late["finished_at"] - marker["at"]
    print(f"the sibling's pod ended {stopped:.1f} s after the abort marker")
    assert stopped < SIBLING_STOP_S, stopped
    assert kube.pods(NAMESPACE[FAULTY]) == []


def test_no_pod_or_process_is_left(kube, runs, artifacts) -> None:
    assert kube.pods() == []
    assert all(r["finished_at"] is not None for r in kube.container_runs())
    assert not processes(str(artifacts))
    sent = json.dumps([call.get("body") for call in kube.calls()], default=str)
    assert ADMIN not in sent  # the target's admin token reached no pod spec
