"""The ``kubernetes`` rollback action: what ``kubectl rollout undo deployment/NAME`` does.

``{"type": "kubernetes", "namespace": ..., "deployment": ...}``: the deployment's previous
revision is restored, then the rollout is waited for (at most ``timeout_s``). The cluster is
the ``apps_api`` the caller gives (in a task: the ``kubernetes_default`` connection's), or the
default kubeconfig's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import model_validator

from loadgate import kube
from loadgate.actions.base import ActionConfig, Call, RollbackError
from loadgate.kube import KubernetesError, connect, status_of


class Config(ActionConfig):
    type: Literal["kubernetes"] = "kubernetes"
    namespace: str = ""
    deployment: str = ""

    @model_validator(mode="after")
    def _needs(self) -> Config:
        if not (self.namespace and self.deployment):
            raise ValueError("a kubernetes rollback needs 'namespace' and 'deployment'")
        return self


def validate(
    config: Config, target_url: str, secret: str | None = None, apps_api: Any = None
) -> str:
    try:
        return check_rollout_undo(
            apps_api or kube.connect().apps, config.namespace, config.deployment
        )
    except Exception as exc:  # API errors, missing config: all mean "cannot roll back"
        raise RollbackError(f"{type(exc).__name__}: {exc}") from None


def execute(config: Config, call: Call, outcome: dict[str, Any]) -> bool:
    try:
        outcome["rollout"] = rollout_undo(
            call.apps_api or kube.connect().apps,
            config.namespace,
            config.deployment,
            timeout_s=config.timeout_s,
        )
    except KubernetesError as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}"
        return False
    return True


REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"


class RolloutError(KubernetesError):
    """A rollback (rollout undo) that could not be done or did not complete in time."""


# --- the rollback action: kubectl rollout undo ------------------------------------------------

_SKIP_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)


def _selector_text(selector: Any) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for expr in selector.match_expressions or []:
        if expr.operator in ("In", "NotIn"):
            parts.append(f"{expr.key} {expr.operator.lower()} ({','.join(expr.values or [])})")
        elif expr.operator == "Exists":
            parts.append(expr.key)
        else:
            parts.append(f"!{expr.key}")
    return ",".join(parts)


def _revision(obj: Any) -> int | None:
    try:
        return int((obj.metadata.annotations or {}).get(REVISION, ""))
    except ValueError:
        return None


def _template_dict(api_client: Any, template: Any) -> dict[str, Any]:
    data: dict[str, Any] = api_client.sanitize_for_serialization(template)
    data.setdefault("metadata", {})
    labels = dict(data["metadata"].get("labels") or {})
    labels.pop(HASH_LABEL, None)
    data["metadata"]["labels"] = labels
    return data


def _images(template: dict[str, Any]) -> list[str]:
    return [c.get("image", "") for c in (template.get("spec") or {}).get("containers") or []]


def rollout_history(apps_api: Any, namespace: str, deployment: str) -> list[dict[str, Any]]:
    """The deployment's revisions, oldest first: revision, ReplicaSet, images, replicas."""
    dep = apps_api.read_namespaced_deployment(
        deployment, namespace, _request_timeout=kube.API_TIMEOUT
    )
    return [
        {
            "revision": rev,
            "replicaset": rs.metadata.name,
            "images": [c.image for c in rs.spec.template.spec.containers],
            "replicas": rs.spec.replicas or 0,
        }
        for rev, rs in _owned_revisions(apps_api, dep)
    ]


def _owned_revisions(apps_api: Any, dep: Any) -> list[tuple[int, Any]]:
    """The deployment's ReplicaSets with a revision, as kubectl finds them (selector, then the
    controller owner reference), sorted by revision."""
    selector = _selector_text(dep.spec.selector)
    replica_sets = apps_api.list_namespaced_replica_set(
        dep.metadata.namespace, label_selector=selector, _request_timeout=kube.API_TIMEOUT
    ).items
    owned = []
    for rs in replica_sets:
        refs = rs.metadata.owner_references or []
        if not any(r.controller and r.uid == dep.metadata.uid for r in refs):
            continue
        revision = _revision(rs)
        if revision is not None:
            owned.append((revision, rs))
    return sorted(owned, key=lambda pair: pair[0])


def check_rollout_undo(apps_api: Any, namespace: str, deployment: str) -> str:
    """Evidence that ``rollout undo`` can run (for the checklist); raises RolloutError if not."""
    dep = apps_api.read_namespaced_deployment(
        deployment, namespace, _request_timeout=kube.API_TIMEOUT
    )
    if dep.spec.paused:
        raise RolloutError(f"deployment {deployment} is paused: it cannot be rolled back")
    revisions = _owned_revisions(apps_api, dep)
    if len(revisions) < 2:
        raise RolloutError(f"no rollout history found for deployment {deployment!r}")
    rev, rs = revisions[-2]
    images = ", ".join(c.image for c in rs.spec.template.spec.containers)
    return f"deployment {namespace}/{deployment} can go back to revision {rev} ({images})"


def rollout_status(dep: Any) -> tuple[bool, str]:
    """``kubectl rollout status``'s judgement of a deployment: (done, what it is waiting for).

    Raises RolloutError when the deployment has exceeded its progress deadline.
    """
    status = dep.status
    name = dep.metadata.name
    if (dep.metadata.generation or 0) > (status.observed_generation or 0):
        return False, "waiting for the deployment spec update to be observed"
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            raise RolloutError(f'deployment "{name}" exceeded its progress deadline')
    desired = dep.spec.replicas if dep.spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    if updated < desired:
        return False, f"{updated} of {desired} updated replicas are available"
    if (status.replicas or 0) > updated:
        return False, f"{(status.replicas or 0) - updated} old replicas are pending termination"
    if (status.available_replicas or 0) < updated:
        return False, f"{status.available_replicas or 0} of {updated} updated replicas available"
    return True, f'deployment "{name}" successfully rolled out'


def wait_for_rollout(
    apps_api: Any,
    namespace: str,
    deployment: str,
    *,
    timeout_s: float = 300.0,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the rollout is complete (updated = ready = desired, no old replica left)."""
    deadline = clock() + timeout_s
    while True:
        dep = apps_api.read_namespaced_deployment(
            deployment, namespace, _request_timeout=kube.API_TIMEOUT
        )
        done, message = rollout_status(dep)
        if done:
            return _replicas(dep, message)
        if clock() >= deadline:
            raise RolloutError(
                f"rollout of {namespace}/{deployment} not complete after {timeout_s:g} s: {message}"
            )
        sleep(poll_s)


def _replicas(dep: Any, message: str) -> dict[str, Any]:
    status = dep.status
    return {
        "message": message,
        "desired": dep.spec.replicas if dep.spec.replicas is not None else 1,
        "updated": status.updated_replicas or 0,
        "ready": status.ready_replicas or 0,
        "available": status.available_replicas or 0,
    }


def rollout_undo(
    apps_api: Any,
    namespace: str,
    deployment: str,
    *,
    to_revision: int | None = None,
    timeout_s: float = 300.0,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """``kubectl rollout undo deployment/NAME [--to-revision=N]``, then wait for the rollout.

    As kubectl does: the deployment's ReplicaSets (by its selector and controller reference)
    give the revisions; the previous one (or ``to_revision``) is restored by a JSON patch that
    replaces ``spec.template`` with that ReplicaSet's template (without ``pod-template-hash``) and
    takes its annotations; the controller then rolls it out as a new revision. Then, as
    ``kubectl rollout status`` does, wait (at most ``timeout_s``) until every replica is updated
    and available and no old one is left.

    Returns what was done (no secret in it): ``from_revision``, ``to_revision``, ``images_before``,
    ``images_after``, ``skipped`` (the current template already was that revision), the rollout's
    replica counts and ``seconds``. Raises :class:`RolloutError` when there is nothing to roll
    back to, the deployment is paused, the patch is refused or the rollout does not complete.
    """
    started = clock()
    dep = apps_api.read_namespaced_deployment(
        deployment, namespace, _request_timeout=kube.API_TIMEOUT
    )
    if dep.spec.paused:
        raise RolloutError(f"deployment {deployment} is paused: resume it before rolling it back")
    revisions = _owned_revisions(apps_api, dep)
    if to_revision:
        chosen = next((pair for pair in revisions if pair[0] == to_revision), None)
        if chosen is None:
            raise RolloutError(f"unable to find the specified revision {to_revision}")
    else:
        if len(revisions) < 2:
            raise RolloutError(f"no rollout history found for deployment {deployment!r}")
        chosen = revisions[-2]
    revision, rs = chosen
    api_client = apps_api.api_client
    current = _template_dict(api_client, dep.spec.template)
    target = _template_dict(api_client, rs.spec.template)
    outcome: dict[str, Any] = {
        "deployment": f"{namespace}/{deployment}",
        "from_revision": _revision(dep),
        "to_revision": revision,
        "replicaset": rs.metadata.name,
        "images_before": _images(current),
        "images_after": _images(target),
        "skipped": False,
    }
    if current == target:
        outcome["skipped"] = True
        outcome["message"] = (
            f"skipped rollback (current template already matches revision {revision})"
        )
    else:
        dep_annotations = dep.metadata.annotations or {}
        annotations = {k: v for k, v in dep_annotations.items() if k in _SKIP_ANNOTATIONS}
        annotations.update(
            {k: v for k, v in (rs.metadata.annotations or {}).items() if k not in _SKIP_ANNOTATIONS}
        )
        patch = [
            {"op": "replace", "path": "/spec/template", "value": target},
            {
                "op": "replace" if dep.metadata.annotations is not None else "add",
                "path": "/metadata/annotations",
                "value": annotations,
            },
        ]
        try:
            apps_api.patch_namespaced_deployment(
                deployment, namespace, patch, _request_timeout=kube.API_TIMEOUT
            )
        except Exception as exc:
            raise RolloutError(
                f"failed restoring revision {revision} of {deployment}: "
                f"{status_of(exc) or ''} {getattr(exc, 'reason', exc)}".strip()
            ) from exc
        outcome["message"] = f"deployment.apps/{deployment} rolled back"
    remaining = max(1.0, timeout_s - (clock() - started))
    outcome["rollout"] = wait_for_rollout(
        apps_api,
        namespace,
        deployment,
        timeout_s=remaining,
        poll_s=poll_s,
        clock=clock,
        sleep=sleep,
    )
    outcome["seconds"] = round(clock() - started, 2)
    return outcome


def kubernetes_rollback(
    *,
    namespace: str,
    deployment: str,
    kube_config: str | None = None,
    context: str | None = None,
    in_cluster: bool = False,
    to_revision: int | None = None,
    timeout_s: float = 300.0,
    poll_s: float = 1.0,
) -> dict[str, Any]:
    """The ``kubernetes`` rollback action: :func:`rollout_undo` with clients from a kubeconfig
    (or in-cluster). Raises :class:`RolloutError`; the caller verifies the target's health."""
    apis = connect(kube_config, context=context, in_cluster=in_cluster)
    try:
        return rollout_undo(
            apis.apps,
            namespace,
            deployment,
            to_revision=to_revision,
            timeout_s=timeout_s,
            poll_s=poll_s,
        )
    finally:
        apis.client.close()
