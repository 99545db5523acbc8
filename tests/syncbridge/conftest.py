from __future__ import annotations

import pytest

from syncbridge.launcher import start_syncbridge as _start
from tests.syncbridge.sbtestlib import Api


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory):
    """One fault-free service per test module (tests that change faults start their own)."""
    svc = _start(tmp_path_factory.mktemp("syncbridge"))
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def api(shared_service) -> Api:
    return Api(shared_service.url)
