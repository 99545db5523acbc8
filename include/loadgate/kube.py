"""The Kubernetes client objects loadgate's functions take, and the errors and
deadline every call to an API server shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


# (connect, read) seconds for every API call: the read timeout bounds each wait for bytes
API_TIMEOUT: tuple[float, float] = (10.0, 60.0)


class KubernetesError(RuntimeError):
    """Something the Kubernetes backend cannot do; the message says what and why."""


# --- clients ----------------------------------------------------------------------------------


@dataclass
class KubeAPIs:
    """The API objects this module's functions take."""

    client: Any
    core: Any
    apps: Any


def connect(
    kube_config: str | None = None, *, context: str | None = None, in_cluster: bool = False
) -> KubeAPIs:
    """Clients from a kubeconfig file (``None``: ``$KUBECONFIG`` or ``~/.kube/config``) or from
    the pod's service account (``in_cluster``)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=kube_config, context=context, client_configuration=configuration
        )
    api_client = client.ApiClient(configuration)
    return KubeAPIs(api_client, client.CoreV1Api(api_client), client.AppsV1Api(api_client))


def status_of(exc: Exception) -> int | None:
    """The HTTP status of an API error (``ApiException.status``), if it has one."""
    return getattr(exc, "status", None)
