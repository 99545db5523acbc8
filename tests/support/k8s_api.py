"""A test-only Kubernetes API server on loopback that runs each pod's containers as local processes.

No cluster runs here, so the real clients (the KubernetesPodOperator of the cncf.kubernetes
provider, the ``kubernetes`` Python client, ``loadgate.kubernetes``) talk to this server instead,
over plain HTTP with any bearer token. It implements what they call, with the shapes and the
status codes of a real API server:

core/v1
    pods: create (``name`` or ``generateName``), get, list (``labelSelector``,
    ``fieldSelector``; one namespace or all), patch (strategic-merge, merge and JSON patch),
    replace, delete one (graceful: SIGTERM, ``gracePeriodSeconds``, then SIGKILL) and delete
    collection by label; ``/status``; ``/log`` with ``container``, ``follow`` (a chunked
    stream until the container ends), ``timestamps`` (RFC 3339 with nanoseconds),
    ``sinceSeconds``, ``sinceTime``, ``tailLines``, ``limitBytes``.
    events (list with ``fieldSelector=involvedObject.name=…``), secrets, configmaps.
apps/v1
    deployments (create, get, list, patch, replace, delete; ``/status``) and replicasets (get,
    list by label), with a small deployment controller: a new pod template makes a new
    ReplicaSet (or re-promotes the old one with the same template, as a rollback does) with the
    ``deployment.kubernetes.io/revision`` annotation, and the rollout completes after a
    configurable time (or never: :meth:`FakeKubeAPI.set_rollout`).

A pod's containers run as local processes: ``command`` + ``args`` (``$(VAR)`` expanded), with
the environment of the spec (``value``, ``valueFrom`` secret/configmap/field refs, ``envFrom``)
over a small base environment whose ``PATH`` starts with this Python's ``bin``; the image is
ignored (unless :attr:`FakeKubeAPI.entrypoints` gives a command for an image without one) and
volumes are not mounted: the process sees this machine's filesystem. Output (stdout and stderr,
interleaved as a container runtime records them) is the container's log. Phases go
Pending → Running → Succeeded/Failed with container states (waiting, running, terminated with
exit code, reason ``Completed``/``Error``/``StartError``) and conditions as the kubelet reports
them. Every process is in its own process group, so deleting the pod (or :meth:`stop`) ends the
whole tree.

    with FakeKubeAPI() as kube:
        config = kube.write_kubeconfig(tmp_path / "kubeconfig", namespace="loadgate")
        ...  # KubernetesPodOperator(config_file=str(config), in_cluster=False, ...)
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import jsonpatch
import yaml

log = logging.getLogger(__name__)

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-loadgate-fake",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")

# (group/version, plural) -> kind
KINDS = {
    ("v1", "pods"): "Pod",
    ("v1", "events"): "Event",
    ("v1", "secrets"): "Secret",
    ("v1", "configmaps"): "ConfigMap",
    ("apps/v1", "deployments"): "Deployment",
    ("apps/v1", "replicasets"): "ReplicaSet",
}


def rfc3339(ts: float | None = None) -> str:
    """Seconds precision, as the API server writes ``metav1.Time``."""
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def rfc3339_nano(ts_ns: int) -> str:
    """The kubelet's log timestamp: RFC 3339 with nanoseconds."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class ApiError(Exception):
    """A failure answered as a ``Status`` object."""

    REASONS: ClassVar[dict[int, str]] = {
        400: "BadRequest",
        401: "Unauthorized",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "AlreadyExists",
        415: "UnsupportedMediaType",
        422: "Invalid",
        500: "InternalError",
    }

    def __init__(self, code: int, message: str, *, reason: str | None = None, **details: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


# --- selectors ----------------------------------------------------------------------------------


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses (set-based requirements)."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if current:
        parts.append("".join(current).strip())
    return [p for p in parts if p]


_SET_REQ = re.compile(r"^([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)$")


def parse_label_selector(text: str | None) -> list[tuple[str, str, set[str]]]:
    """``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``."""
    reqs: list[tuple[str, str, set[str]]] = []
    for part in _split_top(text or ""):
        match = _SET_REQ.match(part)
        if match:
            values = {v.strip() for v in match.group(3).split(",") if v.strip()}
            reqs.append((match.group(1), match.group(2), values))
        elif "!=" in part:
            key, value = part.split("!=", 1)
            reqs.append((key.strip(), "notin", {value.strip()}))
        elif "==" in part or "=" in part:
            key, value = re.split("==?", part, maxsplit=1)
            reqs.append((key.strip(), "in", {value.strip()}))
        elif part.startswith("!"):
            reqs.append((part[1:].strip(), "!", set()))
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", part):
            reqs.append((part, "exists", set()))
        else:
            raise ApiError(400, f"unable to parse requirement: {part!r}")
    return reqs


def labels_match(labels: Mapping[str, str] | None, reqs: list[tuple[str, str, set[str]]]) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        if op == "in" and not (present and labels[key] in values):
            return False
        if op == "notin" and present and labels[key] in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
    return True


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def field_match(obj: Mapping[str, Any], selector: str | None) -> bool:
    for part in _split_top(selector or ""):
        negate = "!=" in part
        key, value = re.split("!=|==?", part, maxsplit=1)
        actual = _dig(obj, key.strip())
        actual = "" if actual is None else str(actual)
        if (actual == value.strip()) == negate:
            return False
    return True


def match_labels_selector(selector: Mapping[str, Any] | None) -> str:
    """A ``LabelSelector`` object (matchLabels, matchExpressions) as selector text."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op = expr["operator"]
        if op in ("In", "NotIn"):
            parts.append(f"{expr['key']} {op.lower()} ({','.join(expr.get('values') or [])})")
        elif op == "Exists":
            parts.append(expr["key"])
        else:
            parts.append(f"!{expr['key']}")
    return ",".join(parts)


# --- patches --------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name"}
_MERGE_KEYS |= {"volumeMounts": "mountPath", "ports": "containerPort", "tolerations": None}


def strategic_merge_patch(target: Any, patch: Any, key: str | None = None) -> Any:
    """Merge patch, except that lists of named objects (containers, env, volumes …) are merged
    item by item on their merge key, as the API server does for the built-in types."""
    if isinstance(patch, list) and isinstance(target, list) and _MERGE_KEYS.get(key or ""):
        merge_key = _MERGE_KEYS[key or ""]
        result = copy.deepcopy(target)
        for item in patch:
            if not isinstance(item, dict) or merge_key not in item:
                return copy.deepcopy(patch)
            index = next(
                (i for i, t in enumerate(result) if t.get(merge_key) == item[merge_key]), None
            )
            if item.get("$patch") == "delete":
                if index is not None:
                    result.pop(index)
            elif index is None:
                result.append(copy.deepcopy(item))
            else:
                result[index] = strategic_merge_patch(result[index], item)
        return result
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, value in patch.items():
        if k.startswith("$"):
            continue
        if value is None:
            result.pop(k, None)
        else:
            result[k] = strategic_merge_patch(result.get(k), value, k)
    return result


def apply_patch(obj: dict[str, Any], content_type: str, body: Any) -> dict[str, Any]:
    content_type = content_type.split(";")[0].strip().lower()
    if content_type == "application/json-patch+json":
        if not isinstance(body, list):
            raise ApiError(400, "a JSON patch must be a list of operations")
        try:
            return jsonpatch.apply_patch(obj, body)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(422, f"the JSON patch cannot be applied: {exc}") from None
    if content_type == "application/merge-patch+json":
        return merge_patch(obj, body)
    if content_type == "application/strategic-merge-patch+json":
        return strategic_merge_patch(obj, body)
    raise ApiError(415, f"the patch type {content_type!r} is not supported by this test server")


# --- pods as processes ----------------------------------------------------------------------------


@dataclass
class _Container:
    name: str
    lines: list[tuple[int, bytes]] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    state: str = "waiting"  # waiting | running | terminated
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    output_done: bool = False


@dataclass
class _PodRuntime:
    key: tuple[str, str]
    uid: str
    containers: dict[str, _Container]
    workdir: Path
    scheduled: bool = False
    deleting: bool = False
    threads: list[threading.Thread] = field(default_factory=list)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [c.proc for c in self.containers.values() if c.proc and c.proc.poll() is None]


@dataclass
class _Rollout:
    started: float
    seconds: float = 0.0
    stuck: bool = False


class FakeKubeAPI:
    """The server; ``start()``/``stop()`` or a ``with`` block. See the module's docstring.

    :param pending_s: how long a new pod stays Pending (unscheduled) before its containers
        start; 0 starts them before the create call answers.
    :param grace_cap_s: at most this many seconds between SIGTERM and SIGKILL on deletion,
        whatever the pod's grace period (keeps tests fast); None: the pod's own.
    :param rollout_s: how long a deployment's rollout takes (see :meth:`set_rollout`).
    :param token: the bearer token required; None accepts any (but one must be sent).
    :param base_env: the environment every container starts from (the spec's env goes over it).
    """

    def __init__(
        self,
        *,
        pending_s: float = 0.0,
        grace_cap_s: float | None = 5.0,
        rollout_s: float = 0.0,
        token: str | None = None,
        base_env: Mapping[str, str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.pending_s = pending_s
        self.grace_cap_s = grace_cap_s
        self.rollout_s = rollout_s
        self.token = token
        bin_dir = str(Path(sys.executable).parent)
        self.base_env = dict(
            base_env
            if base_env is not None
            else {
                "PATH": f"{bin_dir}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
                "LANG": "C.UTF-8",
            }
        )
        self.entrypoints: dict[str, list[str]] = {}
        self.requests: list[dict[str, Any]] = []
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fake-kube-"))
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._pods: dict[tuple[str, str], _PodRuntime] = {}
        self._rollouts: dict[tuple[str, str], _Rollout] = {}
        self._rollout_overrides: dict[tuple[str, str], tuple[float, bool]] = {}
        self._rv = 0
        self._closing = False
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> FakeKubeAPI:
        api = self

        class Handler(_Handler):
            server_api = api

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="fake-kube-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Kill every pod's processes (the whole process groups) and stop serving."""
        with self._lock:
            self._closing = True
            runtimes = list(self._pods.values())
            self._changed.notify_all()
        for runtime in runtimes:
            _signal_all(runtime, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for runtime in runtimes:
            for proc in runtime.alive():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            _signal_all(runtime, signal.SIGKILL)
            for proc in runtime.alive():
                proc.wait()
            for thread in runtime.threads:
                thread.join(timeout=5)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._own_workdir:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- client configuration -----------------------------------------------------------------

    def kubeconfig(self, namespace: str = "default", token: str | None = None) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token or self.token or "test-token"}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default") -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(self.kubeconfig(namespace), sort_keys=False))
        target.chmod(0o600)
        return target

    def airflow_connection_env(
        self, kubeconfig_path: str | os.PathLike[str], conn_id: str = "kubernetes_default"
    ) -> dict[str, str]:
        """``AIRFLOW_CONN_…`` for a ``kubernetes`` connection that points at this server."""
        value = {
            "conn_type": "kubernetes",
            "extra": {"kube_config_path": str(kubeconfig_path)},
        }
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)}

    def client(self, namespace: str = "default") -> Any:
        """A ``kubernetes.client.ApiClient`` configured for this server."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config_from_dict(
            self.kubeconfig(namespace), client_configuration=configuration
        )
        return client.ApiClient(configuration)

    # --- direct access for tests --------------------------------------------------------------

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            self._refresh_rollouts()
            return [
                copy.deepcopy(obj)
                for (_, p, ns, _), obj in sorted(self._objects.items())
                if p == plural and (namespace is None or ns == namespace)
            ]

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.objects("pods", namespace)

    def pod_log(self, namespace: str, name: str, container: str | None = None) -> str:
        with self._lock:
            runtime = self._pods[(namespace, name)]
            box = runtime.containers[container or next(iter(runtime.containers))]
            return b"".join(line for _, line in box.lines).decode(errors="replace")

    def kill_pod(self, namespace: str, name: str) -> bool:
        """SIGKILL the pod's running containers, as the node's OOM killer would (the pod stays,
        its containers terminated); False when nothing of it was running."""
        with self._lock:
            runtime = self._pods.get((namespace, name))
            if runtime is None or not runtime.alive():
                return False
            _signal_all(runtime, signal.SIGKILL)
            return True

    def add_secret(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self._create("v1", "secrets", namespace, {"metadata": {"name": name}, "data": encoded})

    def create(self, group: str, plural: str, namespace: str, body: dict[str, Any]) -> dict:
        return copy.deepcopy(self._create(group, plural, namespace, copy.deepcopy(body)))

    def set_rollout(
        self, namespace: str, deployment: str, *, seconds: float = 0.0, stuck: bool = False
    ) -> None:
        """How the next rollouts of ``deployment`` go: done after ``seconds``, or never."""
        with self._lock:
            self._rollout_overrides[(namespace, deployment)] = (seconds, stuck)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.1))
            return True

    def calls(self, method: str | None = None, contains: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r["method"] == method) and contains in r["path"]
            ]

    # --- storage ------------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _touch(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._changed.notify_all()

    def _create(
        self, group: str, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        kind = KINDS[(group, plural)]
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        meta = body.setdefault("metadata", {}) or {}
        body["metadata"] = meta
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise ApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on the "
                "request",
            )
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
        if not name:
            raise ApiError(422, f"{kind} is invalid: metadata.name: Required value", kind=kind)
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise ApiError(
                422,
                f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a '
                "lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.'",
                name=name,
                kind=plural,
            )
        for label_key, label_value in (meta.get("labels") or {}).items():
            if not isinstance(label_value, str) or not _LABEL_VALUE.match(label_value):
                raise ApiError(
                    422,
                    f'{kind} "{name}" is invalid: metadata.labels: Invalid value: '
                    f'"{label_value}" (label {label_key})',
                )
        key = (group, plural, namespace, name)
        with self._lock:
            if key in self._objects:
                raise ApiError(409, f'{plural} "{name}" already exists', name=name, kind=plural)
            meta.update(
                name=name,
                namespace=namespace,
                uid=str(uuid.uuid4()),
                creationTimestamp=rfc3339(),
            )
            body["kind"] = kind
            body["apiVersion"] = group
            if plural == "pods":
                self._validate_pod(body)
            elif plural == "deployments":
                self._validate_deployment(body)
            self._objects[key] = body
            self._touch(body)
            if plural == "pods":
                self._start_pod(body)
            elif plural == "deployments":
                self._rollout(body)
            return body

    def _get(self, group: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self._objects.get((group, plural, namespace, name))
        if obj is None:
            raise ApiError(404, f'{plural} "{name}" not found', name=name, kind=plural)
        return obj

    def _list(
        self,
        group: str,
        plural: str,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
    ) -> dict[str, Any]:
        reqs = parse_label_selector(label_selector)
        items = []
        for (g, p, ns, _), obj in sorted(self._objects.items()):
            if g != group or p != plural or (namespace is not None and ns != namespace):
                continue
            if not labels_match(obj["metadata"].get("labels"), reqs):
                continue
            if not field_match(obj, field_selector):
                continue
            item = copy.deepcopy(obj)
            item.pop("kind", None)
            item.pop("apiVersion", None)
            items.append(item)
        return {
            "kind": KINDS[(group, plural)] + "List",
            "apiVersion": group,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _replace(
        self, group: str, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        current = self._get(group, plural, namespace, name)
        old = copy.deepcopy(current)
        meta = body.setdefault("metadata", {})
        for immutable in ("name", "namespace", "uid", "creationTimestamp"):
            meta[immutable] = current["metadata"].get(immutable)
        if plural == "pods":
            # only metadata (labels, annotations) may change on a running pod here
            old_spec = current.get("spec")
            if body.get("spec") is not None and body["spec"] != old_spec:
                raise ApiError(
                    422,
                    f'Pod "{name}" is invalid: spec: Forbidden: pod updates may not change '
                    "fields other than image, activeDeadlineSeconds, tolerations …",
                )
            body["spec"] = old_spec
            body["status"] = current.get("status")
            if current["metadata"].get("deletionTimestamp"):
                meta["deletionTimestamp"] = current["metadata"]["deletionTimestamp"]
        body["kind"] = current["kind"]
        body["apiVersion"] = current["apiVersion"]
        current.clear()
        current.update(body)
        self._touch(current)
        if plural == "deployments":
            self._deployment_updated(old, current)
        return current

    # --- pods ---------------------------------------------------------------------------------

    def _validate_pod(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        spec = pod.get("spec") or {}
        containers = spec.get("containers") or []
        if not containers:
            raise ApiError(422, f'Pod "{name}" is invalid: spec.containers: Required value')
        seen = set()
        for i, container in enumerate(containers):
            if not container.get("name"):
                raise ApiError(
                    422, f'Pod "{name}" is invalid: spec.containers[{i}].name: Required value'
                )
            if container["name"] in seen:
                raise ApiError(
                    422, f'Pod "{name}" is invalid: spec.containers[{i}].name: Duplicate value'
                )
            seen.add(container["name"])
            if not container.get("image"):
                raise ApiError(
                    422, f'Pod "{name}" is invalid: spec.containers[{i}].image: Required value'
                )
        if spec.get("initContainers"):
            raise ApiError(422, "init containers are not supported by this test server")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("nodeName", "fake-node")
        for container in containers:
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("imagePullPolicy", "IfNotPresent")
        pod["status"] = {"phase": "Pending", "qosClass": _qos(containers)}

    def _start_pod(self, pod: dict[str, Any]) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        workdir = self.workdir / ns / f"{name}-{pod['metadata']['uid'][:8]}"
        workdir.mkdir(parents=True, exist_ok=True)
        runtime = _PodRuntime(
            key=(ns, name),
            uid=pod["metadata"]["uid"],
            containers={c["name"]: _Container(c["name"]) for c in pod["spec"]["containers"]},
            workdir=workdir,
        )
        self._pods[(ns, name)] = runtime
        self._update_pod_status(pod, runtime)
        if self.pending_s <= 0:
            self._schedule_and_run(runtime)
        else:
            timer = threading.Timer(self.pending_s, self._schedule_and_run, args=(runtime,))
            timer.daemon = True
            runtime.threads.append(timer)
            timer.start()

    def _schedule_and_run(self, runtime: _PodRuntime) -> None:
        with self._lock:
            pod = self._objects.get(("v1", "pods", *runtime.key))
            if pod is None or runtime.deleting or self._closing:
                return
            ns, name = runtime.key
            self._event(pod, "Scheduled", f"Successfully assigned {ns}/{name} to fake-node")
            runtime.scheduled = True
            for container in pod["spec"]["containers"]:
                self._start_container(pod, runtime, container)
            self._update_pod_status(pod, runtime)

    def _start_container(
        self, pod: dict[str, Any], runtime: _PodRuntime, container: dict[str, Any]
    ) -> None:
        box = runtime.containers[container["name"]]
        try:
            env = self._container_env(pod, container)
        except ApiError as exc:  # a missing secret: the kubelet keeps it waiting
            box.waiting_reason = "CreateContainerConfigError"
            box.waiting_message = exc.message
            self._event(pod, "Failed", f"Error: {exc.message}", warning=True, container=box.name)
            return
        argv = [_expand(a, env) for a in (container.get("command") or [])]
        args = [_expand(a, env) for a in (container.get("args") or [])]
        if not argv:
            argv = list(self.entrypoints.get(container["image"], []))
        argv += args
        self._event(
            pod,
            "Pulled",
            f'Container image "{container["image"]}" already present on machine',
            container=box.name,
        )
        self._event(pod, "Created", f"Created container {box.name}", container=box.name)
        cwd = container.get("workingDir")
        if not cwd or not Path(cwd).is_dir():
            cwd = str(runtime.workdir)
        try:
            if not argv:
                raise OSError(f"no command given and no entrypoint known for {container['image']}")
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            now = time.time()
            box.state = "terminated"
            box.started_at = box.finished_at = now
            box.exit_code = 128
            box.reason = "StartError"
            box.message = (
                f"failed to create containerd task: exec: {argv[0] if argv else ''!r}: {exc}"
            )
            box.output_done = True
            self._event(pod, "Failed", f"Error: {box.message}", warning=True, container=box.name)
            return
        box.proc = proc
        box.state = "running"
        box.started_at = time.time()
        self._event(pod, "Started", f"Started container {box.name}", container=box.name)
        thread = threading.Thread(
            target=self._pump, args=(runtime, box), name=f"pod-{pod['metadata']['name']}"
        )
        thread.daemon = True
        runtime.threads.append(thread)
        thread.start()

    def _pump(self, runtime: _PodRuntime, box: _Container) -> None:
        """Record the container's output line by line; when it ends, its exit."""
        assert box.proc is not None and box.proc.stdout is not None
        for raw in iter(box.proc.stdout.readline, b""):
            line = raw if raw.endswith(b"\n") else raw + b"\n"
            with self._lock:
                box.lines.append((time.time_ns(), line))
                self._changed.notify_all()
        box.proc.stdout.close()
        code = box.proc.wait()
        with self._lock:
            box.output_done = True
            box.state = "terminated"
            box.finished_at = time.time()
            box.exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128+N
            box.reason = "Completed" if code == 0 else "Error"
            pod = self._objects.get(("v1", "pods", *runtime.key))
            if pod is not None:
                spec = next(c for c in pod["spec"]["containers"] if c["name"] == box.name)
                if code != 0 and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                    tail = b"".join(line for _, line in box.lines[-80:])[-2048:]
                    box.message = tail.decode(errors="replace")
                self._update_pod_status(pod, runtime)
            if runtime.deleting and not runtime.alive():
                self._remove_pod(runtime)
            self._changed.notify_all()

    def _container_env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        env = dict(self.base_env)
        env["HOSTNAME"] = pod["metadata"]["name"]
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            ref = source.get("secretRef") or source.get("configMapRef")
            plural = "secrets" if "secretRef" in source else "configmaps"
            data = self._ref_data(ns, plural, ref["name"], optional=ref.get("optional", False))
            env.update({prefix + k: v for k, v in data.items()})
        for var in container.get("env") or []:
            if "valueFrom" not in var:
                env[var["name"]] = _expand(var.get("value", ""), env)
                continue
            source = var["valueFrom"]
            if "secretKeyRef" in source or "configMapKeyRef" in source:
                plural = "secrets" if "secretKeyRef" in source else "configmaps"
                ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
                data = self._ref_data(ns, plural, ref["name"], optional=ref.get("optional", False))
                if ref["key"] in data:
                    env[var["name"]] = data[ref["key"]]
                elif not ref.get("optional", False):
                    raise ApiError(
                        400, f"couldn't find key {ref['key']} in {plural[:-1]} {ns}/{ref['name']}"
                    )
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
                if match:
                    value = (pod["metadata"].get(match.group(1)) or {}).get(match.group(2), "")
                else:
                    value = {
                        "status.podIP": "127.0.0.1",
                        "status.hostIP": "127.0.0.1",
                        "spec.nodeName": "fake-node",
                    }.get(path, _dig(pod, path) or "")
                env[var["name"]] = str(value)
            elif "resourceFieldRef" in source:
                resource = source["resourceFieldRef"]["resource"]
                kind, _, what = resource.partition(".")
                value = ((container.get("resources") or {}).get(kind) or {}).get(what, "0")
                env[var["name"]] = str(value)
        return env

    def _ref_data(self, ns: str, plural: str, name: str, *, optional: bool) -> dict[str, str]:
        obj = self._objects.get(("v1", plural, ns, name))
        if obj is None:
            if optional:
                return {}
            raise ApiError(400, f'{plural[:-1]} "{name}" not found')
        if plural == "secrets":
            data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            data.update(obj.get("stringData") or {})
            return data
        return dict(obj.get("data") or {})

    def _update_pod_status(self, pod: dict[str, Any], runtime: _PodRuntime) -> None:
        status = pod["status"]
        boxes = list(runtime.containers.values())
        scheduled = runtime.scheduled
        now = rfc3339()
        statuses = []
        specs = {c["name"]: c for c in pod["spec"]["containers"]}
        for box in boxes:
            state: dict[str, Any]
            if box.state == "running":
                state = {"running": {"startedAt": rfc3339(box.started_at)}}
            elif box.state == "terminated":
                terminated: dict[str, Any] = {
                    "exitCode": box.exit_code,
                    "reason": box.reason,
                    "startedAt": rfc3339(box.started_at),
                    "finishedAt": rfc3339(box.finished_at),
                }
                if box.proc is not None:
                    terminated["containerID"] = f"fake://{box.proc.pid}"
                if box.message:
                    terminated["message"] = box.message
                state = {"terminated": terminated}
            else:
                state = {"waiting": {"reason": box.waiting_reason}}
                if box.waiting_message:
                    state["waiting"]["message"] = box.waiting_message
            entry = {
                "name": box.name,
                "image": specs[box.name]["image"],
                "imageID": f"fake://{specs[box.name]['image']}",
                "ready": box.state == "running",
                "started": box.state == "running",
                "restartCount": 0,
                "state": state,
                "lastState": {},
            }
            if box.proc is not None:
                entry["containerID"] = f"fake://{box.proc.pid}"
            statuses.append(entry)
        if all(b.state == "terminated" for b in boxes):
            phase = "Succeeded" if all(b.exit_code == 0 for b in boxes) else "Failed"
        elif any(b.state in ("running", "terminated") for b in boxes) and all(
            b.state != "waiting" for b in boxes
        ):
            phase = "Running"
        else:
            phase = "Pending"
        ready = all(b.state == "running" for b in boxes)
        conditions = []  # a pod not yet scheduled has none
        if scheduled:
            conditions = [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": str(ready)},
                {"type": "Ready", "status": str(ready)},
            ]
        previous = {c["type"]: c for c in status.get("conditions") or []}
        for condition in conditions:
            old = previous.get(condition["type"])
            changed = old is None or old["status"] != condition["status"]
            condition["lastProbeTime"] = None
            condition["lastTransitionTime"] = now if changed else old["lastTransitionTime"]
        status.update(phase=phase, conditions=conditions)
        if scheduled:
            status.update(
                hostIP="127.0.0.1",
                podIP="127.0.0.1",
                podIPs=[{"ip": "127.0.0.1"}],
                startTime=status.get("startTime") or now,
                containerStatuses=statuses,
            )
        self._touch(pod)

    def _delete_pod(self, namespace: str, name: str, grace: int | None) -> dict[str, Any]:
        pod = self._get("v1", "pods", namespace, name)
        runtime = self._pods.get((namespace, name))
        result = copy.deepcopy(pod)
        if runtime is None or not runtime.alive():
            if runtime is not None:
                runtime.deleting = True
                self._remove_pod(runtime)
            else:
                del self._objects[("v1", "pods", namespace, name)]
                self._changed.notify_all()
            return result
        if grace is None:
            grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        if not runtime.deleting:
            runtime.deleting = True
            pod["metadata"]["deletionTimestamp"] = rfc3339(time.time() + grace)
            pod["metadata"]["deletionGracePeriodSeconds"] = grace
            for box in runtime.containers.values():
                if box.state == "running":
                    self._event(
                        pod, "Killing", f"Stopping container {box.name}", container=box.name
                    )
            self._touch(pod)
            _signal_all(runtime, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            wait = grace if self.grace_cap_s is None else min(grace, self.grace_cap_s)
            killer = threading.Timer(wait, _signal_all, args=(runtime, signal.SIGKILL))
            killer.daemon = True
            runtime.threads.append(killer)
            killer.start()
        return copy.deepcopy(pod)

    def _remove_pod(self, runtime: _PodRuntime) -> None:
        self._objects.pop(("v1", "pods", *runtime.key), None)
        self._pods.pop(runtime.key, None)
        for thread in runtime.threads:
            if isinstance(thread, threading.Timer):
                thread.cancel()
        self._changed.notify_all()

    def _event(
        self,
        pod: dict[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        container: str | None = None,
    ) -> None:
        meta = pod["metadata"]
        now = rfc3339()
        name = f"{meta['name']}.{max(time.time_ns(), self._rv):x}"  # as the kubelet names them
        while ("v1", "events", meta["namespace"], name) in self._objects:
            name += "0"
        involved = {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": "v1",
        }
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        event = {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {"name": name, "namespace": meta["namespace"], "uid": str(uuid.uuid4())},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet" if reason != "Scheduled" else "default-scheduler"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "kubelet",
        }
        self._objects[("v1", "events", meta["namespace"], name)] = event
        self._touch(event)

    # --- pod logs -----------------------------------------------------------------------------

    def _log_box(
        self, namespace: str, name: str, query: Mapping[str, str]
    ) -> tuple[_PodRuntime, _Container]:
        pod = self._get("v1", "pods", namespace, name)
        runtime = self._pods.get((namespace, name))
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = query.get("container")
        if not container:
            if len(names) > 1:
                raise ApiError(
                    400,
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(names)}]",
                )
            container = names[0]
        if container not in names or runtime is None:
            raise ApiError(400, f"container {container} is not valid for pod {name}")
        if _true(query.get("previous")):
            raise ApiError(
                400, f'previous terminated container "{container}" in pod "{name}" not found'
            )
        box = runtime.containers[container]
        if box.state == "waiting":
            raise ApiError(
                400,
                f'container "{container}" in pod "{name}" is waiting to start: '
                f"{box.waiting_reason}",
            )
        return runtime, box

    def _log_lines(
        self, box: _Container, start: int, since_ns: int | None, timestamps: bool
    ) -> tuple[list[bytes], int]:
        out = []
        for ts, line in box.lines[start:]:
            if since_ns is not None and ts < since_ns:
                continue
            out.append((rfc3339_nano(ts).encode() + b" " + line) if timestamps else line)
        return out, len(box.lines)

    # --- deployments --------------------------------------------------------------------------

    def _validate_deployment(self, dep: dict[str, Any]) -> None:
        spec = dep.setdefault("spec", {})
        if not spec.get("selector") or not spec.get("template"):
            raise ApiError(422, "Deployment is invalid: spec.selector, spec.template: Required")
        template_labels = (spec["template"].get("metadata") or {}).get("labels") or {}
        if not labels_match(
            template_labels, parse_label_selector(match_labels_selector(spec["selector"]))
        ):
            raise ApiError(
                422,
                "Deployment is invalid: spec.template.metadata.labels: Invalid value: "
                "`selector` does not match template `labels`",
            )
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault(
            "strategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
        )
        dep["metadata"]["generation"] = 1
        dep["status"] = {}

    def _deployment_updated(self, old: dict[str, Any], dep: dict[str, Any]) -> None:
        dep["metadata"]["generation"] = old["metadata"].get("generation", 1)
        if dep.get("spec") != old.get("spec"):
            dep["metadata"]["generation"] += 1
        dep["status"] = old.get("status", {})
        old_template = (old.get("spec") or {}).get("template")
        if dep["spec"].get("template") != old_template and not dep["spec"].get("paused"):
            self._rollout(dep)
        else:
            self._refresh_rollouts()

    def _owned_replicasets(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        ns = dep["metadata"]["namespace"]
        return [
            rs
            for (g, p, n, _), rs in self._objects.items()
            if (g, p, n) == ("apps/v1", "replicasets", ns)
            and any(
                ref.get("uid") == dep["metadata"]["uid"] and ref.get("controller")
                for ref in rs["metadata"].get("ownerReferences") or []
            )
        ]

    def _rollout(self, dep: dict[str, Any]) -> None:
        """The deployment controller's answer to a new pod template."""
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        template = copy.deepcopy(dep["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})
        template["metadata"]["labels"].pop(HASH_LABEL, None)
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        owned = self._owned_replicasets(dep)
        revisions = [int(rs["metadata"].get("annotations", {}).get(REVISION, "0")) for rs in owned]
        revision = str(max(revisions, default=0) + 1)
        same = next((rs for rs in owned if _without_hash(rs["spec"]["template"]) == template), None)
        if same is not None:
            old_revision = same["metadata"]["annotations"].get(REVISION)
            history = same["metadata"]["annotations"].get(
                "deployment.kubernetes.io/revision-history"
            )
            history = ",".join(filter(None, [history, old_revision]))
            same["metadata"]["annotations"][REVISION] = revision
            same["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] = history
            self._touch(same)
        else:
            labelled = copy.deepcopy(template)
            labelled["metadata"]["labels"][HASH_LABEL] = digest
            selector = copy.deepcopy(dep["spec"]["selector"])
            selector.setdefault("matchLabels", {})[HASH_LABEL] = digest
            rs = {
                "metadata": {
                    "name": f"{name}-{digest}",
                    "labels": {**template["metadata"]["labels"], HASH_LABEL: digest},
                    "annotations": {
                        REVISION: revision,
                        "deployment.kubernetes.io/desired-replicas": str(dep["spec"]["replicas"]),
                        "deployment.kubernetes.io/max-replicas": str(dep["spec"]["replicas"] + 1),
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": name,
                            "uid": dep["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {"replicas": 0, "selector": selector, "template": labelled},
                "status": {"replicas": 0, "observedGeneration": 1},
            }
            self._create("apps/v1", "replicasets", ns, rs)
        dep["metadata"].setdefault("annotations", {})[REVISION] = revision
        seconds, stuck = self._rollout_overrides.get((ns, name), (self.rollout_s, False))
        self._rollouts[(ns, name)] = _Rollout(time.monotonic(), seconds, stuck)
        self._touch(dep)
        self._refresh_rollouts()

    def _refresh_rollouts(self) -> None:
        """Bring every deployment's and ReplicaSet's status to where its rollout is now."""
        for (group, plural, ns, name), dep in list(self._objects.items()):
            if (group, plural) != ("apps/v1", "deployments"):
                continue
            rollout = self._rollouts.get((ns, name))
            desired = int(dep["spec"].get("replicas", 1))
            template = _without_hash(dep["spec"]["template"])
            owned = self._owned_replicasets(dep)
            new_rs = next(
                (rs for rs in owned if _without_hash(rs["spec"]["template"]) == template), None
            )
            elapsed = time.monotonic() - rollout.started if rollout else 0.0
            done = rollout is None or (not rollout.stuck and elapsed >= rollout.seconds)
            old_total = 0
            for rs in owned:
                is_new = rs is new_rs
                if is_new:  # one surge pod, not ready, until the rollout is done
                    replicas = desired if done else 1
                    ready = replicas if done else 0
                else:  # the old pods stay until the new ones are ready
                    replicas = 0 if done else int(rs["spec"].get("replicas") or 0)
                    ready = replicas
                new_status = {
                    "replicas": replicas,
                    "fullyLabeledReplicas": replicas,
                    "readyReplicas": ready,
                    "availableReplicas": ready,
                    "observedGeneration": 1,
                }
                if rs["spec"].get("replicas") != replicas or rs.get("status") != new_status:
                    rs["spec"]["replicas"] = replicas
                    rs["status"] = new_status
                    self._touch(rs)
                if not is_new:
                    old_total += replicas
            updated = desired if done else (1 if new_rs is not None else 0)
            updated_ready = desired if done else 0
            total = updated + old_total
            available = updated_ready + old_total
            conditions = [
                {
                    "type": "Available",
                    "status": "True" if available >= desired else "False",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                }
            ]
            deadline = float(dep["spec"].get("progressDeadlineSeconds", 600))
            if done:
                progressing = ("True", "NewReplicaSetAvailable", "has successfully progressed.")
            elif rollout is not None and rollout.stuck and elapsed >= deadline:
                progressing = ("False", "ProgressDeadlineExceeded", "has timed out progressing.")
            else:
                progressing = ("True", "ReplicaSetUpdated", "is progressing.")
            rs_name = new_rs["metadata"]["name"] if new_rs else "?"
            conditions.append(
                {
                    "type": "Progressing",
                    "status": progressing[0],
                    "reason": progressing[1],
                    "message": f'ReplicaSet "{rs_name}" {progressing[2]}',
                }
            )
            status = {
                "observedGeneration": dep["metadata"].get("generation", 1),
                "replicas": total,
                "updatedReplicas": updated,
                "readyReplicas": available,
                "availableReplicas": available,
                "conditions": conditions,
            }
            if total - available > 0:
                status["unavailableReplicas"] = total - available
            if dep.get("status") != status:
                dep["status"] = status
                self._touch(dep)


def _without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(template))
    out.setdefault("metadata", {}).setdefault("labels", {})
    out["metadata"]["labels"].pop(HASH_LABEL, None)
    return out


def _qos(containers: Iterable[Mapping[str, Any]]) -> str:
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        for kind in ("cpu", "memory"):
            if not limits.get(kind) or requests.get(kind, limits[kind]) != limits[kind]:
                return "Burstable"
    return "Guaranteed"


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes; unknown references stay as written)."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(repl, text)


def _signal_all(runtime: _PodRuntime, sig: int) -> None:
    for proc in runtime.alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def _true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


# --- HTTP -----------------------------------------------------------------------------------------

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[a-z0-9.-]+/v1))"
    r"(?:/namespaces/(?P<ns>[a-z0-9-]+))?/(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[a-z0-9.-]+)(?:/(?P<sub>[a-z]+))?)?$"
)


class _Handler(BaseHTTPRequestHandler):
    server_api: FakeKubeAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake-kube: " + format, *args)

    # every verb goes through one dispatcher
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "the request body is not JSON") from None

    def _dispatch(self, method: str) -> None:
        api = self.server_api
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            body = self._read_body()
            with api._lock:
                api.requests.append(
                    {
                        "method": method,
                        "path": parts.path,
                        "query": query,
                        "content_type": self.headers.get("Content-Type", ""),
                        "body": body,
                    }
                )
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or (
                api.token is not None and auth != f"Bearer {api.token}"
            ):
                raise ApiError(401, "Unauthorized")
            if parts.path.rstrip("/") == "/version" and method == "GET":
                return self._send_json(200, VERSION)
            if parts.path == "/api" and method == "GET":
                return self._send_json(200, {"kind": "APIVersions", "versions": ["v1"]})
            match = _PATH.match(parts.path)
            if not match:
                raise ApiError(
                    404, f"the server could not find the requested resource ({parts.path})"
                )
            group = match["core"] or match["group"]
            plural, ns, name, sub = match["plural"], match["ns"], match["name"], match["sub"]
            if (group, plural) not in KINDS:
                raise ApiError(404, f"the server could not find the requested resource ({plural})")
            if _true(query.get("watch")):
                raise ApiError(405, "watch is not supported by this test server")
            if name is None:
                return self._collection(method, group, plural, ns, query, body)
            if ns is None:
                raise ApiError(404, "namespaced resource without a namespace")
            if sub == "log" and plural == "pods" and method == "GET":
                return self._log(ns, name, query)
            if sub not in (None, "status"):
                raise ApiError(404, f"the server could not find the requested resource ({sub})")
            return self._item(method, group, plural, ns, name, query, body)
        except ApiError as exc:
            self._send_json(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a bug in this server: say so, as a 500
            log.exception("fake-kube: %s %s failed", method, self.path)
            self._send_json(500, ApiError(500, f"{type(exc).__name__}: {exc}").status())

    def _collection(
        self,
        method: str,
        group: str,
        plural: str,
        ns: str | None,
        query: Mapping[str, str],
        body: Any,
    ) -> None:
        api = self.server_api
        with api._lock:
            api._refresh_rollouts()
            if method == "GET":
                result = api._list(
                    group, plural, ns, query.get("labelSelector"), query.get("fieldSelector")
                )
                return self._send_json(200, result)
            if ns is None:
                raise ApiError(405, f"{method} needs a namespace")
            if method == "POST":
                created = api._create(group, plural, ns, body or {})
                return self._send_json(201, copy.deepcopy(created))
            if method == "DELETE":
                listed = api._list(
                    group, plural, ns, query.get("labelSelector"), query.get("fieldSelector")
                )
                grace = _grace(query, body)
                for item in listed["items"]:
                    name = item["metadata"]["name"]
                    if plural == "pods":
                        api._delete_pod(ns, name, grace)
                    else:
                        api._objects.pop((group, plural, ns, name), None)
                api._changed.notify_all()
                return self._send_json(200, listed)
        raise ApiError(405, f"{method} is not allowed on a collection")

    def _item(
        self,
        method: str,
        group: str,
        plural: str,
        ns: str,
        name: str,
        query: Mapping[str, str],
        body: Any,
    ) -> None:
        api = self.server_api
        with api._lock:
            api._refresh_rollouts()
            if method == "GET":
                return self._send_json(200, copy.deepcopy(api._get(group, plural, ns, name)))
            if method == "DELETE":
                if plural == "pods":
                    return self._send_json(200, api._delete_pod(ns, name, _grace(query, body)))
                obj = api._get(group, plural, ns, name)
                del api._objects[(group, plural, ns, name)]
                if plural == "deployments":
                    for rs in api._owned_replicasets(obj):
                        api._objects.pop(("apps/v1", "replicasets", ns, rs["metadata"]["name"]))
                api._changed.notify_all()
                return self._send_json(200, obj)
            if method == "PATCH":
                current = api._get(group, plural, ns, name)
                patched = apply_patch(
                    copy.deepcopy(current), self.headers.get("Content-Type", ""), body
                )
                replaced = api._replace(group, plural, ns, name, patched)
                return self._send_json(200, copy.deepcopy(replaced))
            if method == "PUT":
                if not isinstance(body, dict):
                    raise ApiError(400, "the body must be a JSON object")
                replaced = api._replace(group, plural, ns, name, body)
                return self._send_json(200, copy.deepcopy(replaced))
        raise ApiError(405, f"{method} is not allowed here")

    def _log(self, ns: str, name: str, query: Mapping[str, str]) -> None:
        api = self.server_api
        timestamps = _true(query.get("timestamps"))
        since_ns = None
        if query.get("sinceSeconds"):
            since_ns = time.time_ns() - int(query["sinceSeconds"]) * 1_000_000_000
        elif query.get("sinceTime"):
            since_ns = int(parse_time(query["sinceTime"]) * 1_000_000_000)
        with api._lock:
            runtime, box = api._log_box(ns, name, query)
            lines, cursor = api._log_lines(box, 0, since_ns, timestamps)
        tail = query.get("tailLines")
        if tail:
            lines = lines[-int(tail) :] if int(tail) > 0 else []
        limit = int(query["limitBytes"]) if query.get("limitBytes") else None
        if not _true(query.get("follow")):
            data = b"".join(lines)
            return self._send_text(200, data[:limit] if limit else data)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0

        def write(chunk: bytes) -> bool:
            nonlocal sent
            if limit is not None:
                chunk = chunk[: max(0, limit - sent)]
            if chunk:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
                sent += len(chunk)
            return limit is None or sent < limit

        going = write(b"".join(lines))
        while going:
            with api._changed:

                def gone() -> bool:
                    return api._closing or api._pods.get((ns, name)) is not runtime

                while cursor == len(box.lines) and not box.output_done and not gone():
                    api._changed.wait(0.5)
                lines, cursor = api._log_lines(box, cursor, since_ns, timestamps)
                finished = cursor == len(box.lines) and (box.output_done or gone())
            going = write(b"".join(lines)) and not finished
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _grace(query: Mapping[str, str], body: Any) -> int | None:
    if query.get("gracePeriodSeconds"):
        return int(query["gracePeriodSeconds"])
    if isinstance(body, dict) and body.get("gracePeriodSeconds") is not None:
        return int(body["gracePeriodSeconds"])
    return None
