"""The HTTP server: routes the API's paths to the store, the pods and their logs, and answers
as a real API server does (JSON objects, ``Status`` objects for failures, chunked log streams)."""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import kubeconfig
from .deployments import DeploymentController
from .errors import ApiError
from .logs import pod_log, true
from .patches import apply_patch
from .pods import PendingDelay, PodRunner
from .store import KINDS, Store

log = logging.getLogger(__name__)

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
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[a-z0-9.-]+/v1))"
    r"(?:/namespaces/(?P<ns>[a-z0-9-]+))?/(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[a-z0-9.-]+)(?:/(?P<sub>[a-z]+))?)?$"
)


class FakeKubeAPI:
    """The server; ``start()``/``stop()`` or a ``with`` block. See the package's docstring.

    :param pending_s: how long a new pod stays Pending (unscheduled) before its containers
        start; 0 starts them before the create call answers. A callable (the pod's manifest →
        seconds) gives each pod its own.
    :param grace_cap_s: at most this many seconds between SIGTERM and SIGKILL on deletion,
        whatever the pod's grace period (keeps tests fast); None: the pod's own.
    """

    def __init__(self, *, pending_s: PendingDelay = 0.0, grace_cap_s: float | None = 5.0) -> None:
        self.store = Store()
        self.runner = PodRunner(self.store, pending_s=pending_s, grace_cap_s=grace_cap_s)
        self.deployments = DeploymentController(self.store)
        self.store.controllers.update(pods=self.runner, deployments=self.deployments)
        self.requests: list[dict[str, Any]] = []  # every request, as the handler read it
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
        with self.store.lock:
            self.store.closing = True
            self.store.changed.notify_all()
        self.runner.stop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # --- client configuration -----------------------------------------------------------------

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default") -> Path:
        return kubeconfig.write_kubeconfig(self.url, path, namespace)

    def airflow_connection_env(self, kubeconfig_path: str | os.PathLike[str]) -> dict[str, str]:
        return kubeconfig.airflow_connection_env(kubeconfig_path)

    def client(self, namespace: str = "default") -> Any:
        """A ``kubernetes.client.ApiClient`` configured for this server."""
        return kubeconfig.api_client(self.url, namespace)

    # --- direct access for tests --------------------------------------------------------------

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.store.lock:
            self.deployments.refresh()
            group = next(g for g, p in KINDS if p == plural)
            return copy.deepcopy(self.store.select(group, plural, namespace))

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.objects("pods", namespace)

    def pod_log(self, namespace: str, name: str, container: str | None = None) -> str:
        with self.store.lock:
            runtime = self.runner.runtimes[(namespace, name)]
            box = runtime.containers[container or next(iter(runtime.containers))]
            return b"".join(line for _, line in box.lines).decode(errors="replace")

    def container_runs(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """When each container ran, also of pods since deleted (see
        :meth:`PodRunner.container_runs`)."""
        with self.store.lock:
            return self.runner.container_runs(namespace)

    def kill_pod(self, namespace: str, name: str) -> bool:
        """SIGKILL the pod's running containers, as the node's OOM killer would (the pod stays,
        its containers terminated); False when nothing of it was running."""
        return self.runner.kill(namespace, name)

    def add_secret(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.store.create("v1", "secrets", namespace, {"metadata": {"name": name}, "data": encoded})

    def create(self, group: str, plural: str, namespace: str, body: dict[str, Any]) -> dict:
        with self.store.lock:
            return copy.deepcopy(self.store.create(group, plural, namespace, copy.deepcopy(body)))

    def set_rollout(
        self, namespace: str, deployment: str, *, seconds: float = 0.0, stuck: bool = False
    ) -> None:
        """How the next rollouts of ``deployment`` go: done after ``seconds``, or never."""
        self.deployments.set_rollout(namespace, deployment, seconds=seconds, stuck=stuck)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.store.changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.store.changed.wait(min(remaining, 0.1))
            return True

    def calls(self, method: str | None = None, contains: str = "") -> list[dict[str, Any]]:
        with self.store.lock:
            return [
                r
                for r in self.requests
                if (method is None or r["method"] == method) and contains in r["path"]
            ]


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

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, code: int, body: Any) -> None:
        self._send(code, json.dumps(body).encode(), "application/json")

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
            with api.store.lock:
                api.requests.append(
                    {
                        "method": method,
                        "path": parts.path,
                        "query": query,
                        "content_type": self.headers.get("Content-Type", ""),
                        "body": body,
                    }
                )
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                raise ApiError(401, "Unauthorized")
            if parts.path.rstrip("/") == "/version" and method == "GET":
                return self._send_json(200, VERSION)
            match = _PATH.match(parts.path)
            if not match:
                raise ApiError(
                    404, f"the server could not find the requested resource ({parts.path})"
                )
            group = match["core"] or match["group"]
            plural, ns, name, sub = match["plural"], match["ns"], match["name"], match["sub"]
            if (group, plural) not in KINDS:
                raise ApiError(404, f"the server could not find the requested resource ({plural})")
            if true(query.get("watch")):
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
        store = self.server_api.store
        with store.lock:
            self.server_api.deployments.refresh()
            selectors = query.get("labelSelector"), query.get("fieldSelector")
            if method == "GET":
                return self._send_json(200, store.list(group, plural, ns, *selectors))
            if ns is None:
                raise ApiError(405, f"{method} needs a namespace")
            if method == "POST":
                created = store.create(group, plural, ns, body or {})
                return self._send_json(201, copy.deepcopy(created))
            if method == "DELETE" and plural == "pods":
                listed = store.list(group, plural, ns, *selectors)
                for item in listed["items"]:
                    self.server_api.runner.delete(ns, item["metadata"]["name"], _grace(query))
                return self._send_json(200, listed)
        raise ApiError(405, f"{method} is not allowed on this collection")

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
        store = self.server_api.store
        with store.lock:
            self.server_api.deployments.refresh()
            if method == "GET":
                return self._send_json(200, copy.deepcopy(store.get(group, plural, ns, name)))
            if method == "DELETE" and plural == "pods":
                return self._send_json(200, self.server_api.runner.delete(ns, name, _grace(query)))
            if method == "PATCH":
                current = store.get(group, plural, ns, name)
                patched = apply_patch(
                    copy.deepcopy(current), self.headers.get("Content-Type", ""), body
                )
                replaced = store.replace(group, plural, ns, name, patched)
                return self._send_json(200, copy.deepcopy(replaced))
        raise ApiError(405, f"{method} is not allowed here")

    def _log(self, ns: str, name: str, query: Mapping[str, str]) -> None:
        chunks = pod_log(self.server_api.runner, ns, name, query)
        if not true(query.get("follow")):
            return self._send(200, b"".join(chunks), "text/plain")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            if chunk:  # an empty chunk would end the stream
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _grace(query: Mapping[str, str]) -> int | None:
    return int(query["gracePeriodSeconds"]) if query.get("gracePeriodSeconds") else None
