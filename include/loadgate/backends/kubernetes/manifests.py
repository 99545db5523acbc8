"""Shard pods as plain manifests (dicts in the API's camelCase JSON form): they validate
against the Kubernetes schemas as they are, travel through XCom (the KubernetesPodOperator
takes one as ``pod_template_dict``) and need no client library to build. A pod runs exactly
the command the local backend runs (:func:`loadgate.backends.command.engine_argv`), as a
non-root user on a read-only root filesystem. No secret value is ever put in a pod."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loadgate.config.pods import _DNS_LABEL, _SECRET_NAME, PodSettings, check_label
from loadgate.kube import KubernetesError

if TYPE_CHECKING:
    from loadgate.run.folder import Run


APP = "loadgate"
APP_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
RUN_LABEL = "loadgate/run"
STAGE_LABEL = "loadgate/stage"
SHARD_LABEL = "loadgate/shard"
KEY_LABEL = "loadgate/key"
RUN_ID_ANNOTATION = "loadgate/run-id"
CONTAINER = "base"  # the KubernetesPodOperator's base_container_name: the one it follows
_SECRET_FLAG = re.compile(r"^--?[\w-]*(token|passw|secret|api-?key|credential)[\w-]*(=|$)", re.I)
# --- names and labels -------------------------------------------------------------------------


def run_label(run_id: str) -> str:
    """The ``loadgate/run`` label of every pod of one DAG run: short, stable, label-safe.

    The first 8 characters are those of the engine's run key
    (:func:`loadgate.backends.command.run_key`), so the engine's ids point back to the run.
    """
    return hashlib.sha1(run_id.encode()).hexdigest()[:16]


def run_selector(run_id: str) -> str:
    """The label selector of every load pod of one DAG run."""
    return f"{APP_LABEL}={APP},{RUN_LABEL}={run_label(run_id)}"


def _pod_name(stage: str, label: str, shard: int, attempt: int = 1) -> str:
    stage_part = re.sub(r"[^a-z0-9-]+", "-", stage.lower()).strip("-")[:20] or "stage"
    again = "" if attempt == 1 else f"-a{attempt}"
    return f"loadgate-{stage_part}-{label[:8]}{again}-{shard}"


# --- pods -----------------------------------------------------------------------------------------


def resources_for(run: Run, stage: str, settings: PodSettings) -> dict[str, dict[str, str]]:
    """The plan's requests and limits for one shard of ``stage`` (else the settings' default)."""
    resources = run.plan.stages[stage].resources
    if resources is None or not (resources.requests or resources.limits):
        return {k: dict(v) for k, v in settings.default_resources.items() if v}
    out: dict[str, dict[str, str]] = {}
    if resources.requests:
        out["requests"] = {str(k): v for k, v in resources.requests.items()}
    if resources.limits:
        out["limits"] = {str(k): v for k, v in resources.limits.items()}
    return out


def pod_manifest(
    *,
    name: str,
    argv: Sequence[str],
    settings: PodSettings,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    active_deadline_s: int | None = None,
    spread_on: str | None = None,
) -> dict[str, Any]:
    """One load pod: ``argv`` (program and arguments) in the container ``base``.

    The root filesystem is read-only; ``/tmp`` and ``settings.results_dir`` are emptyDir
    volumes. ``spread_on``: a label whose value the pods of one run share, to spread them over
    nodes (one load generator per node when the cluster allows).
    """
    if not argv:
        raise ValueError("a pod needs a command")
    if len(name) > 63 or not _DNS_LABEL.match(name):
        raise ValueError(f"{name!r} is not a valid pod name (a DNS-1123 label)")
    all_labels = {APP_LABEL: APP, COMPONENT_LABEL: "load-generator", **settings.labels, **labels}
    for key, value in all_labels.items():
        check_label(key, value)
    env: list[dict[str, Any]] = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "LOADGATE_RESULTS_DIR", "value": settings.results_dir},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    env += [{"name": k, "value": v} for k, v in sorted(settings.env.items())]
    for var, ref in sorted(settings.secret_env.items()):
        key_ref: dict[str, Any] = {"name": ref.secret, "key": ref.key}
        if ref.optional:
            key_ref["optional"] = True
        env.append({"name": var, "valueFrom": {"secretKeyRef": key_ref}})
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": settings.tmp_size_limit}},
        {"name": "results", "emptyDir": {"sizeLimit": settings.results_size_limit}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "results", "mountPath": settings.results_dir},
    ]
    for i, vol in enumerate(settings.secret_volumes):
        secret: dict[str, Any] = {"secretName": vol.secret, "defaultMode": vol.default_mode}
        if vol.optional:
            secret["optional"] = True
        volumes.append({"name": f"secret-{i}", "secret": secret})
        mounts.append({"name": f"secret-{i}", "mountPath": vol.mount_path, "readOnly": True})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [argv[0]],
        "args": list(argv[1:]),
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_group,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if settings.env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in settings.env_from_secrets]
    if resources:
        container["resources"] = {k: dict(v) for k, v in resources.items() if v}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": settings.automount_service_account_token,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_s,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_group,
            "fsGroup": settings.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = int(active_deadline_s)
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = [t.manifest() for t in settings.tolerations]
    if settings.priority_class:
        spec["priorityClassName"] = settings.priority_class
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    if settings.spread_shards and spread_on and spread_on in all_labels:
        spec["affinity"] = {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {spread_on: all_labels[spread_on]}},
                        },
                    }
                ]
            }
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": all_labels,
            "annotations": {**settings.annotations, **(annotations or {})},
        },
        "spec": spec,
    }


def shard_pod(
    run: Run,
    stage: str,
    shard: int,
    shards: int,
    *,
    key: str,
    settings: PodSettings,
    out: str | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    """The pod of shard ``shard``/``shards`` of ``stage``: the local backend's command line.

    ``key`` is the stage execution's engine run key (:func:`loadgate.backends.command.run_key`),
    the same for every shard of one execution. ``out`` defaults to the shard's folder under the
    run root, as the local backend uses (``attempt`` 2: the re-run's folder).
    """
    from loadgate.backends.command import engine_argv
    from loadgate.run.folder import stage_folder

    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    if out is None:
        out = str(stage_folder(run, stage, attempt) / f"shard-{shard}")
    argv = ["loadgate", *engine_argv(run, stage, shard, shards, out, key)]
    leaked = [a for a in argv if _SECRET_FLAG.match(a)]
    if leaked:
        raise KubernetesError(f"the engine command would carry a credential flag: {leaked}")
    label = run_label(run.run_id)
    duration = run.plan.stages[stage].duration * run.config.time_scale
    return pod_manifest(
        name=_pod_name(stage, label, shard, attempt),
        argv=argv,
        settings=settings,
        labels={
            RUN_LABEL: label,
            STAGE_LABEL: stage,
            SHARD_LABEL: str(shard),
            KEY_LABEL: key,
        },
        annotations={
            RUN_ID_ANNOTATION: run.run_id,
            "loadgate/shard-of": f"{shard}/{shards}",
            **({"loadgate/release": run.config.release} if run.config.release else {}),
        },
        resources=resources_for(run, stage, settings),
        active_deadline_s=math.ceil(duration) + settings.deadline_margin_s,
        spread_on=RUN_LABEL,
    )


def stage_pods(
    run: Run, stage: str, settings: PodSettings, *, key: str | None = None, attempt: int = 1
) -> list[dict[str, Any]]:
    """Every shard's pod of one execution of ``stage`` (one engine run key for all)."""
    from loadgate.backends.command import run_key

    key = key or run_key(run.run_id)
    shards = run.shards(stage)
    return [
        shard_pod(run, stage, i, shards, key=key, settings=settings, attempt=attempt)
        for i in range(shards)
    ]


def to_v1pod(manifest: Mapping[str, Any]) -> Any:
    """The manifest as a ``kubernetes.client.V1Pod`` (for ``full_pod_spec``)."""
    from kubernetes import client

    api = client.ApiClient(configuration=client.Configuration())
    return api._ApiClient__deserialize_model(dict(manifest), client.V1Pod)


def secret_findings(manifest: Any, known_secrets: Iterable[str] = ()) -> list[str]:
    """Why ``manifest`` (a pod, or anything JSON-like) may carry a secret; empty when clean.

    Flags plain env values under credential-like names, command-line flags that carry
    credentials, and any occurrence of a ``known_secrets`` value.
    """
    findings: list[str] = []
    text = json.dumps(manifest, sort_keys=True, default=str)
    for secret in known_secrets:
        if secret and secret in text:
            findings.append(f"a known secret value appears in the manifest ({secret[:2]}…)")

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "name" in node and "value" in node and _SECRET_NAME.search(str(node["name"])):
                findings.append(f"{path}: env {node['name']} has a plain value")
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                if isinstance(v, str) and _SECRET_FLAG.match(v):
                    findings.append(f"{path}[{i}]: command-line flag {v.split('=')[0]}")
                walk(v, f"{path}[{i}]")

    walk(manifest, "$")
    return findings
