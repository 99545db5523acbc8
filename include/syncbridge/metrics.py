"""Prometheus metrics of the service (text exposition at /metrics).

The names are a contract: the gate's plans query them. Label children are cached in dicts so
recording a request costs a dict lookup and two lock-protected additions.
"""

from __future__ import annotations

import contextlib
import os

import prometheus_client
import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from .faults import FAULT_NAMES

# Fine below 100 ms (a healthy service answers in single milliseconds), coarse above.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST


class Metrics:
    def __init__(
        self, release: str, memory_limit_bytes: int, cpu_limit_cores: float, pool_size: int
    ):
        self.registry = reg = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=reg)
        self._proc = psutil.Process(os.getpid())

        self.http_requests = Counter(
            "syncbridge_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=reg,
        )
        self.http_duration = Histogram(
            "syncbridge_http_request_duration_seconds",
            "HTTP request duration by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.ws_connections = Gauge(
            "syncbridge_websocket_connections",
            "Open WebSocket connections (authenticated or not).",
            registry=reg,
        )
        self.ws_messages = Counter(
            "syncbridge_websocket_messages_total",
            "WebSocket messages by direction (in|out) and type.",
            ["direction", "type"],
            registry=reg,
        )
        self.ws_dropped = Counter(
            "syncbridge_websocket_dropped_total",
            "WebSocket connections the server dropped abruptly (no close handshake).",
            registry=reg,
        )
        self.db_pool_size = Gauge(
            "syncbridge_db_pool_size", "Storage connection pool size.", registry=reg
        )
        self.db_pool_in_use = Gauge(
            "syncbridge_db_pool_in_use", "Storage connections checked out.", registry=reg
        )
        self.db_connection_errors = Counter(
            "syncbridge_db_connection_errors_total",
            "Storage connection failures (lost or unavailable connections, pool timeouts).",
            registry=reg,
        )
        self.memory_limit = Gauge(
            "syncbridge_memory_limit_bytes",
            "Memory limit of the service (like a container limit).",
            registry=reg,
        )
        self.memory_ratio = Gauge(
            "syncbridge_memory_utilization_ratio",
            "Resident memory as a fraction of the memory limit.",
            registry=reg,
        )
        self.cpu_limit = Gauge(
            "syncbridge_cpu_limit_cores", "CPU limit of the service in cores.", registry=reg
        )
        self.build_info = Gauge(
            "syncbridge_build_info", "Build information; always 1.", ["release"], registry=reg
        )
        self.faults_active = Gauge(
            "syncbridge_faults_active",
            "Injected faults: 1 when the fault is set, else 0.",
            ["fault"],
            registry=reg,
        )

        self.memory_limit_bytes = memory_limit_bytes
        self.memory_limit.set(memory_limit_bytes)
        self.memory_ratio.set_function(lambda: self.rss() / self.memory_limit_bytes)
        self.cpu_limit.set(cpu_limit_cores)
        self.build_info.labels(release).set(1)
        self.db_pool_size.set(pool_size)
        for name in FAULT_NAMES:
            self.faults_active.labels(name).set(0)

        self._req_children: dict[tuple[str, str, int], Counter] = {}
        self._dur_children: dict[tuple[str, str], Histogram] = {}
        self._ws_children: dict[tuple[str, str], Counter] = {}

    def rss(self) -> int:
        return self._proc.memory_info().rss

    def observe_request(self, route: str, method: str, status: int, seconds: float | None) -> None:
        key = (route, method, status)
        child = self._req_children.get(key)
        if child is None:
            child = self._req_children[key] = self.http_requests.labels(route, method, str(status))
        child.inc()
        if seconds is None:
            return
        dkey = (route, method)
        hist = self._dur_children.get(dkey)
        if hist is None:
            hist = self._dur_children[dkey] = self.http_duration.labels(route, method)
        hist.observe(seconds)

    def ws_message(self, direction: str, mtype: str, n: int = 1) -> None:
        key = (direction, mtype)
        child = self._ws_children.get(key)
        if child is None:
            child = self._ws_children[key] = self.ws_messages.labels(direction, mtype)
        child.inc(n)

    def set_release(self, old: str, new: str) -> None:
        with contextlib.suppress(KeyError):
            self.build_info.remove(old)
        self.build_info.labels(new).set(1)

    def set_faults(self, active: dict[str, bool]) -> None:
        for name in FAULT_NAMES:
            self.faults_active.labels(name).set(1 if active.get(name) else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
