"""A test-only Kubernetes API server on loopback that runs each pod's containers as local processes.

No cluster runs here, so the real clients (the KubernetesPodOperator of the cncf.kubernetes
provider, the ``kubernetes`` Python client, ``loadgate.kubernetes``) talk to this server instead,
over plain HTTP with any bearer token. It implements what they call, with the shapes and the
status codes of a real API server, and refuses (a ``Status`` answer, never a silent ignore) what
it does not implement:

core/v1
    pods: create (``name`` or ``generateName``), get, list (``labelSelector``,
    ``fieldSelector``; one namespace or all), patch (strategic-merge and JSON patch), delete one
    (graceful: SIGTERM, ``gracePeriodSeconds``, then SIGKILL) and delete collection by label;
    ``/status``; ``/log`` (:mod:`.logs`). Events (list with
    ``fieldSelector=involvedObject.name=…``), secrets. ``container_runs()`` tells when each
    container ran (sub-second start and end), also after its pod was deleted; ``pending_s``
    may give each pod its own start delay.
apps/v1
    deployments (create, get, list, patch; ``/status``) and replicasets (get, list by label),
    with a small deployment controller (:mod:`.deployments`).

The modules, by concern: :mod:`.server` (HTTP, :class:`FakeKubeAPI`), :mod:`.store` (objects,
validation), :mod:`.pods` (pods as processes, their status and events), :mod:`.logs`,
:mod:`.deployments`, :mod:`.selectors`, :mod:`.patches`, :mod:`.kubeconfig` (client set-up).

    with FakeKubeAPI() as kube:
        config = kube.write_kubeconfig(tmp_path / "kubeconfig", namespace="loadgate")
        ...  # KubernetesPodOperator(config_file=str(config), in_cluster=False, ...)
"""

from .selectors import parse_label_selector
from .server import FakeKubeAPI

__all__ = ["FakeKubeAPI", "parse_label_selector"]
