"""The load pods of a run through the API: one call deletes them all, by label."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from loadgate import kube
from loadgate.backends.kubernetes.manifests import APP, APP_LABEL, RUN_LABEL
from loadgate.kube import KubernetesError, status_of

if TYPE_CHECKING:
    pass


# --- pods through the API ---------------------------------------------------------------------


def delete_run_pods(
    api: Any,
    namespace: str,
    run_label: str,
    *,
    grace_period_s: int | None = None,
    wait_s: float = 0.0,
    poll_s: float = 0.5,
) -> list[str]:
    """Delete every load pod of one run (by label); the names of the pods deleted.

    ``api`` is a ``CoreV1Api``. Pods already gone are fine (another cleanup got there first).
    With ``wait_s`` > 0, wait until none is left (their processes have ended), and raise
    :class:`KubernetesError` if some still are after that long.
    """
    selector = f"{APP_LABEL}={APP},{RUN_LABEL}={run_label}"
    pods = api.list_namespaced_pod(
        namespace, label_selector=selector, _request_timeout=kube.API_TIMEOUT
    ).items
    deleted = []
    for pod in pods:
        kwargs: dict[str, Any] = {}
        if grace_period_s is not None:
            kwargs["grace_period_seconds"] = grace_period_s
        try:
            api.delete_namespaced_pod(
                pod.metadata.name, namespace, _request_timeout=kube.API_TIMEOUT, **kwargs
            )
            deleted.append(pod.metadata.name)
        except Exception as exc:
            if status_of(exc) != 404:
                raise
    if wait_s > 0:
        deadline = time.monotonic() + wait_s
        while True:
            left = api.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=kube.API_TIMEOUT
            ).items
            if not left:
                break
            if time.monotonic() >= deadline:
                names = ", ".join(p.metadata.name for p in left)
                raise KubernetesError(f"pods still terminating after {wait_s:g} s: {names}")
            time.sleep(poll_s)
    return deleted
