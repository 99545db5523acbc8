"""Shared fixtures.

``start_syncbridge(tmp_path, **opts)`` starts the real reference service (``syncbridge serve``)
as a subprocess on a free loopback port with a low KDF cost and waits for /readyz; the options
are those of :func:`syncbridge.launcher.start_syncbridge` (faults, admin_token, kdf_cost,
token_ttl, pool_size, memory_limit_mb, ...). The returned object has ``.url``,
``.admin_token``, ``.db_path``, ``.log_path``, ``.proc``, ``.set_faults(dict)`` and ``.stop()``.
Every service started through the fixture is stopped at teardown; ``start_syncbridge_for_module``
is the same for a module's shared runs (stopped at the module's end).

``s3`` is a fresh bucket on a local S3 server (moto's server mode on loopback, one per session)
with the environment pointing at it (fake keys, ``AWS_ENDPOINT_URL``): ``.url(*parts)`` gives
``s3://bucket/...``, ``.keys(prefix)`` and ``.get(key)`` read it through boto3.

Parallel runs (``make test``: pytest-xdist, ``--dist loadgroup``): every worker process has its
own temporary directory (``tmp_path``, ``tmp_path_factory``: each AIRFLOW_HOME and its SQLite
database, every service's files), its own S3 server (``s3_server`` is per process) and its
services on free ports. The modules that run the whole gate run in a few groups, at most that
many gate runs at once: ``tests/support/scheduling.py`` says why and how.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from syncbridge.launcher import RunningService
from syncbridge.launcher import start_syncbridge as _start
from tests.support.s3 import Bucket, S3Server, new_bucket
from tests.support.scheduling import (
    HEAVY_DIRS,
    HEAVY_MARKS,
    is_heavy,
    make_scheduler,
    module_of,
    run_order,
)

SLOW_MARKS = ("slow", *HEAVY_MARKS, "browser")


def _marked(item: pytest.Item, names: tuple[str, ...]) -> bool:
    return any(item.get_closest_marker(name) for name in names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked as a heavy tier lives where the scheduler looks for heavy modules; under
    xdist, the workers collect in ``run_order`` (the heavy groups, then the slow tiers)."""
    misplaced = [
        item.nodeid
        for item in items
        if _marked(item, HEAVY_MARKS) and not is_heavy(module_of(item.nodeid))
    ]
    if misplaced:
        raise pytest.UsageError(
            f"tests marked {' or '.join(HEAVY_MARKS)} belong in {' or '.join(HEAVY_DIRS)} "
            f"(tests/support/scheduling.py groups them by folder): {misplaced[:5]}"
        )
    if not hasattr(config, "workerinput"):  # the controller, or no xdist
        return
    slow = {item.nodeid for item in items if _marked(item, SLOW_MARKS)}
    position = {nodeid: i for i, nodeid in enumerate(run_order([i.nodeid for i in items], slow))}
    items.sort(key=lambda item: position[item.nodeid])


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    return make_scheduler(config, log)


def _services() -> Iterator[Callable[..., RunningService]]:
    started: list[RunningService] = []

    def factory(tmp_path, **opts) -> RunningService:
        svc = _start(tmp_path, **opts)
        started.append(svc)
        return svc

    try:
        yield factory
    finally:
        for svc in started:
            svc.stop()


@pytest.fixture
def start_syncbridge():
    yield from _services()


@pytest.fixture(scope="module")
def start_syncbridge_for_module():
    """``start_syncbridge`` for a module's shared runs: its services stop at the module's end."""
    yield from _services()


@pytest.fixture
def syncbridge_service(start_syncbridge, tmp_path) -> RunningService:
    """A fresh reference service with no faults (function-scoped)."""
    return start_syncbridge(tmp_path)


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch, tmp_path) -> Bucket:
    for name, value in s3_server.env(str(tmp_path)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return new_bucket(s3_server)
