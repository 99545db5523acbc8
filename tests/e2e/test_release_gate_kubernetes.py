"""The real release_gate DAG with backend=kubernetes, against the test Kubernetes API server.

The server runs each pod's command (``loadgate run-stage …``) as a local process, so the real
KubernetesPodOperator, mapped over the shards, drives the real engine against the real
reference service. No pod is left after the run.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncbridge.launcher import RunningService
from tests.e2e.test_release_gate import (
    ADMIN,
    STORE_KEYS,
    api_requests,
    assert_no_secret_leaks,
    deploy,
    run_on_store,
    store_objects,
)
from tests.support.airflow import airflow_env, as_profile, connection_env, dags_test, migrate
from tests.support.k8s import FakeKubeAPI
from tests.support.s3 import FAKE_KEY_ID, FAKE_SECRET, Bucket, S3Server, new_bucket

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
NAMESPACE = "loadgate"
PLAN = (
    Path(__file__).resolve().parents[2]
    / "include"
    / "loadgate_syncbridge"
    / "plans"
    / "harmonyflow-10k.yaml"
)


@pytest.fixture
def kube():
    server = FakeKubeAPI(grace_cap_s=3.0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    """One Airflow database for the module's runs (each run has its own run id)."""
    home = tmp_path_factory.mktemp("airflow")
    migrate(airflow_env(home))
    return home


POD_PLAN = "harmonyflow-10k-pods"  # the DAG factory gives a plan of LOADGATE_PLANS_DIR its DAG
POD_DAG = f"release_gate_{POD_PLAN}"


def plan_without_concurrency_targets(tmp_path):
    """The seed's plan less its "N users at once" targets: ``airflow dags test`` runs mapped
    tasks one after the other, so the shards' pods never overlap (a scheduler runs them
    together). The folder holding it, for ``LOADGATE_PLANS_DIR``."""
    plan = yaml.safe_load(PLAN.read_text())
    plan["criteria"] = [c for c in plan["criteria"] if not c.get("scaled")]
    plan["name"] = POD_PLAN
    folder = tmp_path / "plans"
    folder.mkdir(exist_ok=True)
    (folder / f"{POD_PLAN}.yaml").write_text(yaml.safe_dump(plan))
    return folder


def run_gate_on_pods(kube, svc, home, tmp_path, env_extra=None, **conf):
    """``airflow dags test`` with backend=kubernetes; (process, local run root or None when
    the artifacts are on S3)."""
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
    env = airflow_env(
        home,
        **connection_env("loadgate_target", conn_type="http", password=ADMIN),
        **kube.airflow_connection_env(kubeconfig),
        **(env_extra or {}),
    )
    full = {
        "target_url": svc.url,
        "release": "v2",
        "scale": 0.002,
        "time_scale": 0.01,
        "stages": ["api", "session"],
        "shards": 2,
        "backend": "kubernetes",
        "kubernetes": {"namespace": NAMESPACE, "image": "loadgate:test"},
        "artifacts_root": str(tmp_path / "artifacts"),
        "plan": POD_PLAN,
        "rollback": {"type": "syncbridge"},  # the example's action: the core has no default
        **conf,
    }
    profile, trigger = as_profile(full)
    env.update(profile)
    env["LOADGATE_PLANS_DIR"] = str(plan_without_concurrency_targets(tmp_path))
    if str(full["artifacts_root"]).startswith("s3://"):
        for name in STORE_KEYS:
            env.pop(name, None)  # the Airflow tasks reach the store through the connection
        return dags_test(env, trigger, cwd=tmp_path, dag_id=POD_DAG), None
    proc = dags_test(env, trigger, cwd=tmp_path, dag_id=POD_DAG)
    (run_root,) = (tmp_path / "artifacts").glob("*/run.json")
    return proc, run_root.parent


@dataclass
class PodsRun:
    """The healthy release's gate run on pods, once for the module's two tests of it."""

    svc: RunningService
    kube: FakeKubeAPI
    proc: Any
    output: str
    cwd: Path
    s3: Bucket
    run_key: str
    run_root: Path  # the run root on S3, downloaded


@pytest.fixture(scope="module")
def healthy_pods_run(
    airflow_home, s3_server: S3Server, start_syncbridge_for_module, tmp_path_factory
):
    """A healthy release gated once on pods as production runs it: the API and session stages,
    2 pods each, the artifacts on S3, the pods given the store's keys by a Kubernetes Secret
    (by reference) and the Airflow tasks by the run's aws connection. Read by two tests: the
    verdict and the pods' lifecycle (``test_healthy_release_passes_on_pods``), and what the
    pods shipped to the store (``test_pods_ship_results_to_s3_with_keys_from_a_secret``); the
    local run root is the faulty and killed-shard runs'."""
    tmp_path = tmp_path_factory.mktemp("pods")
    kube = FakeKubeAPI(grace_cap_s=3.0).start()
    try:
        svc = deploy(start_syncbridge_for_module, tmp_path, "v2")
        s3 = new_bucket(s3_server)
        secret = "loadgate-s3"
        kube.add_secret(
            NAMESPACE, secret, {"access-key-id": FAKE_KEY_ID, "secret-access-key": FAKE_SECRET}
        )
        settings = {
            "namespace": NAMESPACE,
            "image": "loadgate:test",
            "env": {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_DEFAULT_REGION": "us-east-1"},
            "secret_env": {
                "AWS_ACCESS_KEY_ID": {"secret": secret, "key": "access-key-id"},
                "AWS_SECRET_ACCESS_KEY": {"secret": secret, "key": "secret-access-key"},
            },
        }
        extra = {k: v for k, v in s3_server.env(str(tmp_path)).items() if k not in STORE_KEYS}
        proc, _ = run_gate_on_pods(
            kube,
            svc,
            airflow_home,
            tmp_path,
            env_extra=extra | s3.airflow_connection_env("loadgate_s3"),
            artifacts_root=s3.url("gate-runs"),
            aws_conn_id="loadgate_s3",
            kubernetes=settings,
        )
        output = proc.stdout + proc.stderr
        run_key, run_root = run_on_store(s3, output, tmp_path_factory.mktemp("from-s3"))
        yield PodsRun(svc, kube, proc, output, tmp_path, s3, run_key, run_root)
    finally:
        kube.stop()


def test_healthy_release_passes_on_pods(healthy_pods_run: PodsRun, airflow_home) -> None:
    run, run_root, kube = healthy_pods_run, healthy_pods_run.run_root, healthy_pods_run.kube
    assert run.proc.returncode == 0, run.output[-5000:]
    report = json.loads((run_root / "report.json").read_text())
    assert report["verdict"] == "pass", report["reasons"]
    assert set(report["stages"]) == {"api", "session"}
    assert report["stages"]["api"]["requests"] > 50
    # two pods per stage ran the engine, each wrote its shard's results
    created = kube.calls("POST", contains="/pods")
    assert len(created) == 4, [c.get("path") for c in created]
    assert sorted(p.parent.name for p in run_root.glob("stages/api/*/meta.json")) == [
        "shard-0",
        "shard-1",
    ]
    assert api_requests(run.svc) >= report["stages"]["api"]["requests"]
    # the generator pods' logs were collected, then every pod was deleted
    assert list((run_root / "logs" / "pods").iterdir())
    assert kube.pods(NAMESPACE) == []
    assert_no_secret_leaks(
        airflow_home,
        run_root,
        run.output,
        seed_secret=run.s3.get("gate-runs/.seed-secret").decode().strip(),
        also=kube_received(kube),
    )


def kube_received(kube) -> dict[str, str]:
    """What the Kubernetes API received: pod specs, patches, deletions (the pods' logs are
    in the run root)."""
    bodies = json.dumps([call.get("body") for call in kube.calls()], default=str)
    return {"Kubernetes API requests": bodies}


def test_faulty_release_aborts_every_shard_and_rolls_back(
    start_syncbridge, kube, airflow_home, tmp_path
):
    """50 users a shard: the first pod sends enough requests to tell 20% errors from the 5%
    threshold (about 120, at most ~265: bench/verdict/live_alarm.md) well within its stage, and
    stops; the second, started after it (``dags test`` runs mapped pods one by one), finds the
    abort marker and stops too."""
    svc = deploy(start_syncbridge, tmp_path, "v2", faults={"error_rate": 0.2})
    proc, run_root = run_gate_on_pods(kube, svc, airflow_home, tmp_path, scale=0.01)
    assert proc.returncode != 0
    report = json.loads((run_root / "report.json").read_text())
    assert report["verdict"] == "rollback"
    metas = [json.loads(p.read_text()) for p in run_root.glob("stages/api/*/meta.json")]
    assert len(metas) == 2 and all(m["status"] == "aborted" for m in metas)
    assert report["stages"]["session"]["verdict"] == "not run"
    assert report["rollback"]["outcome"] == "rolled back, target healthy"
    assert kube.pods(NAMESPACE) == []


def kill_when_running(kube, stage: str, shard: int, after_s: float, killed: list[str]) -> None:
    """Kill the pod of ``stage`` shard ``shard`` ``after_s`` seconds after it runs."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for pod in kube.pods(NAMESPACE):
            labels = pod["metadata"].get("labels", {})
            if (
                labels.get("loadgate/stage") == stage
                and labels.get("loadgate/shard") == str(shard)
                and pod.get("status", {}).get("phase") == "Running"
            ):
                time.sleep(after_s)
                if kube.kill_pod(NAMESPACE, pod["metadata"]["name"]):
                    killed.append(pod["metadata"]["name"])
                return
        time.sleep(0.2)


def test_a_killed_shard_makes_the_gate_invalid_and_leaves_no_pod(
    start_syncbridge, kube, airflow_home, tmp_path
) -> None:
    """A generator pod killed mid-stage (as by the OOM killer): its task fails, the pod is
    kept for debugging while the run goes on, the gate says the results are incomplete (the
    test cannot vouch for them: invalid, which fails the run) instead of passing on half the
    load, and the cleanup task deletes every pod."""
    svc = deploy(start_syncbridge, tmp_path, "v2")
    killed: list[str] = []
    killer = threading.Thread(
        target=kill_when_running, args=(kube, "api", 0, 3.0, killed), daemon=True
    )
    killer.start()
    proc, run_root = run_gate_on_pods(kube, svc, airflow_home, tmp_path, stages=["api"])
    killer.join(timeout=5)
    output = proc.stdout + proc.stderr
    assert killed, output[-3000:]
    assert proc.returncode != 0
    gate = json.loads((run_root / "gates" / "api.json").read_text())
    assert gate["verdict"] == "invalid", gate["reasons"]
    assert any("incomplete" in r for r in gate["reasons"]), gate["reasons"]
    metas = {
        p.parent.name: json.loads(p.read_text()) for p in run_root.glob("stages/api/*/meta.json")
    }
    assert metas["shard-0"]["ended_at"] is None  # killed: never wrote its end
    assert metas["shard-1"]["status"] == "completed"
    # the killed pod's log was collected before the cleanup deleted it with the others
    assert any(killed[0] in p.name for p in (run_root / "logs" / "pods").iterdir())
    assert kube.pods(NAMESPACE) == []


def test_pods_ship_results_to_s3_with_keys_from_a_secret(healthy_pods_run: PodsRun, airflow_home):
    """artifacts_root s3://… with backend=kubernetes: the pods get the store's keys from a
    Kubernetes Secret (by reference: the values are in no pod spec), write their results and
    the plan's copy is read from the run root on S3; no shared volume, no pod left."""
    run, run_root, s3 = healthy_pods_run, healthy_pods_run.run_root, healthy_pods_run.s3
    assert run.proc.returncode == 0, run.output[-5000:]
    assert not (run.cwd / "artifacts").exists()
    report = json.loads((run_root / "report.json").read_text())
    assert report["verdict"] == "pass", report["reasons"]
    for stage in ("api", "session"):
        for shard in ("shard-0", "shard-1"):
            folder = run_root / "stages" / stage / shard
            assert json.loads((folder / "meta.json").read_text())["status"] == "completed"
            assert list((folder / "windows").glob("*.jsonl")), (stage, shard)
    created = run.kube.calls("POST", contains="/pods")
    assert len(created) == 4
    for call in created:
        args = call["body"]["spec"]["containers"][0]["args"]
        plan = f"{s3.url('gate-runs', run.run_key)}/plan.yaml"
        assert args[args.index("--plan") + 1] == plan
        assert FAKE_SECRET not in json.dumps(call["body"])
    assert run.kube.pods(NAMESPACE) == []
    assert_no_secret_leaks(
        airflow_home,
        run_root,
        run.output,
        seed_secret=s3.get("gate-runs/.seed-secret").decode().strip(),
        also={**kube_received(run.kube), **store_objects(s3, "gate-runs/")},
    )
