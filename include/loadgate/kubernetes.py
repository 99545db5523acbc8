"""The Kubernetes backend's core, without Airflow: shard pods, their cleanup and logs, and the
``kubernetes`` rollback action (what ``kubectl rollout undo deployment/NAME`` does).

Pods are built as plain manifests (dicts in the API's camelCase JSON form): they validate against
the Kubernetes schemas as they are, travel through XCom (the KubernetesPodOperator takes one as
``pod_template_dict``) and need no client library to build. A pod runs exactly the command the
local backend runs (``loadgate`` + :func:`loadgate.local_backend.engine_argv`), in the single
container ``base`` (the operator's name for the container it follows), as a non-root user on a
read-only root filesystem with emptyDir volumes for ``/tmp`` and the results folder. No secret
value is ever put in a pod: credentials come from Kubernetes Secrets (``secretKeyRef`` env,
``envFrom``, or a Secret volume); a plain env value under a secret-looking name is refused.

With the run root on S3 (``artifacts_root`` ``s3://…``) a pod needs no shared volume: its
``--out``, ``--users`` and the stage's abort marker are ``s3://`` URLs, the engine writes its
results to the pod's own results emptyDir (``LOADGATE_RESULTS_DIR``) and ships them from there,
and the AWS credentials come from a Secret by reference (``secret_env`` ``AWS_ACCESS_KEY_ID``
and ``AWS_SECRET_ACCESS_KEY``, or ``env_from_secrets``) or from the service account (IRSA, EKS
Pod Identity); ``env`` may carry ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL``. A local run
root works only where the pods see the same path (the test API server runs pods as local
processes).

The functions that talk to the API take the ``kubernetes`` client's API objects (``CoreV1Api``,
``AppsV1Api``), so the caller decides where they come from: the Airflow connection's hook in a
task, :func:`connect` elsewhere. The ``kubernetes`` package is imported lazily, only there.

Every pod of one DAG run carries ``loadgate/run=<run label>`` (:func:`run_label`, stable for the
run), so one call deletes all of them (:func:`delete_run_pods`) however the tasks ended.

Every call to the API server has a deadline (:data:`API_TIMEOUT`, the client's
``_request_timeout``): an API server that accepts a connection and never answers fails the
call instead of holding the task until Airflow kills it. A container's log is streamed and only
its last ``max_bytes`` are kept in memory, for at most :data:`LOG_READ_S` seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from loadgate.pipeline import Run

APP = "loadgate"
APP_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
RUN_LABEL = "loadgate/run"
STAGE_LABEL = "loadgate/stage"
SHARD_LABEL = "loadgate/shard"
KEY_LABEL = "loadgate/key"
RUN_ID_ANNOTATION = "loadgate/run-id"
CONTAINER = "base"  # the KubernetesPodOperator's base_container_name: the one it follows
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"

_SECRET_NAME = re.compile(
    r"(TOKEN|PASSW|SECRET|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL|AUTH|SESSION_?KEY|COOKIE)",
    re.IGNORECASE,
)
_SECRET_FLAG = re.compile(r"^--?[\w-]*(token|passw|secret|api-?key|credential)[\w-]*(=|$)", re.I)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# (connect, read) seconds for every API call: the read timeout bounds each wait for bytes
API_TIMEOUT: tuple[float, float] = (10.0, 60.0)
LOG_READ_S = 120.0  # at most this long reading one container's log (a log still growing)
LOG_CHUNK = 64 * 1024


class KubernetesError(RuntimeError):
    """Something the Kubernetes backend cannot do; the message says what and why."""


class RolloutError(KubernetesError):
    """A rollback (rollout undo) that could not be done or did not complete in time."""


# --- settings -------------------------------------------------------------------------------------


class SecretKeyRef(BaseModel):
    """One key of a Kubernetes Secret, given to the container as an environment variable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: str
    key: str
    optional: bool = False


class SecretVolume(BaseModel):
    """A Kubernetes Secret mounted read-only as files (mode 0400 by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: str
    mount_path: str
    default_mode: int = Field(default=0o400, ge=0, le=0o777)
    optional: bool = False

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.operator == "Equal" and not self.key:
            raise ValueError("a toleration with operator Equal needs a key")
        return self

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        for name, key in (("key", "key"), ("value", "value"), ("effect", "effect")):
            if getattr(self, name) is not None:
                out[key] = getattr(self, name)
        if self.toleration_seconds is not None:
            out["tolerationSeconds"] = self.toleration_seconds
        return out


class PodSettings(BaseModel):
    """Where and how the load pods run; an SRE's configuration, not a run's parameter.

    Resources come from the plan's stage (``resources``: requests and limits of one shard);
    ``default_resources`` applies to a stage that has none.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = "loadgate"
    image: str = "loadgate:latest"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    service_account: str | None = None
    automount_service_account_token: bool = False
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class: str | None = None
    spread_shards: bool = True
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict, description="plain, non-secret values")
    secret_env: dict[str, SecretKeyRef] = Field(default_factory=dict)
    env_from_secrets: list[str] = Field(default_factory=list)
    secret_volumes: list[SecretVolume] = Field(default_factory=list)
    results_dir: str = "/var/lib/loadgate"
    tmp_size_limit: str = "256Mi"
    results_size_limit: str = "1Gi"
    run_as_user: int = Field(default=10001, ge=1)
    run_as_group: int = Field(default=10001, ge=1)
    default_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "1", "memory": "512Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        }
    )
    deadline_margin_s: int = Field(
        default=600, ge=0, description="activeDeadlineSeconds = the stage's length + this"
    )
    termination_grace_s: int = Field(default=30, ge=0)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid namespace name")
        return value

    @field_validator("env")
    @classmethod
    def _no_plain_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if _SECRET_NAME.search(name):
                raise ValueError(
                    f"env {name} looks like a credential: give it as secret_env "
                    "(a Kubernetes Secret key), never as a plain value in the pod spec"
                )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            _check_label(key, label)
        return value

    @field_validator("results_dir")
    @classmethod
    def _results_dir(cls, value: str) -> str:
        if not value.startswith("/") or value.rstrip("/") in ("", "/tmp"):
            raise ValueError("must be an absolute path other than / and /tmp")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _distinct_env(self) -> PodSettings:
        both = set(self.env) & set(self.secret_env)
        if both:
            raise ValueError(f"env and secret_env both set {', '.join(sorted(both))}")
        return self


def _check_label(key: str, value: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(f"label {key}={value!r} is not a valid label value")


# --- names and labels -------------------------------------------------------------------------


def run_label(run_id: str) -> str:
    """The ``loadgate/run`` label of every pod of one DAG run: short, stable, label-safe.

    The first 8 characters are those of the engine's run key
    (:func:`loadgate.local_backend.run_key`), so the engine's ids point back to the run.
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
        out["requests"] = dict(resources.requests)
    if resources.limits:
        out["limits"] = dict(resources.limits)
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
        _check_label(key, value)
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

    ``key`` is the stage execution's engine run key (:func:`loadgate.local_backend.run_key`),
    the same for every shard of one execution. ``out`` defaults to the shard's folder under the
    run root, as the local backend uses (``attempt`` 2: the re-run's folder).
    """
    from loadgate.local_backend import engine_argv
    from loadgate.pipeline import stage_folder

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
    from loadgate.local_backend import run_key

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
    return api._ApiClient__deserialize_model(dict(manifest), client.V1Pod)  # type: ignore[attr-defined]


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


# --- pods through the API ---------------------------------------------------------------------


def _status_of(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


def delete_run_pods(
    api: Any,
    namespace: str,
    run_label: str,
    *,
    grace_period_s: int | None = None,
    wait_s: float = 0.0,
    poll_s: float = 0.5,
) -> list[str]:
    """Delete every load pod of one run (by label); the names of the pods deleted.

    ``api`` is a ``CoreV1Api``. Pods already gone are fine (another cleanup got there first).
    With ``wait_s`` > 0, wait until none is left (their processes have ended), and raise
    :class:`KubernetesError` if some still are after that long.
    """
    selector = f"{APP_LABEL}={APP},{RUN_LABEL}={run_label}"
    pods = api.list_namespaced_pod(
        namespace, label_selector=selector, _request_timeout=API_TIMEOUT
    ).items
    deleted = []
    for pod in pods:
        kwargs: dict[str, Any] = {}
        if grace_period_s is not None:
            kwargs["grace_period_seconds"] = grace_period_s
        try:
            api.delete_namespaced_pod(
                pod.metadata.name, namespace, _request_timeout=API_TIMEOUT, **kwargs
            )
            deleted.append(pod.metadata.name)
        except Exception as exc:
            if _status_of(exc) != 404:
                raise
    if wait_s > 0:
        deadline = time.monotonic() + wait_s
        while True:
            left = api.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=API_TIMEOUT
            ).items
            if not left:
                break
            if time.monotonic() >= deadline:
                names = ", ".join(p.metadata.name for p in left)
                raise KubernetesError(f"pods still terminating after {wait_s:g} s: {names}")
            time.sleep(poll_s)
    return deleted


def collect_pod_logs(
    api: Any,
    namespace: str,
    selector: str,
    dest_dir: Any,
    *,
    max_bytes: int = 5_000_000,
) -> list[dict[str, Any]]:
    """Every container's log of the pods matching ``selector`` into ``dest_dir``.

    ``dest_dir`` is a local path or a UPath (``s3://…``). Files are ``<pod>.log`` (one container)
    or ``<pod>.<container>.log``, with the kubelet's timestamps; a container that restarted also
    gets ``….previous.log`` (what it wrote before it crashed). A log is streamed and kept to
    its last ``max_bytes`` (never more in memory), read for at most :data:`LOG_READ_S` seconds
    (``incomplete`` in its entry when it was still coming). Returns one entry per file (pod,
    container, path, bytes) or per failure (pod, container, error): a pod that cannot be read
    does not stop the others.
    """
    from upath import UPath

    dest = UPath(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    pods = api.list_namespaced_pod(
        namespace, label_selector=selector, _request_timeout=API_TIMEOUT
    ).items
    written: list[dict[str, Any]] = []
    for pod in pods:
        name = pod.metadata.name
        containers = [c.name for c in (pod.spec.containers or [])]
        restarts = (
            {s.name: s.restart_count or 0 for s in (pod.status.container_statuses or [])}
            if pod.status
            else {}
        )
        for container in containers:
            stem = name if len(containers) == 1 else f"{name}.{container}"
            reads = [(False, f"{stem}.log")]
            if restarts.get(container):
                reads.append((True, f"{stem}.previous.log"))
            for previous, filename in reads:
                entry: dict[str, Any] = {"pod": name, "container": container}
                try:
                    response = api.read_namespaced_pod_log(
                        name,
                        namespace,
                        container=container,
                        timestamps=True,
                        previous=previous,
                        _preload_content=False,
                        _request_timeout=API_TIMEOUT,
                    )
                    complete = False
                    try:
                        data, complete = read_tail(response, max_bytes, LOG_READ_S)
                    finally:
                        if not complete:  # the body is unfinished: never reuse its connection
                            response.close()
                        response.release_conn()
                except Exception as exc:
                    entry["error"] = f"{type(exc).__name__}: {_status_of(exc) or exc}"
                    written.append(entry)
                    continue
                target = dest / filename
                target.write_bytes(data)
                entry.update(path=str(target), bytes=len(data), previous=previous)
                if not complete:
                    entry["incomplete"] = True
                written.append(entry)
    return written


def read_tail(
    response: Any, max_bytes: int, max_seconds: float, *, chunk: int = LOG_CHUNK
) -> tuple[bytes, bool]:
    """The last ``max_bytes`` of a streamed HTTP body (a urllib3 response), read as it comes
    (``read1``: what has arrived, up to a chunk) so that no more than that and a chunk is ever
    held; reading stops after ``max_seconds`` (each wait for bytes is bounded by the request's
    read timeout). Returns (the bytes kept, whether the body was read to its end)."""
    kept = bytearray()
    deadline = time.monotonic() + max_seconds
    while True:
        piece = response.read1(chunk, decode_content=True)
        if not piece:
            return bytes(kept), True
        kept += piece
        if len(kept) > max_bytes:
            del kept[: len(kept) - max_bytes]
        if time.monotonic() >= deadline:
            return bytes(kept), False


# --- the rollback action: kubectl rollout undo ------------------------------------------------

_SKIP_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)


def _selector_text(selector: Any) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for expr in selector.match_expressions or []:
        if expr.operator in ("In", "NotIn"):
            parts.append(f"{expr.key} {expr.operator.lower()} ({','.join(expr.values or [])})")
        elif expr.operator == "Exists":
            parts.append(expr.key)
        else:
            parts.append(f"!{expr.key}")
    return ",".join(parts)


def _revision(obj: Any) -> int | None:
    try:
        return int((obj.metadata.annotations or {}).get(REVISION, ""))
    except ValueError:
        return None


def _template_dict(api_client: Any, template: Any) -> dict[str, Any]:
    data = api_client.sanitize_for_serialization(template)
    data.setdefault("metadata", {})
    labels = dict(data["metadata"].get("labels") or {})
    labels.pop(HASH_LABEL, None)
    data["metadata"]["labels"] = labels
    return data


def _images(template: dict[str, Any]) -> list[str]:
    return [c.get("image", "") for c in (template.get("spec") or {}).get("containers") or []]


def rollout_history(apps_api: Any, namespace: str, deployment: str) -> list[dict[str, Any]]:
    """The deployment's revisions, oldest first: revision, ReplicaSet, images, replicas."""
    dep = apps_api.read_namespaced_deployment(deployment, namespace, _request_timeout=API_TIMEOUT)
    return [
        {
            "revision": rev,
            "replicaset": rs.metadata.name,
            "images": [c.image for c in rs.spec.template.spec.containers],
            "replicas": rs.spec.replicas or 0,
        }
        for rev, rs in _owned_revisions(apps_api, dep)
    ]


def _owned_revisions(apps_api: Any, dep: Any) -> list[tuple[int, Any]]:
    """The deployment's ReplicaSets with a revision, as kubectl finds them (selector, then the
    controller owner reference), sorted by revision."""
    selector = _selector_text(dep.spec.selector)
    replica_sets = apps_api.list_namespaced_replica_set(
        dep.metadata.namespace, label_selector=selector, _request_timeout=API_TIMEOUT
    ).items
    owned = []
    for rs in replica_sets:
        refs = rs.metadata.owner_references or []
        if not any(r.controller and r.uid == dep.metadata.uid for r in refs):
            continue
        revision = _revision(rs)
        if revision is not None:
            owned.append((revision, rs))
    return sorted(owned, key=lambda pair: pair[0])


def check_rollout_undo(apps_api: Any, namespace: str, deployment: str) -> str:
    """Evidence that ``rollout undo`` can run (for the checklist); raises RolloutError if not."""
    dep = apps_api.read_namespaced_deployment(deployment, namespace, _request_timeout=API_TIMEOUT)
    if dep.spec.paused:
        raise RolloutError(f"deployment {deployment} is paused: it cannot be rolled back")
    revisions = _owned_revisions(apps_api, dep)
    if len(revisions) < 2:
        raise RolloutError(f"no rollout history found for deployment {deployment!r}")
    rev, rs = revisions[-2]
    images = ", ".join(c.image for c in rs.spec.template.spec.containers)
    return f"deployment {namespace}/{deployment} can go back to revision {rev} ({images})"


def rollout_status(dep: Any) -> tuple[bool, str]:
    """``kubectl rollout status``'s judgement of a deployment: (done, what it is waiting for).

    Raises RolloutError when the deployment has exceeded its progress deadline.
    """
    status = dep.status
    name = dep.metadata.name
    if (dep.metadata.generation or 0) > (status.observed_generation or 0):
        return False, "waiting for the deployment spec update to be observed"
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            raise RolloutError(f'deployment "{name}" exceeded its progress deadline')
    desired = dep.spec.replicas if dep.spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    if updated < desired:
        return False, f"{updated} of {desired} updated replicas are available"
    if (status.replicas or 0) > updated:
        return False, f"{(status.replicas or 0) - updated} old replicas are pending termination"
    if (status.available_replicas or 0) < updated:
        return False, f"{status.available_replicas or 0} of {updated} updated replicas available"
    return True, f'deployment "{name}" successfully rolled out'


def wait_for_rollout(
    apps_api: Any,
    namespace: str,
    deployment: str,
    *,
    timeout_s: float = 300.0,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the rollout is complete (updated = ready = desired, no old replica left)."""
    deadline = clock() + timeout_s
    while True:
        dep = apps_api.read_namespaced_deployment(
            deployment, namespace, _request_timeout=API_TIMEOUT
        )
        done, message = rollout_status(dep)
        if done:
            return _replicas(dep, message)
        if clock() >= deadline:
            raise RolloutError(
                f"rollout of {namespace}/{deployment} not complete after {timeout_s:g} s: {message}"
            )
        sleep(poll_s)


def _replicas(dep: Any, message: str) -> dict[str, Any]:
    status = dep.status
    return {
        "message": message,
        "desired": dep.spec.replicas if dep.spec.replicas is not None else 1,
        "updated": status.updated_replicas or 0,
        "ready": status.ready_replicas or 0,
        "available": status.available_replicas or 0,
    }


def rollout_undo(
    apps_api: Any,
    namespace: str,
    deployment: str,
    *,
    to_revision: int | None = None,
    timeout_s: float = 300.0,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """``kubectl rollout undo deployment/NAME [--to-revision=N]``, then wait for the rollout.

    As kubectl does: the deployment's ReplicaSets (by its selector and controller reference)
    give the revisions; the previous one (or ``to_revision``) is restored by a JSON patch that
    replaces ``spec.template`` with that ReplicaSet's template (without ``pod-template-hash``) and
    takes its annotations; the controller then rolls it out as a new revision. Then, as
    ``kubectl rollout status`` does, wait (at most ``timeout_s``) until every replica is updated
    and available and no old one is left.

    Returns what was done (no secret in it): ``from_revision``, ``to_revision``, ``images_before``,
    ``images_after``, ``skipped`` (the current template already was that revision), the rollout's
    replica counts and ``seconds``. Raises :class:`RolloutError` when there is nothing to roll
    back to, the deployment is paused, the patch is refused or the rollout does not complete.
    """
    started = clock()
    dep = apps_api.read_namespaced_deployment(deployment, namespace, _request_timeout=API_TIMEOUT)
    if dep.spec.paused:
        raise RolloutError(f"deployment {deployment} is paused: resume it before rolling it back")
    revisions = _owned_revisions(apps_api, dep)
    if to_revision:
        chosen = next((pair for pair in revisions if pair[0] == to_revision), None)
        if chosen is None:
            raise RolloutError(f"unable to find the specified revision {to_revision}")
    else:
        if len(revisions) < 2:
            raise RolloutError(f"no rollout history found for deployment {deployment!r}")
        chosen = revisions[-2]
    revision, rs = chosen
    api_client = apps_api.api_client
    current = _template_dict(api_client, dep.spec.template)
    target = _template_dict(api_client, rs.spec.template)
    outcome: dict[str, Any] = {
        "deployment": f"{namespace}/{deployment}",
        "from_revision": _revision(dep),
        "to_revision": revision,
        "replicaset": rs.metadata.name,
        "images_before": _images(current),
        "images_after": _images(target),
        "skipped": False,
    }
    if current == target:
        outcome["skipped"] = True
        outcome["message"] = (
            f"skipped rollback (current template already matches revision {revision})"
        )
    else:
        dep_annotations = dep.metadata.annotations or {}
        annotations = {k: v for k, v in dep_annotations.items() if k in _SKIP_ANNOTATIONS}
        annotations.update(
            {k: v for k, v in (rs.metadata.annotations or {}).items() if k not in _SKIP_ANNOTATIONS}
        )
        patch = [
            {"op": "replace", "path": "/spec/template", "value": target},
            {
                "op": "replace" if dep.metadata.annotations is not None else "add",
                "path": "/metadata/annotations",
                "value": annotations,
            },
        ]
        try:
            apps_api.patch_namespaced_deployment(
                deployment, namespace, patch, _request_timeout=API_TIMEOUT
            )
        except Exception as exc:
            raise RolloutError(
                f"failed restoring revision {revision} of {deployment}: "
                f"{_status_of(exc) or ''} {getattr(exc, 'reason', exc)}".strip()
            ) from exc
        outcome["message"] = f"deployment.apps/{deployment} rolled back"
    remaining = max(1.0, timeout_s - (clock() - started))
    outcome["rollout"] = wait_for_rollout(
        apps_api,
        namespace,
        deployment,
        timeout_s=remaining,
        poll_s=poll_s,
        clock=clock,
        sleep=sleep,
    )
    outcome["seconds"] = round(clock() - started, 2)
    return outcome


# --- clients ----------------------------------------------------------------------------------


@dataclass
class KubeAPIs:
    """The API objects this module's functions take."""

    client: Any
    core: Any
    apps: Any


def connect(
    kube_config: str | None = None, *, context: str | None = None, in_cluster: bool = False
) -> KubeAPIs:
    """Clients from a kubeconfig file (``None``: ``$KUBECONFIG`` or ``~/.kube/config``) or from
    the pod's service account (``in_cluster``)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=kube_config, context=context, client_configuration=configuration
        )
    api_client = client.ApiClient(configuration)
    return KubeAPIs(api_client, client.CoreV1Api(api_client), client.AppsV1Api(api_client))


def kubernetes_rollback(
    *,
    namespace: str,
    deployment: str,
    kube_config: str | None = None,
    context: str | None = None,
    in_cluster: bool = False,
    to_revision: int | None = None,
    timeout_s: float = 300.0,
    poll_s: float = 1.0,
) -> dict[str, Any]:
    """The ``kubernetes`` rollback action: :func:`rollout_undo` with clients from a kubeconfig
    (or in-cluster). Raises :class:`RolloutError`; the caller verifies the target's health."""
    apis = connect(kube_config, context=context, in_cluster=in_cluster)
    try:
        return rollout_undo(
            apis.apps,
            namespace,
            deployment,
            to_revision=to_revision,
            timeout_s=timeout_s,
            poll_s=poll_s,
        )
    finally:
        apis.client.close()
