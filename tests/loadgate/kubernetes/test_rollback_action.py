"""The ``kubernetes`` rollback action through loadgate.actions (what the rollback task
runs)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loadgate.actions import execute, kubernetes
from loadgate.run import checklist as cl

from .conftest import NAMESPACE
from .test_backend_api import deploy, deployment, image_of

CONFIG = kubernetes.Config(
    namespace=NAMESPACE,
    deployment="syncbridge",
    timeout_s=10,
    verify_timeout_s=5,
)


def _rollback(apps, target_url: str, release: str, reasons: list[str]) -> dict:
    """What the rollback task does with ``CONFIG`` after a failed gate of ``release``."""
    return execute(
        CONFIG,
        target_url=target_url,
        release=release,
        run_id="r",
        reasons=reasons,
        apps_api=apps,
    )


def test_checklist_then_rollback_undoes_the_release(kube, apps, syncbridge_service) -> None:
    kube.create("apps/v1", "deployments", NAMESPACE, deployment("syncbridge", "syncbridge:v1"))
    deploy(apps, "syncbridge", "syncbridge:v2")
    check = cl.check_rollback(CONFIG, syncbridge_service.url, None, apps)
    assert check.status == "pass" and "revision 1" in check.evidence
    outcome = _rollback(apps, syncbridge_service.url, "v2", reasons=["x"])
    assert outcome["outcome"] == "rolled back, target healthy", outcome
    assert outcome["rollout"]["images_after"] == ["syncbridge:v1"]
    assert image_of(apps, "syncbridge") == "syncbridge:v1"


def test_no_history_fails_the_checklist_item(kube, apps, syncbridge_service) -> None:
    kube.create("apps/v1", "deployments", NAMESPACE, deployment("syncbridge", "syncbridge:v1"))
    check = cl.check_rollback(CONFIG, syncbridge_service.url, None, apps)
    assert check.status == "fail" and "history" in check.evidence
    outcome = _rollback(apps, syncbridge_service.url, "v1", reasons=[])
    assert outcome["outcome"] == "failed" and "RolloutError" in outcome["error"]


def test_kubernetes_action_needs_a_deployment() -> None:
    with pytest.raises(ValidationError, match="namespace' and 'deployment'"):
        kubernetes.Config(namespace="x")
