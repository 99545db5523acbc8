"""Shared fixtures.

``start_syncbridge(tmp_path, **opts)`` starts the real reference service (``syncbridge serve``)
as a subprocess on a free loopback port with a low KDF cost and waits for /readyz; the options
are those of :func:`syncbridge.launcher.start_syncbridge` (faults, admin_token, kdf_cost,
token_ttl, pool_size, memory_limit_mb, ...). The returned object has ``.url``,
``.admin_token``, ``.db_path``, ``.log_path``, ``.proc``, ``.set_faults(dict)`` and ``.stop()``.
Every service started through the fixture is stopped at teardown.
"""

from __future__ import annotations

import pytest

from syncbridge.launcher import RunningService
from syncbridge.launcher import start_syncbridge as _start


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
