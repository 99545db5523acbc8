"""The Prometheus source against a real Prometheus scraping the real reference service."""

from __future__ import annotations

import time

import pytest
import requests

from loadgate.metrics.prometheus import PrometheusError, PrometheusSource
from loadgate.run import checklist as cl
from syncbridge.launcher import start_syncbridge
from tests.support.prometheus import Prometheus

pytestmark = pytest.mark.slow  # a real Prometheus, scraping every second


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    svc = start_syncbridge(tmp / "svc", release="v9")
    prom = None
    try:
        prom = Prometheus(tmp / "prom", [svc.url.removeprefix("http://")])
        prom.wait_scraped()
        yield svc, prom
    finally:
        if prom is not None:
            prom.stop()
        svc.stop()


def test_queries_rates_rules_and_series(stack) -> None:
    svc, prom = stack
    queries = {
        "requests_per_s": 'sum(rate(syncbridge_http_requests_total{status="401"}[$window]))',
        "memory": "syncbridge_memory_utilization_ratio",
        "release_up": 'syncbridge_build_info{release="v9"}',
        "nothing": "no_such_metric",
    }
    source = PrometheusSource(prom.url, queries, min_window_s=5)
    deadline = time.monotonic() + 20
    values: dict = {}
    while time.monotonic() < deadline:
        # a series' first sample has no rate: keep 401s coming while Prometheus scrapes
        for _ in range(10):
            requests.get(f"{svc.url}/api/v1/sessions/nope", timeout=5)
        values = source.sample(list(queries), 10)
        if values["requests_per_s"]:
            break
        time.sleep(1)
    assert values["requests_per_s"] > 0
    assert 0 < values["memory"] < 1
    assert values["release_up"] == 1.0
    assert values["nothing"] is None
    assert source.healthy()
    rules = source.alert_rules()
    assert [r["name"] for r in rules] == ["SyncBridgeHighErrorRate"]
    assert source.missing_series(["syncbridge_http_requests_total", "nope_total"]) == ["nope_total"]
    now = time.time()
    points = source.query_range("syncbridge_memory_utilization_ratio", now - 10, now, step_s=1)
    assert points and all(0 < v < 1 for _, v in points)


def test_bad_query_and_down_server(stack) -> None:
    _, prom = stack
    source = PrometheusSource(prom.url, {"bad": "sum(("})
    with pytest.raises(PrometheusError, match="bad_data"):
        source.query("sum((")
    assert source.sample(["bad"], 10) == {"bad": None}
    down = PrometheusSource("http://127.0.0.1:9", {"x": "up"}, timeout=0.5)
    assert down.sample(["x"], 10) == {"x": None}
    assert not down.healthy()


def test_checklist_reads_prometheus(stack) -> None:
    svc, prom = stack
    source = PrometheusSource(prom.url, {})
    monitoring = cl.check_monitoring(svc.url, source, {}, ["syncbridge_http_requests_total"])
    assert monitoring.status == "pass", monitoring.evidence
    missing = cl.check_monitoring(svc.url, source, {}, ["kube_pod_container_status_restarts_total"])
    assert missing.status == "fail"
    rules = cl.check_alert_rules(source)
    assert rules.status == "pass" and "SyncBridgeHighErrorRate" in rules.evidence
