"""Shared fixtures.

``start_syncbridge(tmp_path, **opts)`` starts the real reference service (``syncbridge serve``)
as a subprocess on a free loopback port with a low KDF cost and waits for /readyz; the options
are those of :func:`syncbridge.launcher.start_syncbridge` (faults, admin_token, kdf_cost,
token_ttl, pool_size, memory_limit_mb, ...). The returned object has ``.url``,
``.admin_token``, ``.db_path``, ``.log_path``, ``.proc``, ``.set_faults(dict)`` and ``.stop()``.
Every service started through the fixture is stopped at teardown.

``s3`` is a fresh bucket on a local S3 server (moto's server mode on loopback, one per session)
with the environment pointing at it (fake keys, ``AWS_ENDPOINT_URL``): ``.url(*parts)`` gives
``s3://bucket/...``, ``.keys(prefix)`` and ``.get(key)`` read it through boto3.

Parallel runs (``make test``: pytest-xdist, ``--dist loadgroup``): every worker process has its
own temporary directory (``tmp_path``, ``tmp_path_factory``: each AIRFLOW_HOME and its SQLite
database, every service's files), its own S3 server (``s3_server`` is per process) and its
services on free ports, so tests share nothing but the CPU. That they do share: a gate run
judges whether its load generator could keep up (a lagging event loop makes the stage
``invalid``), and four ``airflow dags test`` runs at once on two cores starve their generators.
So the modules of the tiers that run the whole gate (e2e, deployment) and those that compare
the verdicts of measured runs (``GATE_MODULES``) are put in ``HEAVY_GROUPS`` xdist groups: each
group runs on one worker, module after module (a module's fixtures are made once), at most that
many such runs share the machine, and the other workers take the rest, the slow tiers first
(the longest tests start early; the short ones fill the end).

One group since the deployment tier came: a deployment module runs a whole Airflow
(scheduler, API server, PostgreSQL) beside its load, and with a ``dags test`` gate beside it
a healthy e2e stage read p95 557 ms against its 500 ms limit on this 2-core machine. Gate
runs therefore go one at a time; balancing them by measured cost is the next step.
"""

from __future__ import annotations

import pytest

from syncbridge.launcher import RunningService
from syncbridge.launcher import start_syncbridge as _start
from tests.support.s3 import Bucket, S3Server, new_bucket

HEAVY_GROUPS = 1  # gate runs (e2e, deployment modules) at once under xdist: see below
HEAVY_MARKS = ("e2e", "deployment")
GATE_MODULES = ("tests/loadgate/test_gate.py", "tests/loadgate/test_gate_regressions.py")
SLOW_MARKS = ("slow", *HEAVY_MARKS, "browser")


def _marked(item: pytest.Item, names: tuple[str, ...]) -> bool:
    return any(item.get_closest_marker(name) for name in names)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist only (a serial run keeps the files' order): the slow tiers first, and the
    modules that run the whole gate in ``HEAVY_GROUPS`` groups (see the module's docstring).
    Every worker computes the same order and groups, as xdist requires."""
    if not hasattr(config, "workerinput"):  # the controller, or no xdist
        return
    items.sort(key=lambda item: not _marked(item, SLOW_MARKS))  # stable: files' order within
    root = config.rootpath
    heavy = sorted(
        {
            item.path.relative_to(root).as_posix()
            for item in items
            if _marked(item, HEAVY_MARKS) or item.path.relative_to(root).as_posix() in GATE_MODULES
        }
    )
    for item in items:
        module = item.path.relative_to(root).as_posix()
        if module in heavy:
            group = heavy.index(module) % HEAVY_GROUPS
            item.add_marker(pytest.mark.xdist_group(f"gate-runs-{group}"))


@pytest.fixture
def start_syncbridge():
    started: list[RunningService] = []

    def factory(tmp_path, **opts) -> RunningService:
        svc = _start(tmp_path, **opts)
        started.append(svc)
        return svc

    yield factory
    for svc in started:
        svc.stop()


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
