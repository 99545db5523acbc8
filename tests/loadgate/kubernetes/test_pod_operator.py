"""The real KubernetesPodOperator (cncf.kubernetes provider, sync mode) runs pods that
``loadgate.kubernetes`` builds, against the test API server: the command runs as a local
process, its log comes back into the task log, its exit code decides the task, and the pods are
deleted (or kept when they failed, until the run's cleanup deletes them by label).

Each run of the operator is a separate process with an Airflow home of its own
(``kpo_runner.py``); the API server runs in the test process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from loadgate.backends.kubernetes import manifests
from loadgate.backends.kubernetes import pods as k8s_pods
from loadgate.config import pods as pod_settings
from loadgate.config.run import RunConfig
from loadgate.run.folder import Run
from tests.support.airflow import airflow_env
from tests.support.helpers import one_stage_plan, scenario

from ..conftest import loadgate  # type: ignore[misc]
from .conftest import NAMESPACE

pytestmark = pytest.mark.slow  # each test runs a task with pods of its own (3-10 s)

RUNNER = Path(__file__).with_name("kpo_runner.py")
SETTINGS = pod_settings.PodSettings(namespace=NAMESPACE, image="loadgate:test")
RUN_ID = "manual__2026-05-01T10:00:00+00:00"

# What the backend passes the operator; the pod itself is the template (pod_template_dict).
OPERATOR = {
    "in_cluster": False,
    "get_logs": True,
    "do_xcom_push": False,
    "on_finish_action": "delete_succeeded_pod",
    "termination_message_policy": "FallbackToLogsOnError",
    "startup_timeout_seconds": 60,
    "startup_check_interval_seconds": 1,
    "log_events_on_failure": True,
}


def script(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def operator_args(kubeconfig: Path | None, pod: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The operator's arguments for ``pod``: :data:`OPERATOR`, the kubeconfig (unless None: the
    Airflow connection names the cluster) and ``extra``."""
    config = {} if kubeconfig is None else {"config_file": str(kubeconfig)}
    return {**OPERATOR, **config, "pod_template_dict": pod, **extra}


def shard_pod(
    name: str, code: str, *, shard: str, settings: pod_settings.PodSettings = SETTINGS, **kw: Any
) -> dict[str, Any]:
    """The pod of shard ``shard`` of this run's api stage, running the Python ``code``."""
    labels = {
        manifests.RUN_LABEL: manifests.run_label(RUN_ID),
        manifests.STAGE_LABEL: "api",
        manifests.SHARD_LABEL: shard,
    }
    return manifests.pod_manifest(
        name=name, argv=script(code), settings=settings, labels=labels, **kw
    )


def operator_process(
    tmp_path: Path, name: str, operator: dict[str, Any], env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    spec = tmp_path / f"{name}.json"
    spec.write_text(
        json.dumps({"operator": operator, "run_id": RUN_ID, "task_id": name, "map_index": -1})
    )
    return subprocess.Popen(
        [sys.executable, str(RUNNER), str(spec)],
        env=airflow_env(tmp_path / f"airflow-{name}", **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[dict[str, Any], str]:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, f"the operator run printed no result:\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return json.loads(line[len("RESULT ") :]), stdout + stderr


def run_operator(
    tmp_path: Path, name: str, operator: dict[str, Any], env: dict[str, str] | None = None
) -> tuple[dict[str, Any], str]:
    return finish(operator_process(tmp_path, name, operator, env))


def created_pods(kube) -> list[dict[str, Any]]:
    return [c["body"] for c in kube.calls("POST") if c["path"].endswith("/pods")]


def test_a_pod_runs_its_command_and_its_log_comes_back(kube, kubeconfig, tmp_path) -> None:
    kube.add_secret(NAMESPACE, "loadgate-s3", {"secret_access_key": "not-in-the-spec"})
    settings = pod_settings.PodSettings(
        namespace=NAMESPACE,
        image="loadgate:test",
        service_account="loadgate-runner",
        node_selector={"node-pool": "load"},
        tolerations=[{"key": "dedicated", "value": "load", "effect": "NoSchedule"}],
        secret_env={"S3_SECRET": {"secret": "loadgate-s3", "key": "secret_access_key"}},
    )
    label = manifests.run_label(RUN_ID)
    code = (
        "import os, time\n"
        "print('secret of', len(os.environ['S3_SECRET']), 'characters', flush=True)\n"
        "for i in range(3):\n"
        "    print(f'shard says {i}', flush=True)\n    time.sleep(0.2)"
    )
    pod = shard_pod(
        "loadgate-api-0",
        code,
        shard="0",
        settings=settings,
        resources={"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}},
        active_deadline_s=600,
    )

    result, output = run_operator(tmp_path, "api_load_test", operator_args(kubeconfig, pod))

    assert result["ok"], output[-5000:]
    assert "[base] secret of 15 characters" in output
    for i in range(3):
        assert f"[base] shard says {i}" in output
    assert result["xcom"]["pod_namespace"] == NAMESPACE
    assert result["xcom"]["pod_name"].startswith("loadgate-api-0-")
    assert kube.pods(NAMESPACE) == []  # a succeeded pod is deleted
    (sent,) = created_pods(kube)
    # the operator kept our pod whole (and added its own labels)
    spec, container = sent["spec"], sent["spec"]["containers"][0]
    assert container["command"] + container["args"] == script(code)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert {v["name"] for v in spec["volumes"]} == {"tmp", "results"}
    assert spec["serviceAccountName"] == "loadgate-runner"
    assert spec["nodeSelector"] == {"node-pool": "load"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["automountServiceAccountToken"] is False
    assert sent["metadata"]["labels"][manifests.RUN_LABEL] == label
    assert sent["metadata"]["labels"]["task_id"] == "api_load_test"
    assert manifests.secret_findings(sent, known_secrets=["not-in-the-spec"]) == []
    for version in ("1.29", "1.30", "1.31", "1.32", "1.33"):
        kubernetes_validate.validate(sent, version, strict=True)
    follow = [c for c in kube.calls("GET") if c["path"].endswith("/log")]
    assert follow and follow[0]["query"]["follow"] == "True"
    assert follow[0]["query"]["timestamps"] == "True"
    assert follow[0]["query"]["container"] == "base"


def test_a_failing_command_fails_the_task_and_keeps_the_pod(kube, kubeconfig, tmp_path) -> None:
    label = manifests.run_label(RUN_ID)
    code = "print('criterion breached: aborting', flush=True)\nraise SystemExit(3)"
    pod = shard_pod("loadgate-api-1", code, shard="1")

    result, output = run_operator(tmp_path, "api_load_test", operator_args(kubeconfig, pod))

    assert not result["ok"]
    assert result["kind"] == "AirflowException" and "returned a failure" in result["error"]
    assert "criterion breached: aborting" in result["error"]  # FallbackToLogsOnError
    assert "[base] criterion breached: aborting" in output
    (kept,) = kube.pods(NAMESPACE)  # kept for debugging, marked as already handled
    assert kept["status"]["phase"] == "Failed"
    assert kept["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert kept["metadata"]["labels"]["already_checked"] == "True"
    # the run's cleanup task deletes it by label
    from kubernetes import client

    core = client.CoreV1Api(kube.client(NAMESPACE))
    assert k8s_pods.delete_run_pods(core, NAMESPACE, label, wait_s=5) == [kept["metadata"]["name"]]
    assert kube.pods(NAMESPACE) == []


def test_exit_codes_can_be_skips(kube, kubeconfig, tmp_path) -> None:
    pod = manifests.pod_manifest(
        name="skip", argv=script("raise SystemExit(99)"), settings=SETTINGS, labels={}
    )
    operator = operator_args(kubeconfig, pod, skip_on_exit_code=99)
    result, _ = run_operator(tmp_path, "skipper", operator)
    assert result["kind"] == "AirflowSkipException"


def test_the_airflow_connection_points_the_operator_at_the_server(
    kube, kubeconfig, tmp_path
) -> None:
    """``AIRFLOW_CONN_KUBERNETES_DEFAULT`` with extra ``kube_config_path``: no operator argument
    names the cluster."""
    pod = manifests.pod_manifest(
        name="via-conn",
        argv=script("print('through the connection')"),
        settings=SETTINGS,
        labels={},
    )
    operator = operator_args(None, pod)
    result, output = run_operator(
        tmp_path, "conn", operator, env=kube.airflow_connection_env(kubeconfig)
    )
    assert result["ok"], output[-5000:]
    assert "[base] through the connection" in output


def test_a_missing_secret_fails_the_start_within_the_timeout(kube, kubeconfig, tmp_path) -> None:
    settings = pod_settings.PodSettings(
        namespace=NAMESPACE, secret_env={"S3_KEY": {"secret": "absent", "key": "k"}}
    )
    pod = manifests.pod_manifest(name="nosecret", argv=script("pass"), settings=settings, labels={})
    operator = operator_args(kubeconfig, pod, startup_timeout_seconds=2)
    started = time.monotonic()
    result, output = run_operator(tmp_path, "nosecret", operator)
    assert not result["ok"], output[-3000:]
    assert "PodLaunchTimeoutException: Pod took too long to start" in output
    assert time.monotonic() - started < 60
    # the container state and the pod's events say why, in the task log
    assert "reason='CreateContainerConfigError'" in output
    assert 'Pod Event: Failed - Error: secret "absent" not found' in output
    assert [p["status"]["phase"] for p in kube.pods(NAMESPACE)] == ["Pending"]


def test_a_killed_task_leaves_a_pod_that_the_run_cleanup_deletes(
    kube, kubeconfig, tmp_path
) -> None:
    """The worker dies (SIGKILL: no on_kill) while the shard runs: the pod and its process go
    on until the run's cleanup deletes every pod of the run by label."""
    label = manifests.run_label(RUN_ID)
    code = "import time\nprint('generating load', flush=True)\ntime.sleep(120)"
    pod = shard_pod("loadgate-api-0", code, shard="0")
    proc = operator_process(tmp_path, "api_load_test", operator_args(kubeconfig, pod))
    try:
        assert kube.wait_for(
            lambda: any(
                "generating load" in kube.pod_log(NAMESPACE, p["metadata"]["name"])
                for p in kube.pods(NAMESPACE)
            ),
            timeout=60,
        )
    finally:
        proc.kill()
        proc.communicate()
    (orphan,) = kube.pods(NAMESPACE)
    assert orphan["status"]["phase"] == "Running"
    pid = int(orphan["status"]["containerStatuses"][0]["containerID"].removeprefix("fake://"))

    from kubernetes import client

    core = client.CoreV1Api(kube.client(NAMESPACE))
    deleted = k8s_pods.delete_run_pods(core, NAMESPACE, label, wait_s=10, poll_s=0.1)

    assert deleted == [orphan["metadata"]["name"]]
    assert kube.pods(NAMESPACE) == []
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"


# --- the real engine in pods ------------------------------------------------------------------


def tiny_plan(path: Path, shards: int = 2, duration: str = "2s") -> Path:
    probe = scenario("constant-vus", options={"path": "/healthz"}, vus=2, duration=duration)
    plan = one_stage_plan(
        {"probe": probe},
        name="tiny",
        stage="api",
        shards=shards,
        resources={
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
    )
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def test_loadgate_run_stage_in_two_pods_against_the_reference_service(
    kube, kubeconfig, start_syncbridge, tmp_path
) -> None:
    """Two shards of a stage, each a pod of its own, each the local backend's command line."""
    svc = start_syncbridge(tmp_path / "svc")
    config = RunConfig(
        profile="kpo",
        target_url=svc.url,
        plan=str(tiny_plan(tmp_path / "tiny.yaml")),
        stages=["api"],
        artifacts_root=str(tmp_path / "artifacts"),
    )
    run = Run({"run_id": RUN_ID, "config": config.model_dump(mode="json")})
    pods = manifests.stage_pods(run, "api", SETTINGS)
    assert len(pods) == 2
    procs = [
        operator_process(
            tmp_path,
            f"api_load_test_{i}",
            operator_args(kubeconfig, pod),
        )
        for i, pod in enumerate(pods)
    ]
    results = [finish(proc) for proc in procs]

    for result, output in results:
        assert result["ok"], output[-6000:]
    for i in range(2):
        shard = Path(str(run.artifacts.path("stages", "api", f"shard-{i}")))
        meta = json.loads((shard / "meta.json").read_text())
        assert meta, shard
        assert (shard / "windows.jsonl").stat().st_size > 0
    assert kube.pods(NAMESPACE) == []
    for _, output in results:  # the engine's own summary, in each task's log
        assert "[base]   stage api · plan tiny" in output
        assert "· completed" in output


def test_a_task_killed_from_the_ui_deletes_its_pod_and_the_shard_stops_gracefully(
    kube, kubeconfig, start_syncbridge, tmp_path
) -> None:
    """SIGTERM to the task (marked failed from the UI): the operator's on_kill deletes the pod,
    the pod's SIGTERM stops the engine within its grace, and the results are all written."""
    svc = start_syncbridge(tmp_path / "svc")
    config = RunConfig(
        profile="kpo",
        target_url=svc.url,
        plan=str(tiny_plan(tmp_path / "tiny.yaml", shards=1, duration="120s")),
        stages=["api"],
        artifacts_root=str(tmp_path / "artifacts"),
    )
    run = Run({"run_id": RUN_ID, "config": config.model_dump(mode="json")})
    (pod,) = manifests.stage_pods(run, "api", SETTINGS)
    shard = Path(str(run.artifacts.path("stages", "api", "shard-0")))
    proc = operator_process(tmp_path, "api_load_test_0", operator_args(kubeconfig, pod))
    try:
        # load is flowing: the shard has written its first windows
        windows = shard / "windows.jsonl"
        assert kube.wait_for(lambda: windows.exists() and windows.stat().st_size > 0, timeout=90)
        (running,) = kube.pods(NAMESPACE)
        pid = int(running["status"]["containerStatuses"][0]["containerID"].removeprefix("fake://"))
        killed_at = time.monotonic()
        proc.terminate()
        assert kube.wait_for(lambda: kube.pods(NAMESPACE) == [], timeout=60)
        gone_after = time.monotonic() - killed_at
    finally:
        result, output = finish(proc, timeout=60)  # kills it if it hangs on

    assert kube.calls("DELETE", contains=f"/pods/{pod['metadata']['name']}"), "no on_kill delete"
    # the engine stopped on the pod's SIGTERM (term grace 10 s), well inside the pod's 30 s
    assert gone_after < 25, gone_after
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"
    meta = json.loads((shard / "meta.json").read_text())
    assert meta["status"] == "terminated", meta
    summary = loadgate("summarize", "--json", str(shard))
    assert summary.returncode == 0, summary.stderr
    merged = json.loads(summary.stdout)
    assert merged["requests"] > 0 and merged["failed"] == 0
    assert "[base]" in output  # the pod's log reached the task log until the pod went
    assert not result["ok"], result
