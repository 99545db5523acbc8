"""``loadgate.kubernetes`` against the test API server: every pod of a run deleted by label (its
processes ended), pod logs collected by selector, and ``kubectl rollout undo`` on a Deployment."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from loadgate.actions import kubernetes as rollout
from loadgate.backends.kubernetes import logs as k8s_logs
from loadgate.backends.kubernetes import manifests
from loadgate.backends.kubernetes import pods as k8s_pods
from loadgate.config import pods as pod_settings
from loadgate.kube import KubernetesError

from .conftest import NAMESPACE

SETTINGS = pod_settings.PodSettings(namespace=NAMESPACE)


def sleeper(name: str, run: str, *, stage: str = "api", shard: int = 0) -> dict[str, Any]:
    """A load pod as ``loadgate.kubernetes`` builds it, running a stand-in for the engine."""
    code = "import time\nprint('generating load', flush=True)\ntime.sleep(120)"
    return manifests.pod_manifest(
        name=name,
        argv=[sys.executable, "-c", code],
        settings=SETTINGS,
        labels={
            manifests.RUN_LABEL: run,
            manifests.STAGE_LABEL: stage,
            manifests.SHARD_LABEL: str(shard),
        },
    )


def test_delete_run_pods_deletes_every_pod_of_the_run_and_only_those(kube, core) -> None:
    mine, other = manifests.run_label("run-a"), manifests.run_label("run-b")
    for i, stage in enumerate(("api", "api", "websocket")):
        core.create_namespaced_pod(NAMESPACE, sleeper(f"mine-{i}", mine, stage=stage, shard=i))
    core.create_namespaced_pod(NAMESPACE, sleeper("other-0", other))
    assert kube.wait_for(
        lambda: all(
            "generating" in kube.pod_log(NAMESPACE, p["metadata"]["name"])
            for p in kube.pods(NAMESPACE)
        )
    )
    pids = {
        p["metadata"]["name"]: int(p["status"]["containerStatuses"][0]["containerID"][7:])
        for p in kube.pods(NAMESPACE)
    }

    deleted = k8s_pods.delete_run_pods(core, NAMESPACE, mine, wait_s=10, poll_s=0.1)

    assert sorted(deleted) == ["mine-0", "mine-1", "mine-2"]
    assert [p["metadata"]["name"] for p in kube.pods(NAMESPACE)] == ["other-0"]
    for name, pid in pids.items():
        gone = not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
        assert gone == name.startswith("mine"), name
    # a second cleanup (a retry, or the task after a killed one) finds nothing and is fine
    assert k8s_pods.delete_run_pods(core, NAMESPACE, mine) == []


def test_delete_run_pods_includes_finished_and_failed_pods(kube, core) -> None:
    label = manifests.run_label("run-c")
    for name, code in (("done", "pass"), ("failed", "raise SystemExit(3)")):
        manifest = manifests.pod_manifest(
            name=name,
            argv=[sys.executable, "-c", code],
            settings=SETTINGS,
            labels={manifests.RUN_LABEL: label},
        )
        core.create_namespaced_pod(NAMESPACE, manifest)
    assert kube.wait_for(
        lambda: {p["status"]["phase"] for p in kube.pods(NAMESPACE)} == {"Succeeded", "Failed"}
    )
    assert sorted(k8s_pods.delete_run_pods(core, NAMESPACE, label, wait_s=5)) == ["done", "failed"]
    assert kube.pods(NAMESPACE) == []


@pytest.mark.slow
def test_delete_run_pods_reports_pods_that_will_not_go(kube, core) -> None:
    label = manifests.run_label("run-d")
    code = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\ntime.sleep(60)"
    )
    manifest = manifests.pod_manifest(
        name="stubborn",
        argv=[sys.executable, "-c", code],
        settings=SETTINGS,
        labels={manifests.RUN_LABEL: label},
    )
    core.create_namespaced_pod(NAMESPACE, manifest)
    # deleted before it ignores SIGTERM (a slow start on a busy machine), it would just go
    assert kube.wait_for(lambda: "ignoring" in kube.pod_log(NAMESPACE, "stubborn"), timeout=30)
    with pytest.raises(KubernetesError, match="stubborn"):
        k8s_pods.delete_run_pods(core, NAMESPACE, label, wait_s=0.5, poll_s=0.1)
    assert kube.wait_for(lambda: not kube.pods(NAMESPACE), timeout=10)  # the grace period ends


def test_collect_pod_logs_by_selector(kube, core, tmp_path: Path) -> None:
    for i in range(2):
        manifest = {
            "metadata": {"name": f"syncbridge-{i}", "labels": {"app": "syncbridge"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "app",
                        "image": "syncbridge:v2",
                        "command": [sys.executable, "-c", f"print('replica {i} serving')"],
                    }
                ],
            },
        }
        core.create_namespaced_pod(NAMESPACE, manifest)
    two = {
        "metadata": {"name": "sidecars", "labels": {"app": "syncbridge"}},
        "spec": {
            "containers": [
                {"name": n, "image": "x", "command": [sys.executable, "-c", f"print('{n}')"]}
                for n in ("app", "proxy")
            ]
        },
    }
    core.create_namespaced_pod(NAMESPACE, two)
    core.create_namespaced_pod(NAMESPACE, sleeper("unrelated", "zzz"))
    assert kube.wait_for(
        lambda: all(
            p["status"]["phase"] == "Succeeded"
            for p in kube.pods(NAMESPACE)
            if p["metadata"]["labels"].get("app") == "syncbridge"
        )
    )

    entries = k8s_logs.collect_pod_logs(core, NAMESPACE, "app=syncbridge", tmp_path / "logs/target")

    files = sorted(p.name for p in (tmp_path / "logs/target").iterdir())
    assert files == [
        "sidecars.app.log",
        "sidecars.proxy.log",
        "syncbridge-0.log",
        "syncbridge-1.log",
    ]
    assert all("error" not in e for e in entries) and len(entries) == 4
    text = (tmp_path / "logs/target/syncbridge-1.log").read_text()
    timestamp, message = text.strip().split(" ", 1)
    assert message == "replica 1 serving" and timestamp.endswith("Z")


def test_collect_pod_logs_keeps_going_past_a_pod_it_cannot_read(kube, core, tmp_path) -> None:
    kube.add_secret(NAMESPACE, "unused", {})
    waiting = sleeper("waiting", "r")
    waiting["spec"]["containers"][0]["env"].append(
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}
    )
    core.create_namespaced_pod(NAMESPACE, waiting)
    core.create_namespaced_pod(NAMESPACE, sleeper("running", "r"))
    assert kube.wait_for(lambda: "generating" in kube.pod_log(NAMESPACE, "running"))
    entries = k8s_logs.collect_pod_logs(
        core, NAMESPACE, f"{manifests.RUN_LABEL}=r", tmp_path, max_bytes=10
    )
    by_pod = {e["pod"]: e for e in entries}
    assert "400" in by_pod["waiting"]["error"]
    assert by_pod["running"]["bytes"] == 10  # the last 10 bytes: the end of the log
    assert (tmp_path / "running.log").read_bytes() == b"generating load\n"[-10:]


# --- rollout undo ---------------------------------------------------------------------------


def deployment(name: str, image: str, replicas: int = 3) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "ports": [{"containerPort": 8080}]}
                    ]
                },
            },
        },
    }


def deploy(apps, name: str, image: str) -> None:
    """A new release: change the pod template's image (``kubectl set image``)."""
    dep = apps.read_namespaced_deployment(name, NAMESPACE)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
    apps.patch_namespaced_deployment(name, NAMESPACE, patch)
    assert apps.read_namespaced_deployment(name, NAMESPACE).metadata.generation > (
        dep.metadata.generation
    )


def image_of(apps, name: str) -> str:
    return apps.read_namespaced_deployment(name, NAMESPACE).spec.template.spec.containers[0].image


def test_rollout_undo_restores_the_previous_revision_and_waits(kube, apps) -> None:
    kube.create("apps/v1", "deployments", NAMESPACE, deployment("syncbridge", "syncbridge:v1"))
    deploy(apps, "syncbridge", "syncbridge:v2")
    assert [h["images"] for h in rollout.rollout_history(apps, NAMESPACE, "syncbridge")] == [
        ["syncbridge:v1"],
        ["syncbridge:v2"],
    ]
    kube.set_rollout(NAMESPACE, "syncbridge", seconds=1.0)
    started = time.monotonic()

    outcome = rollout.rollout_undo(apps, NAMESPACE, "syncbridge", timeout_s=10, poll_s=0.1)

    assert time.monotonic() - started >= 0.9  # it waited for the rollout
    assert image_of(apps, "syncbridge") == "syncbridge:v1"
    assert outcome["from_revision"] == 2 and outcome["to_revision"] == 1
    assert outcome["images_before"] == ["syncbridge:v2"]
    assert outcome["images_after"] == ["syncbridge:v1"]
    assert outcome["skipped"] is False
    assert outcome["rollout"]["updated"] == outcome["rollout"]["ready"] == 3
    # as on a real cluster, the restored ReplicaSet becomes revision 3
    history = rollout.rollout_history(apps, NAMESPACE, "syncbridge")
    assert [(h["revision"], h["images"]) for h in history] == [
        (2, ["syncbridge:v2"]),
        (3, ["syncbridge:v1"]),
    ]
    dep = apps.read_namespaced_deployment("syncbridge", NAMESPACE)
    assert dep.metadata.annotations[rollout.REVISION] == "3"
    assert "pod-template-hash" not in dep.spec.template.metadata.labels
    patches = kube.calls("PATCH", "/deployments/syncbridge")
    assert patches[-1]["content_type"] == "application/json-patch+json"
    assert [op["path"] for op in patches[-1]["body"]] == ["/spec/template", "/metadata/annotations"]


def test_rollout_undo_twice_goes_back_and_forth(kube, apps) -> None:
    """Like kubectl: undoing an undo restores the release that was undone."""
    kube.create("apps/v1", "deployments", NAMESPACE, deployment("svc", "svc:v1"))
    deploy(apps, "svc", "svc:v2")
    rollout.rollout_undo(apps, NAMESPACE, "svc", timeout_s=5, poll_s=0.05)
    assert image_of(apps, "svc") == "svc:v1"
    rollout.rollout_undo(apps, NAMESPACE, "svc", timeout_s=5, poll_s=0.05)
    assert image_of(apps, "svc") == "svc:v2"


def test_rollout_undo_to_a_given_revision(kube, apps) -> None:
    kube.create("apps/v1", "deployments", NAMESPACE, deployment("svc", "svc:v1"))
    deploy(apps, "svc", "svc:v2")
    deploy(apps, "svc", "svc:v3")
    outcome = rollout.rollout_undo(apps, NAMESPACE, "svc", to_revision=1, timeout_s=5, poll_s=0.05)
    assert outcome["to_revision"] == 1 and image_of(apps, "svc") == "svc:v1"
    with pytest.raises(rollout.RolloutError, match="revision 9"):
        rollout.rollout_undo(apps, NAMESPACE, "svc", to_revision=9, timeout_s=5)


def test_rollout_undo_needs_a_previous_revision(kube, apps) -> None:
    kube.create("apps/v1", "deployments", NAMESPACE, deployment("fresh", "fresh:v1"))
    with pytest.raises(rollout.RolloutError, match="no rollout history"):
        rollout.rollout_undo(apps, NAMESPACE, "fresh", timeout_s=5)
    with pytest.raises(rollout.RolloutError, match="no rollout history"):
        rollout.check_rollout_undo(apps, NAMESPACE, "fresh")
    deploy(apps, "fresh", "fresh:v2")
    evidence = rollout.check_rollout_undo(apps, NAMESPACE, "fresh")
    assert "revision 1" in evidence and "fresh:v1" in evidence


def test_rollout_undo_refuses_a_paused_deployment(kube, apps) -> None:
    kube.create("apps/v1", "deployments", NAMESPACE, deployment("paused", "p:v1"))
    deploy(apps, "paused", "p:v2")
    apps.patch_namespaced_deployment("paused", NAMESPACE, {"spec": {"paused": True}})
    with pytest.raises(rollout.RolloutError, match="paused"):
        rollout.rollout_undo(apps, NAMESPACE, "paused", timeout_s=5)
    assert image_of(apps, "paused") == "p:v2"


def test_a_rollout_that_does_not_complete_times_out(kube, apps) -> None:
    kube.create("apps/v1", "deployments", NAMESPACE, deployment("stuck", "s:v1"))
    deploy(apps, "stuck", "s:v2")
    kube.set_rollout(NAMESPACE, "stuck", stuck=True)
    started = time.monotonic()
    with pytest.raises(rollout.RolloutError, match="not complete after"):
        rollout.rollout_undo(apps, NAMESPACE, "stuck", timeout_s=1.0, poll_s=0.1)
    assert time.monotonic() - started < 3
    assert image_of(apps, "stuck") == "s:v1"  # the undo was applied; the rollout hangs


def test_progress_deadline_exceeded_fails_at_once(kube, apps) -> None:
    manifest = deployment("deadline", "d:v1")
    manifest["spec"]["progressDeadlineSeconds"] = 0
    kube.create("apps/v1", "deployments", NAMESPACE, manifest)
    deploy(apps, "deadline", "d:v2")
    kube.set_rollout(NAMESPACE, "deadline", stuck=True)
    with pytest.raises(rollout.RolloutError, match="progress deadline"):
        rollout.rollout_undo(apps, NAMESPACE, "deadline", timeout_s=30, poll_s=0.1)


def test_rollout_undo_skips_when_the_template_already_matches(kube, apps) -> None:
    kube.create("apps/v1", "deployments", NAMESPACE, deployment("same", "same:v1"))
    deploy(apps, "same", "same:v2")
    # a release that reverted by hand to v1's template: revision 3 is v1 again
    dep = apps.read_namespaced_deployment("same", NAMESPACE)
    template = apps.api_client.sanitize_for_serialization(dep.spec.template)
    template["spec"]["containers"][0]["image"] = "same:v1"
    apps.patch_namespaced_deployment(
        "same", NAMESPACE, [{"op": "replace", "path": "/spec/template", "value": template}]
    )
    outcome = rollout.rollout_undo(apps, NAMESPACE, "same", to_revision=3, timeout_s=5, poll_s=0.05)
    assert outcome["skipped"] is True and "already matches" in outcome["message"]


def test_only_replicasets_the_deployment_controls_count(kube, apps) -> None:
    kube.create("apps/v1", "deployments", NAMESPACE, deployment("owned", "o:v1"))
    deploy(apps, "owned", "o:v2")
    (current,) = [
        rs
        for rs in kube.objects("replicasets", NAMESPACE)
        if rs["spec"]["template"]["spec"]["containers"][0]["image"] == "o:v2"
    ]
    stray = copy.deepcopy(current)
    stray["metadata"] = {
        "name": "owned-stray",
        "labels": current["metadata"]["labels"],
        "annotations": {rollout.REVISION: "7"},
    }
    stray["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    kube.create("apps/v1", "replicasets", NAMESPACE, stray)
    outcome = rollout.rollout_undo(apps, NAMESPACE, "owned", timeout_s=5, poll_s=0.05)
    assert outcome["images_after"] == ["o:v1"]


def test_kubernetes_rollback_action_with_a_kubeconfig(kube, apps, kubeconfig: Path) -> None:
    kube.create("apps/v1", "deployments", NAMESPACE, deployment("syncbridge", "syncbridge:v1"))
    deploy(apps, "syncbridge", "syncbridge:v2")
    outcome = rollout.kubernetes_rollback(
        namespace=NAMESPACE,
        deployment="syncbridge",
        kube_config=str(kubeconfig),
        timeout_s=10,
        poll_s=0.1,
    )
    assert outcome["images_after"] == ["syncbridge:v1"]
    assert image_of(apps, "syncbridge") == "syncbridge:v1"
