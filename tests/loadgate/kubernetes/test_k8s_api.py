"""The test Kubernetes API server, through the real ``kubernetes`` client: the calls the
KubernetesPodOperator and ``loadgate.kubernetes`` make answer as a real API server does, and
each pod's command runs as a local process that deleting the pod ends."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pendulum
import pytest
import requests
from kubernetes.client.exceptions import ApiException

from tests.support.k8s import FakeKubeAPI, parse_label_selector

from .conftest import NAMESPACE


def pod(name: str, code: str, *, labels: dict[str, str] | None = None, **container: Any) -> dict:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "base",
                    "image": "busybox",
                    "command": [sys.executable, "-c", code],
                    **container,
                }
            ],
        },
    }


def log_text(core: Any, name: str, **kw: Any) -> str:
    """A pod's log as text (the client's own decoding of a ``str`` answer gives "b'…'")."""
    response = core.read_namespaced_pod_log(name, NAMESPACE, _preload_content=False, **kw)
    return response.data.decode()


def wait_phase(core: Any, name: str, phases: tuple[str, ...], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        remote = core.read_namespaced_pod(name, NAMESPACE)
        if remote.status.phase in phases or time.monotonic() > deadline:
            return remote
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie not yet reaped still answers; its state says it is gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_pod_runs_its_command_and_ends_succeeded(core) -> None:
    created = core.create_namespaced_pod(NAMESPACE, pod("ok", "print('hello from the pod')"))
    assert created.metadata.uid and created.metadata.namespace == NAMESPACE
    remote = wait_phase(core, "ok", ("Succeeded", "Failed"))
    assert remote.status.phase == "Succeeded"
    (status,) = remote.status.container_statuses
    assert status.name == "base"
    assert status.state.terminated.exit_code == 0
    assert status.state.terminated.reason == "Completed"
    assert status.state.terminated.finished_at.tzinfo is not None
    text = log_text(core, "ok", container="base")
    assert text == "hello from the pod\n"


def test_exit_code_and_reason_of_a_failed_container(core) -> None:
    core.create_namespaced_pod(NAMESPACE, pod("bad", "import sys; print('boom'); sys.exit(3)"))
    remote = wait_phase(core, "bad", ("Succeeded", "Failed"))
    assert remote.status.phase == "Failed"
    terminated = remote.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")


def test_fallback_to_logs_on_error_gives_the_termination_message(core) -> None:
    code = "import sys; print('the reason it failed'); sys.exit(2)"
    core.create_namespaced_pod(
        NAMESPACE, pod("msg", code, terminationMessagePolicy="FallbackToLogsOnError")
    )
    remote = wait_phase(core, "msg", ("Failed",))
    assert "the reason it failed" in remote.status.container_statuses[0].state.terminated.message


def test_a_program_that_does_not_exist_is_a_start_error(core) -> None:
    manifest = pod("nope", "")
    manifest["spec"]["containers"][0]["command"] = ["/nonexistent/program"]
    core.create_namespaced_pod(NAMESPACE, manifest)
    remote = wait_phase(core, "nope", ("Failed",))
    terminated = remote.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (128, "StartError")


def test_env_from_the_spec_secrets_and_downward_api(kube, core) -> None:
    kube.add_secret(NAMESPACE, "creds", {"token": "s3cr3t"})
    code = (
        "import os; print(os.environ['PLAIN'], os.environ['TOKEN'], os.environ['POD'], "
        "os.environ['EXPANDED'])"
    )
    manifest = pod(
        "env",
        code,
        env=[
            {"name": "PLAIN", "value": "plain"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "EXPANDED", "value": "$(PLAIN)-x"},
        ],
    )
    core.create_namespaced_pod(NAMESPACE, manifest)
    wait_phase(core, "env", ("Succeeded", "Failed"))
    assert log_text(core, "env") == "plain s3cr3t env plain-x\n"


def test_a_missing_secret_keeps_the_container_waiting(core) -> None:
    manifest = pod(
        "nosecret",
        "print(1)",
        env=[{"name": "T", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}],
    )
    core.create_namespaced_pod(NAMESPACE, manifest)
    remote = core.read_namespaced_pod("nosecret", NAMESPACE)
    assert remote.status.phase == "Pending"
    assert remote.status.container_statuses[0].state.waiting.reason == (
        "CreateContainerConfigError"
    )
    with pytest.raises(ApiException) as err:
        log_text(core, "nosecret", container="base")
    assert err.value.status == 400 and "waiting to start" in err.value.body


def test_pending_before_scheduling(tmp_path: Path) -> None:
    with FakeKubeAPI(pending_s=0.6) as slow:
        from kubernetes import client

        core = client.CoreV1Api(slow.client(NAMESPACE))
        core.create_namespaced_pod(NAMESPACE, pod("later", "print('up')"))
        early = core.read_namespaced_pod("later", NAMESPACE)
        assert early.status.phase == "Pending" and not early.status.conditions
        remote = wait_phase(core, "later", ("Succeeded",))
        assert {c.type: c.status for c in remote.status.conditions}["PodScheduled"] == "True"
        reasons = [
            e.reason
            for e in core.list_namespaced_event(
                NAMESPACE, field_selector="involvedObject.name=later"
            ).items
        ]
        assert reasons[:1] == ["Scheduled"] and "Started" in reasons


def test_follow_streams_lines_as_they_are_written_with_timestamps(core) -> None:
    code = "import time\nfor i in range(4):\n    print('line', i, flush=True)\n    time.sleep(0.3)"
    core.create_namespaced_pod(NAMESPACE, pod("stream", code))
    response = core.read_namespaced_pod_log(
        "stream",
        NAMESPACE,
        container="base",
        follow=True,
        timestamps=True,
        _preload_content=False,
    )
    arrivals = []
    for chunk in response.stream(amt=None, decode_content=True):
        for raw in chunk.decode().splitlines():
            arrivals.append((time.monotonic(), raw))
    assert [raw.split(" ", 1)[1] for _, raw in arrivals] == [f"line {i}" for i in range(4)]
    # the first line came while the process still ran, not all at the end
    assert arrivals[-1][0] - arrivals[0][0] > 0.6
    stamp = pendulum.parse(arrivals[0][1].split(" ", 1)[0])
    assert abs((pendulum.now("UTC") - stamp).total_seconds()) < 30


def test_log_filters_since_and_tail(core) -> None:
    code = "import time\nprint('old', flush=True)\ntime.sleep(1.5)\nprint('new', flush=True)"
    core.create_namespaced_pod(NAMESPACE, pod("since", code))
    wait_phase(core, "since", ("Succeeded",))
    assert log_text(core, "since", since_seconds=1) == "new\n"
    assert log_text(core, "since", tail_lines=1) == "new\n"
    assert log_text(core, "since") == "old\nnew\n"


def test_label_and_field_selectors(core) -> None:
    core.create_namespaced_pod(NAMESPACE, pod("a", "pass", labels={"run": "1", "stage": "api"}))
    core.create_namespaced_pod(NAMESPACE, pod("b", "pass", labels={"run": "1", "stage": "ws"}))
    core.create_namespaced_pod(NAMESPACE, pod("c", "pass", labels={"run": "2", "checked": "True"}))

    def names(**kw: Any) -> list[str]:
        return sorted(p.metadata.name for p in core.list_namespaced_pod(NAMESPACE, **kw).items)

    assert names(label_selector="run=1") == ["a", "b"]
    assert names(label_selector="run=1,stage!=api") == ["b"]
    assert names(label_selector="checked!=True,!airflow-worker") == ["a", "b"]
    assert names(label_selector="stage in (api, ws),run notin (2)") == ["a", "b"]
    assert names(label_selector="checked") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces().items] == ["a", "b", "c"]
    assert parse_label_selector("a==1") == [("a", "in", {"1"})]


def test_patch_labels_as_the_operator_does(core) -> None:
    core.create_namespaced_pod(NAMESPACE, pod("p", "pass", labels={"x": "1"}))
    core.patch_namespaced_pod("p", NAMESPACE, {"metadata": {"labels": {"already_checked": "True"}}})
    labels = core.read_namespaced_pod("p", NAMESPACE).metadata.labels
    assert labels == {"x": "1", "already_checked": "True"}
    core.patch_namespaced_pod("p", NAMESPACE, [{"op": "remove", "path": "/metadata/labels/x"}])
    assert core.read_namespaced_pod("p", NAMESPACE).metadata.labels == {"already_checked": "True"}


def test_delete_terminates_the_process_tree(kube, core, tmp_path: Path) -> None:
    """SIGTERM to the pod's processes (a child too), then the pod is gone."""
    pids = tmp_path / "pids"
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    core.create_namespaced_pod(NAMESPACE, pod("long", code))
    assert kube.wait_for(lambda: pids.exists() and pids.read_text().count(" ") == 1)
    parent, child = map(int, pids.read_text().split())
    assert alive(parent) and alive(child)
    answer = core.delete_namespaced_pod("long", NAMESPACE)
    assert answer.metadata.deletion_timestamp is not None  # terminating, not gone yet
    assert kube.wait_for(lambda: not kube.pods(NAMESPACE), timeout=10)
    assert kube.wait_for(lambda: not alive(parent) and not alive(child), timeout=5)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("long", NAMESPACE)
    assert err.value.status == 404


def test_delete_kills_a_process_that_ignores_sigterm(kube, core) -> None:
    code = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\ntime.sleep(60)"
    )
    core.create_namespaced_pod(NAMESPACE, pod("stubborn", code))
    assert kube.wait_for(lambda: "up" in kube.pod_log(NAMESPACE, "stubborn"))
    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", NAMESPACE, grace_period_seconds=1)
    assert kube.wait_for(lambda: not kube.pods(NAMESPACE), timeout=10)
    assert 0.8 < time.monotonic() - started < 5


def test_delete_collection_by_label(kube, core) -> None:
    for name, run in (("a", "1"), ("b", "1"), ("c", "2")):
        core.create_namespaced_pod(
            NAMESPACE, pod(name, "import time; time.sleep(60)", labels={"run": run})
        )
    core.delete_collection_namespaced_pod(NAMESPACE, label_selector="run=1")
    assert kube.wait_for(lambda: [p["metadata"]["name"] for p in kube.pods()] == ["c"])


def test_errors_answer_with_status_objects(kube, core) -> None:
    core.create_namespaced_pod(NAMESPACE, pod("dup", "pass"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(NAMESPACE, pod("dup", "pass"))
    assert err.value.status == 409
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(NAMESPACE, pod("Bad_Name", "pass"))
    assert err.value.status == 422
    no_image = pod("noimage", "pass")
    del no_image["spec"]["containers"][0]["image"]
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(NAMESPACE, no_image)
    assert err.value.status == 422 and "image: Required value" in err.value.body
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_pod("absent", NAMESPACE)
    assert err.value.status == 404
    anonymous = requests.get(f"{kube.url}/api/v1/namespaces/{NAMESPACE}/pods", timeout=5)
    assert anonymous.status_code == 401 and anonymous.json()["kind"] == "Status"


def test_generate_name(core) -> None:
    manifest = pod("", "pass")
    manifest["metadata"] = {"generateName": "loadgate-api-"}
    created = core.create_namespaced_pod(NAMESPACE, manifest)
    assert created.metadata.name.startswith("loadgate-api-") and len(created.metadata.name) > 13


def test_stop_ends_every_process(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    server = FakeKubeAPI().start()
    try:
        from kubernetes import client

        core = client.CoreV1Api(server.client(NAMESPACE))
        core.create_namespaced_pod(NAMESPACE, pod("orphan", code))
        assert server.wait_for(lambda: pidfile.exists() and pidfile.read_text() != "")
        pid = int(pidfile.read_text())
        assert alive(pid)
    finally:
        server.stop()
    assert not alive(pid)


def test_kubeconfig_for_the_airflow_connection(kube, kubeconfig: Path) -> None:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    assert configuration.host == kube.url
    env = kube.airflow_connection_env(kubeconfig)
    assert list(env) == ["AIRFLOW_CONN_KUBERNETES_DEFAULT"]
    assert str(kubeconfig) in env["AIRFLOW_CONN_KUBERNETES_DEFAULT"]
    version = client.VersionApi(client.ApiClient(configuration)).get_code()
    assert version.major == "1"
