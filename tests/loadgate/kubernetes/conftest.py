"""Fixtures: a test Kubernetes API server (pods run as local processes) and clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.k8s import FakeKubeAPI

NAMESPACE = "loadgate"


@pytest.fixture
def kube() -> Iterator[FakeKubeAPI]:
    """A fresh server; every process it started is ended at teardown."""
    server = FakeKubeAPI(grace_cap_s=3.0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(kube: FakeKubeAPI, tmp_path: Path) -> Path:
    return kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)


@pytest.fixture
def api_client(kube: FakeKubeAPI) -> Iterator[Any]:
    client = kube.client(NAMESPACE)
    yield client
    client.close()


@pytest.fixture
def core(api_client: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(api_client)
