"""``loadgate.kubernetes`` bounds what an API server can hold it to: every call has a deadline
(an API server that accepts and never answers fails the call), and a container's log is
streamed, kept to its last ``max_bytes`` and read for a bounded time."""

from __future__ import annotations

import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from loadgate import kube
from loadgate.actions import kubernetes as rollout
from loadgate.backends.kubernetes import logs as k8s_logs
from loadgate.backends.kubernetes import pods as k8s_pods

pytestmark = pytest.mark.timeout(120)
NAMESPACE = "loadgate"


def api_client(url: str) -> Any:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = url
    configuration.api_key = {"authorization": "Bearer test-token"}
    return client.ApiClient(configuration)


class SilentServer:
    """Accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class LogServer:
    """Lists one pod (``app=x``) and serves its log from ``log()``: an iterator of chunks."""

    def __init__(self, log: Callable[[], Iterator[bytes]]) -> None:
        pod = {
            "metadata": {"name": "p", "namespace": NAMESPACE, "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]},
            "status": {"phase": "Running", "containerStatuses": []},
        }
        listing = json.dumps({"kind": "PodList", "apiVersion": "v1", "items": [pod]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.split("?")[0].endswith("/pods"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(listing)))
                    self.end_headers()
                    self.wfile.write(listing)
                    return
                self.send_response(200)  # HTTP/1.0, no length: the body ends with the connection
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                try:
                    for chunk in log():
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def finishes(call: Callable[[], Any], within_s: float) -> tuple[float, Any, BaseException | None]:
    """Run ``call`` in a thread: (seconds it took, its result, what it raised); fails the test
    if it is still running after ``within_s``."""
    out: dict[str, Any] = {}

    def target() -> None:
        started = time.monotonic()
        try:
            out["result"] = call()
        except BaseException as exc:
            out["error"] = exc
        out["took"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(within_s)
    assert not thread.is_alive(), f"still waiting after {within_s} s"
    return out["took"], out.get("result"), out.get("error")


@pytest.mark.slow
def test_every_call_gives_up_on_an_api_server_that_never_answers(monkeypatch, tmp_path) -> None:
    from kubernetes import client

    monkeypatch.setattr(kube, "API_TIMEOUT", (2.0, 0.5))
    silent = SilentServer()
    apis = api_client(silent.url)
    core, apps = client.CoreV1Api(apis), client.AppsV1Api(apis)
    calls: dict[str, Callable[[], Any]] = {
        "delete_run_pods": lambda: k8s_pods.delete_run_pods(core, NAMESPACE, "r"),
        "collect_pod_logs": lambda: k8s_logs.collect_pod_logs(core, NAMESPACE, "app=x", tmp_path),
        "rollout_history": lambda: rollout.rollout_history(apps, NAMESPACE, "svc"),
        "check_rollout_undo": lambda: rollout.check_rollout_undo(apps, NAMESPACE, "svc"),
        "wait_for_rollout": lambda: rollout.wait_for_rollout(apps, NAMESPACE, "svc", timeout_s=1),
        "rollout_undo": lambda: rollout.rollout_undo(apps, NAMESPACE, "svc", timeout_s=1),
    }
    try:
        for name, call in calls.items():
            # the client retries a GET that timed out 3 times: 4 reads of 0.5 s
            took, _, error = finishes(call, within_s=15)
            assert error is not None, name
            assert "timed out" in repr(error).lower() or "timeout" in repr(error).lower(), name
            assert took < 10, (name, took)
    finally:
        apis.close()
        silent.close()


def test_a_log_still_growing_is_read_for_a_bounded_time_and_kept_to_its_tail(
    monkeypatch, tmp_path
) -> None:
    def forever() -> Iterator[bytes]:
        n = 0
        while True:
            n += 1
            yield b"line %08d\n" % n
            time.sleep(0.01)

    monkeypatch.setattr(k8s_logs, "LOG_READ_S", 1.0, raising=False)
    server = LogServer(forever)
    apis = api_client(server.url)
    try:
        from kubernetes import client

        core = client.CoreV1Api(apis)
        took, entries, error = finishes(
            lambda: k8s_logs.collect_pod_logs(core, NAMESPACE, "app=x", tmp_path, max_bytes=100),
            within_s=20,
        )
        assert error is None and took < 10
        (entry,) = entries
        assert entry["incomplete"] is True and entry["bytes"] == 100
        kept = (tmp_path / "p.log").read_bytes()
        assert len(kept) == 100 and kept.endswith(b"\n")
        last = int(kept.rstrip(b"\n").rsplit(b"line ", 1)[1])
        assert last > 20  # the end of what came, not its start
        # the log's connection, its body unfinished, is not reused: the next call works
        assert [p.metadata.name for p in core.list_namespaced_pod(NAMESPACE).items] == ["p"]
    finally:
        apis.close()
        server.close()


def test_a_big_log_is_streamed_never_held_whole(tmp_path: Path) -> None:
    """20 MB of log, 1 KB kept: the collector never holds much more than a chunk."""
    line = b"x" * 99 + b"\n"

    def big() -> Iterator[bytes]:
        for i in range(200):
            yield line * 999 + b"block %06d end\n" % i

    server = LogServer(big)
    apis = api_client(server.url)
    try:
        from kubernetes import client

        core = client.CoreV1Api(apis)
        tracemalloc.start()
        try:
            entries = k8s_logs.collect_pod_logs(core, NAMESPACE, "app=x", tmp_path, max_bytes=1000)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        (entry,) = entries
        assert entry["bytes"] == 1000 and "incomplete" not in entry
        assert (tmp_path / "p.log").read_bytes().endswith(b"block 000199 end\n")
        assert peak < 4_000_000, peak  # the log is 20 MB
    finally:
        apis.close()
        server.close()
