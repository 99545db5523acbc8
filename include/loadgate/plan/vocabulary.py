"""The metrics a plan's criteria may name: what the load generator measures, with its kinds,
stats and units, and the stats of system metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


LATENCY_STATS = ("p50", "p90", "p95", "p99", "avg", "min", "max")
# "sustained": the highest level held through ``window`` seconds of consecutive samples (the
# best of each window's minimum), as an alert with ``for: <window>`` reads it; fewer samples
# than the window: no data
SYSTEM_STATS = ("max", "min", "avg", "last", "p95", "sum", "sustained")


@dataclass(frozen=True)
class MetricSpec:
    kind: str  # rate | latency | count | gauge
    stats: tuple[str, ...]
    default_stat: str
    unit: str
    description: str


def _rate(description: str) -> MetricSpec:
    return MetricSpec("rate", ("rate",), "rate", "ratio", description)


def _latency(description: str) -> MetricSpec:
    return MetricSpec("latency", LATENCY_STATS, "p95", "ms", description)


def _count(description: str) -> MetricSpec:
    return MetricSpec("count", ("count", "per_s"), "count", "", description)


ENGINE_METRICS: dict[str, MetricSpec] = {
    "http_req_failed": _rate(
        "failed requests / requests: no response, or a status the request did not expect"
    ),
    "http_5xx_rate": _rate("5xx responses / requests"),
    "http_unavailable_rate": _rate(
        "requests not served (5xx, connect error, timeout, closed, protocol error) / requests"
    ),
    "http_availability": _rate("1 - http_unavailable_rate"),
    "http_req_duration": _latency("request duration, first byte sent to last byte received"),
    "http_reqs": _count("requests"),
    "checks_failed_rate": _rate("failed checks / checks"),
    "iterations": _count("completed iterations"),
    "dropped_iterations": _count("iterations that could not start (no free VU)"),
    "vus": MetricSpec("gauge", ("max",), "max", "", "active VUs, all shards, max over time"),
    "ws_error_rate": _rate(
        "(failed connects + unexpected closes + error replies + send errors)"
        " / (connect attempts + messages sent)"
    ),
    "ws_connect_success_rate": _rate("established connections / connect attempts"),
    "ws_connections": MetricSpec(
        "gauge", ("max",), "max", "", "open WebSocket connections, all shards, max over time"
    ),
    "ws_connect_duration": _latency("WebSocket connect + upgrade time"),
    "ws_rtt": _latency("WebSocket round trips (scope names: heartbeat, state_ack, ...)"),
    "ws_msgs_sent": _count("WebSocket messages sent"),
    "ws_msgs_received": _count("WebSocket messages received"),
}
