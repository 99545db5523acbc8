"""The gated service as a deploy leaves it: the reference service on loopback, a release over
the previous one, and what load reached it."""

from __future__ import annotations

from pathlib import Path

import requests


def deploy(
    start_syncbridge, tmp_path: Path, release: str, *, admin_token: str, faults: dict | None = None
):
    """The previous release (``v-prev``), then ``release`` over it on the same database, with
    its admin token (what the rollback action uses) and ``faults``."""
    db = tmp_path / "syncbridge.db"
    start_syncbridge(tmp_path / "previous", release="v-prev", db_path=db).stop()
    return start_syncbridge(
        tmp_path / release, release=release, db_path=db, admin_token=admin_token, faults=faults
    )


def requests_counted(svc, route: str) -> float:
    """The requests the service counted (its own metric) on routes starting with ``route``."""
    total = 0.0
    for line in requests.get(f"{svc.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("syncbridge_http_requests_total{") and f'route="{route}' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def api_requests(svc) -> float:
    """The load the service saw: its requests to /api/ routes."""
    return requests_counted(svc, "/api/")
