"""How clients find the test server: a kubeconfig (any bearer token does), an Airflow
``kubernetes`` connection, a ``kubernetes`` client."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

TOKEN = "test-token"


def kubeconfig(url: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "fake", "user": {"token": TOKEN}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}
        ],
        "current-context": "fake",
    }


def write_kubeconfig(url: str, path: str | os.PathLike[str], namespace: str = "default") -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(kubeconfig(url, namespace), sort_keys=False))
    target.chmod(0o600)
    return target


def airflow_connection_env(kubeconfig_path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``kubernetes_default`` connection (``AIRFLOW_CONN_…``), reading the kubeconfig."""
    value = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig_path)}}
    return {"AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(value)}


def api_client(url: str, namespace: str = "default") -> Any:
    """A ``kubernetes.client.ApiClient`` configured for the server at ``url``."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config_from_dict(
        kubeconfig(url, namespace), client_configuration=configuration
    )
    return client.ApiClient(configuration)
