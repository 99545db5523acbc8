"""A real Prometheus (Debian's package) on loopback, scraping given targets every second."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

RULES = """
groups:
  - name: loadgate-test
    rules:
      - alert: SyncBridgeHighErrorRate
        expr: sum(rate(syncbridge_http_requests_total{status=~"5.."}[1m])) > 0.05
        for: 1m
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Prometheus:
    def __init__(self, workdir: Path, targets: list[str], rules: str | None = RULES) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip(
                "Prometheus is not installed (Debian package 'prometheus'; .ci/run installs it)"
            )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = [
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n",
            "scrape_configs:\n  - job_name: target\n    static_configs:\n",
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n",
        ]
        if rules:
            (workdir / "rules.yml").write_text(rules)
            config.insert(1, f"rule_files: ['{workdir / 'rules.yml'}']\n")
        (workdir / "prometheus.yml").write_text("".join(config))
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_scraped(self, timeout: float = 30.0) -> None:
        """Until Prometheus is ready and has scraped every target at least twice."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = requests.get(
                    f"{self.url}/api/v1/query",
                    params={"query": "count_over_time(up[1m])"},
                    timeout=2,
                )
                result = r.json()["data"]["result"] if r.status_code == 200 else []
                if result and all(float(s["value"][1]) >= 2 for s in result):
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise TimeoutError("Prometheus did not scrape its targets in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
