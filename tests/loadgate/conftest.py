"""Helpers for the engine's tests against the real reference service on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

PLAN_FILE = (
    Path(__file__).parents[2] / "include" / "loadgate_syncbridge" / "plans" / "harmonyflow-10k.yaml"
)


def _post(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def seed_users(url: str, count: int, path: Path) -> list[dict[str, Any]]:
    """Register users 0..count-1 with their session ``session-i``; write the users file."""
    users = []
    for i in range(count):
        email = f"loadtest{i}@example.com"
        tokens = _post(
            f"{url}/api/v1/auth/register",
            {"email": email, "password": "LoadTest123!", "name": f"Load Test User {i}"},
        )
        _post(
            f"{url}/api/v1/sessions",
            {"sessionId": f"session-{i}", "state": {"data": f"seed-{i}"}},
            tokens["accessToken"],
        )
        users.append(
            {"email": email, "password": "LoadTest123!", "sessionId": f"session-{i}", "index": i}
        )
    path.write_text("".join(json.dumps(u) + "\n" for u in users))
    return users


def request_counts(url: str) -> dict[tuple[str, str, str], float]:
    """The service's own ``syncbridge_http_requests_total`` by (method, route, status)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "syncbridge_http_requests_total":
                out[(s.labels["method"], s.labels["route"], s.labels["status"])] = s.value
    return out


def api_counts(url: str) -> dict[tuple[str, str, str], float]:
    """Request counts without the service's own ops routes (metrics scrapes, health)."""
    return {
        k: v
        for k, v in request_counts(url).items()
        if k[1] not in ("/metrics", "/readyz", "/healthz") and not k[1].startswith("/admin")
    }


def load_counts(before: dict, after: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def summary_counts(summary: dict) -> dict[tuple[str, str, str], float]:
    """The engine's counts in the service's terms: (method, route, status class) -> n."""
    return {
        (name.split(" ", 1)[0], name.split(" ", 1)[1], cls): n
        for name, fig in summary["by_name"].items()
        for cls, n in fig["status_classes"].items()
    }


def service_by_class(counts: dict) -> dict[tuple[str, str, str], float]:
    out: dict = {}
    for (method, route, status), n in counts.items():
        key = (method, route, f"{status[0]}xx")
        out[key] = out.get(key, 0) + n
    return out


def write_plan(tmp_path: Path, data: dict, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def loadgate(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
    """``loadgate ARGS`` as a separate process (as a pod or the local backend runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "loadgate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kw,
    )


def run_plan_stage(
    seeded: Any,
    stage: str,
    out: Path,
    scale: str,
    time_scale: str,
    timeout: float = 60,
    **options: Any,
) -> subprocess.CompletedProcess:
    """``run-stage`` of the real plan's ``stage`` against the seeded service, as its users."""
    from tests.support.helpers import run_stage_args

    args = run_stage_args(
        PLAN_FILE,
        stage,
        seeded.url,
        out,
        users=seeded.users_file,
        scale=scale,
        time_scale=time_scale,
        **options,
    )
    return loadgate(*args, timeout=timeout)


def loadgate_bg(*args: str, log: Path) -> subprocess.Popen:
    handle = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "loadgate", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def summarize_json(*dirs: Path) -> dict:
    proc = loadgate("summarize", *map(str, dirs), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@dataclass
class Seeded:
    url: str
    users_file: Path
    service: Any


@pytest.fixture
def seeded(start_syncbridge: Callable[..., Any], tmp_path: Path) -> Seeded:
    """A fresh reference service with 12 seeded users (``session-0`` … ``session-11``)."""
    svc = start_syncbridge(tmp_path / "svc")
    users = tmp_path / "users.jsonl"
    seed_users(svc.url, 12, users)
    return Seeded(svc.url, users, svc)
