"""``make up`` / ``make down`` (``loadgate_syncbridge.up``) as a person uses them, in a temp folder.

``up`` starts Airflow (scheduler, dag-processor, triggerer, api-server on SQLite) with this
checkout's DAG and the reference service, waits until the UI answers with ``release_gate``
listed, and prints the URL and how to log in (where the generated password is, never the
password); a second ``up`` starts nothing; ``down`` stops every process it started and frees
its ports. The browser tests (``test_trigger_form.py``) use an ``up`` of their own.
"""

from __future__ import annotations

import pytest
import requests

from loadgate_syncbridge.up import port_free
from tests.support.airflow_server import DAG_ID
from tests.support.airflow_ui import LocalUp, still_running

pytestmark = [pytest.mark.deployment, pytest.mark.slow]


def test_make_up_starts_once_and_make_down_leaves_nothing(tmp_path) -> None:
    up = LocalUp(tmp_path / ".up")
    started: set[int] = set()
    ports: list[int] = []
    try:
        printed = up.up()
        url, service, ports = up.url, up.service_url, up.ports()
        # what a person reads: where to go, who to log in as, where the password is (not it)
        assert url in printed and service in printed, printed
        assert "log in as admin" in printed
        assert str(up.passwords_file) in printed
        assert up.password not in printed
        assert "make down" in printed

        ui = requests.get(url, timeout=30)
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        dags = up.api("GET", "/dags").json()["dags"]
        assert DAG_ID in [d["dag_id"] for d in dags]
        health = requests.get(f"{url}/api/v2/monitor/health", timeout=30).json()
        for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
            assert health[component]["status"] == "healthy", health
        # the reference service the profile points at: release v1 over v0
        assert requests.get(f"{service}/healthz", timeout=10).json()["release"] == "v1"

        started = up.pids()
        assert len(started) >= 5, started  # 4 Airflow components and the service, and children
        again = up.up()
        assert "already running" in again and url in again
        assert up.pids() == started, "a second make up started processes"
    finally:
        stopped = up.down()
    assert "stopped" in stopped and "api-server" in stopped and "syncbridge" in stopped
    assert still_running(started) == set(), "make down left processes"
    assert all(port_free(port) for port in ports), ports
    assert up.pids() == set()
    assert "nothing was running" in up.down()
