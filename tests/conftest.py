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
"""

from __future__ import annotations

import pytest

from syncbridge.launcher import RunningService
from syncbridge.launcher import start_syncbridge as _start
from tests.support.s3 import Bucket, S3Server, new_bucket


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
