"""Pods as local processes: the kubelet's part of the test server.

A pod's containers run as processes: ``command`` + ``args`` (``$(VAR)`` expanded), with the
environment of the spec (``value``; ``valueFrom`` a Secret key or a field of the pod) over a
small base environment whose ``PATH`` starts with this Python's ``bin``. The image is not run,
volumes are not mounted and ``workingDir`` is not used: the process runs in a folder of its own
and sees this machine's filesystem. Its output (stdout and stderr, interleaved as a container
runtime records them) is the container's log. Phases go
Pending → Running → Succeeded/Failed with container states (waiting, running, terminated with
exit code, reason ``Completed``/``Error``/``StartError``), conditions and events as the kubelet
reports them. Every process is in its own process group, so deleting the pod ends the whole
tree: SIGTERM, then SIGKILL after the grace period.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ApiError, rfc3339, unsupported
from .selectors import dig
from .store import Controller, Store

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_NODE_FIELDS = {"status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
NODE = "fake-node"
PendingDelay = float | Callable[[dict[str, Any]], float]  # seconds, or seconds for a given pod


@dataclass
class Container:
    """One container's process, state and log (its output lines with their times in ns)."""

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
class PodRuntime:
    key: tuple[str, str]  # (namespace, name)
    containers: dict[str, Container]
    workdir: Path
    scheduled: bool = False
    deleting: bool = False
    threads: list[threading.Thread] = field(default_factory=list)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [c.proc for c in self.containers.values() if c.proc and c.proc.poll() is None]

    def signal(self, sig: int) -> None:
        """``sig`` to the process group of every running container."""
        for proc in self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)


class PodRunner(Controller):
    """Runs the pods of ``store``.

    :param pending_s: how long a new pod stays Pending (unscheduled) before its containers
        start; 0 starts them before the create call answers. A callable gives it per pod (a
        node slower to start some pods).
    :param grace_cap_s: at most this many seconds between SIGTERM and SIGKILL on deletion,
        whatever the pod's grace period (keeps tests fast); None: the pod's own.
    """

    def __init__(self, store: Store, *, pending_s: PendingDelay, grace_cap_s: float | None) -> None:
        self.store = store
        self.pending_s = pending_s
        self.grace_cap_s = grace_cap_s
        path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin"])
        self.base_env = {"PATH": f"{path}{os.pathsep}/bin", "LANG": "C.UTF-8"}
        self.workdir = Path(tempfile.mkdtemp(prefix="fake-kube-"))
        self.runtimes: dict[tuple[str, str], PodRuntime] = {}
        # every pod ever created, with its labels: its containers' times outlive its deletion
        self.ran: list[tuple[dict[str, str], PodRuntime]] = []

    # --- the store's hooks ----------------------------------------------------------------------

    def validate(self, pod: dict[str, Any]) -> None:
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
            if container.get("envFrom"):
                raise unsupported("envFrom")
        if spec.get("initContainers"):
            raise unsupported("init containers")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("nodeName", NODE)
        for container in containers:
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("imagePullPolicy", "IfNotPresent")
        pod["status"] = {"phase": "Pending"}

    def created(self, pod: dict[str, Any]) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        workdir = self.workdir / ns / f"{name}-{pod['metadata']['uid'][:8]}"
        workdir.mkdir(parents=True, exist_ok=True)
        runtime = PodRuntime(
            key=(ns, name),
            containers={c["name"]: Container(c["name"]) for c in pod["spec"]["containers"]},
            workdir=workdir,
        )
        self.runtimes[(ns, name)] = runtime
        self.ran.append((dict(pod["metadata"].get("labels") or {}), runtime))
        self._update_status(pod, runtime)
        pending = self.pending_s(pod) if callable(self.pending_s) else self.pending_s
        if pending <= 0:
            self._schedule_and_run(runtime)
        else:
            timer = threading.Timer(pending, self._schedule_and_run, args=(runtime,))
            timer.daemon = True
            runtime.threads.append(timer)
            timer.start()

    def replacing(self, current: dict[str, Any], body: dict[str, Any]) -> None:
        """Only metadata (labels, annotations) may change on a pod here."""
        old_spec = current.get("spec")
        if body.get("spec") is not None and body["spec"] != old_spec:
            raise ApiError(
                422,
                f'Pod "{current["metadata"]["name"]}" is invalid: spec: Forbidden: pod updates '
                "may not change fields other than image, activeDeadlineSeconds, tolerations …",
            )
        body["spec"] = old_spec
        body["status"] = current.get("status")
        if current["metadata"].get("deletionTimestamp"):
            body["metadata"]["deletionTimestamp"] = current["metadata"]["deletionTimestamp"]

    # --- running ------------------------------------------------------------------------------

    def _pod(self, runtime: PodRuntime) -> dict[str, Any] | None:
        return self.store.objects.get(("v1", "pods", *runtime.key))

    def _schedule_and_run(self, runtime: PodRuntime) -> None:
        with self.store.lock:
            pod = self._pod(runtime)
            if pod is None or runtime.deleting or self.store.closing:
                return
            ns, name = runtime.key
            self._event(pod, "Scheduled", f"Successfully assigned {ns}/{name} to {NODE}")
            runtime.scheduled = True
            for container in pod["spec"]["containers"]:
                self._start_container(pod, runtime, container)
            self._update_status(pod, runtime)

    def _start_container(
        self, pod: dict[str, Any], runtime: PodRuntime, container: dict[str, Any]
    ) -> None:
        box = runtime.containers[container["name"]]
        try:
            env = self._container_env(pod, container)
        except ApiError as exc:  # a missing secret: the kubelet keeps it waiting
            box.waiting_reason = "CreateContainerConfigError"
            box.waiting_message = exc.message
            self._event(pod, "Failed", f"Error: {exc.message}", warning=True, container=box.name)
            return
        argv = [expand(a, env) for a in (container.get("command") or [])]
        argv += [expand(a, env) for a in (container.get("args") or [])]
        self._event(
            pod,
            "Pulled",
            f'Container image "{container["image"]}" already present on machine',
            container=box.name,
        )
        self._event(pod, "Created", f"Created container {box.name}", container=box.name)
        try:
            if not argv:
                raise OSError("no command given (this test server does not run images)")
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=runtime.workdir,
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

    def _pump(self, runtime: PodRuntime, box: Container) -> None:
        """Record the container's output line by line; when it ends, its exit."""
        assert box.proc is not None and box.proc.stdout is not None
        for raw in iter(box.proc.stdout.readline, b""):
            line = raw if raw.endswith(b"\n") else raw + b"\n"
            with self.store.lock:
                box.lines.append((time.time_ns(), line))
                self.store.changed.notify_all()
        box.proc.stdout.close()
        code = box.proc.wait()
        with self.store.lock:
            box.output_done = True
            box.state = "terminated"
            box.finished_at = time.time()
            box.exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128+N
            box.reason = "Completed" if code == 0 else "Error"
            pod = self._pod(runtime)
            if pod is not None:
                spec = next(c for c in pod["spec"]["containers"] if c["name"] == box.name)
                if code != 0 and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                    tail = b"".join(line for _, line in box.lines[-80:])[-2048:]
                    box.message = tail.decode(errors="replace")
                self._update_status(pod, runtime)
            if runtime.deleting and not runtime.alive():
                self._remove(runtime)
            self.store.changed.notify_all()

    def _container_env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        env = dict(self.base_env)
        env["HOSTNAME"] = pod["metadata"]["name"]
        for var in container.get("env") or []:
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = expand(var.get("value", ""), env)
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                data = self._secret_data(ns, ref["name"])
                if ref["key"] not in data:
                    raise ApiError(
                        400, f"couldn't find key {ref['key']} in secret {ns}/{ref['name']}"
                    )
                env[var["name"]] = data[ref["key"]]
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[var["name"]] = str(_NODE_FIELDS.get(path) or dig(pod, path) or "")
            else:
                raise unsupported(f"valueFrom {sorted(source)}")
        return env

    def _secret_data(self, ns: str, name: str) -> dict[str, str]:
        obj = self.store.objects.get(("v1", "secrets", ns, name))
        if obj is None:
            raise ApiError(400, f'secret "{name}" not found')
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        data.update(obj.get("stringData") or {})
        return data

    # --- status and events --------------------------------------------------------------------

    def _update_status(self, pod: dict[str, Any], runtime: PodRuntime) -> None:
        status = pod["status"]
        boxes = list(runtime.containers.values())
        now = rfc3339()
        images = {c["name"]: c["image"] for c in pod["spec"]["containers"]}
        statuses = [_container_status(box, images[box.name]) for box in boxes]
        if all(b.state == "terminated" for b in boxes):
            phase = "Succeeded" if all(b.exit_code == 0 for b in boxes) else "Failed"
        elif all(b.state != "waiting" for b in boxes):
            phase = "Running"
        else:
            phase = "Pending"
        ready = str(all(b.state == "running" for b in boxes))
        conditions = []  # a pod not yet scheduled has none
        if runtime.scheduled:
            conditions = [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready},
                {"type": "Ready", "status": ready},
            ]
        previous = {c["type"]: c for c in status.get("conditions") or []}
        for condition in conditions:
            old = previous.get(condition["type"])
            changed = old is None or old["status"] != condition["status"]
            condition["lastProbeTime"] = None
            condition["lastTransitionTime"] = now if changed else old["lastTransitionTime"]
        status.update(phase=phase, conditions=conditions)
        if runtime.scheduled:
            status.update(
                hostIP="127.0.0.1",
                podIP="127.0.0.1",
                podIPs=[{"ip": "127.0.0.1"}],
                startTime=status.get("startTime") or now,
                containerStatuses=statuses,
            )
        self.store.touch(pod)

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
        name = f"{meta['name']}.{max(time.time_ns(), self.store.rv):x}"  # as the kubelet does
        while ("v1", "events", meta["namespace"], name) in self.store.objects:
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
        self.store.objects[("v1", "events", meta["namespace"], name)] = event
        self.store.touch(event)

    # --- ending -------------------------------------------------------------------------------

    def delete(self, namespace: str, name: str, grace: int | None) -> dict[str, Any]:
        """A graceful delete: SIGTERM, SIGKILL after the grace period (capped); the pod goes
        when its processes have ended. Returns the pod as the delete call answers it."""
        pod = self.store.get("v1", "pods", namespace, name)
        runtime = self.runtimes[(namespace, name)]
        result = copy.deepcopy(pod)
        if not runtime.alive():
            runtime.deleting = True
            self._remove(runtime)
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
            self.store.touch(pod)
            runtime.signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
            wait = grace if self.grace_cap_s is None else min(grace, self.grace_cap_s)
            killer = threading.Timer(wait, runtime.signal, args=(signal.SIGKILL,))
            killer.daemon = True
            runtime.threads.append(killer)
            killer.start()
        return copy.deepcopy(pod)

    def _remove(self, runtime: PodRuntime) -> None:
        self.store.objects.pop(("v1", "pods", *runtime.key), None)
        self.runtimes.pop(runtime.key, None)
        for thread in runtime.threads:
            if isinstance(thread, threading.Timer):
                thread.cancel()
        self.store.changed.notify_all()

    def container_runs(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every container that started, also of pods deleted since, in creation order: its
        pod's namespace, name and labels, the container's name, ``started_at`` and
        ``finished_at`` (epoch seconds, sub-second; None while it runs), exit code and reason.
        What ``state.running.startedAt`` and ``state.terminated.startedAt/finishedAt`` report,
        at a finer grain than the API's whole seconds."""
        runs = []
        for labels, runtime in self.ran:
            ns, name = runtime.key
            if namespace is not None and ns != namespace:
                continue
            for box in runtime.containers.values():
                if box.started_at is None:
                    continue
                runs.append(
                    {
                        "namespace": ns,
                        "pod": name,
                        "labels": dict(labels),
                        "container": box.name,
                        "started_at": box.started_at,
                        "finished_at": box.finished_at,
                        "exit_code": box.exit_code,
                        "reason": box.reason,
                    }
                )
        return runs

    def kill(self, namespace: str, name: str) -> bool:
        """SIGKILL the pod's running containers (the pod stays); False when none ran."""
        with self.store.lock:
            runtime = self.runtimes.get((namespace, name))
            if runtime is None or not runtime.alive():
                return False
            runtime.signal(signal.SIGKILL)
            return True

    def stop(self) -> None:
        """End every pod's processes (the whole process groups): SIGTERM, SIGKILL after 3 s."""
        with self.store.lock:
            runtimes = list(self.runtimes.values())
        for runtime in runtimes:
            runtime.signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        for runtime in runtimes:
            for proc in runtime.alive():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            runtime.signal(signal.SIGKILL)
            for proc in runtime.alive():
                proc.wait()
            for thread in runtime.threads:
                thread.join(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _container_status(box: Container, image: str) -> dict[str, Any]:
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
        "image": image,
        "imageID": f"fake://{image}",
        "ready": box.state == "running",
        "started": box.state == "running",
        "restartCount": 0,
        "state": state,
        "lastState": {},
    }
    if box.proc is not None:
        entry["containerID"] = f"fake://{box.proc.pid}"
    return entry


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes; unknown references stay as written)."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(repl, text)
