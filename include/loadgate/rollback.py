"""Rollback actions: what runs when a gate says ``rollback``, and the health check after it.

An action is configured per run (the DAG's ``rollback`` parameter) and validated by the
checklist before any load is sent ("rollback plan documented"). Secrets an action needs (a
webhook token, the reference service's admin token) are passed in separately and never appear
in the outcome, which goes to XCom and the report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

ActionType = Literal["command", "webhook", "syncbridge", "kubernetes"]


class RollbackConfig(BaseModel):
    """``{"type": "command", "command": [...]}``, ``{"type": "webhook", "url": ...}``,
    ``{"type": "kubernetes", "namespace": ..., "deployment": ...}`` (``kubectl rollout undo``)
    or ``{"type": "syncbridge"}`` (the reference service restores its previous release)."""

    model_config = ConfigDict(extra="forbid")

    type: ActionType = "syncbridge"
    command: list[str] | None = None
    url: HttpUrl | None = None
    namespace: str | None = None
    deployment: str | None = None
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    verify_timeout_s: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _needs(self) -> RollbackConfig:
        if self.type == "command" and not self.command:
            raise ValueError("a command rollback needs 'command': [program, args...]")
        if self.type == "webhook" and self.url is None:
            raise ValueError("a webhook rollback needs 'url'")
        if self.type == "kubernetes" and not (self.namespace and self.deployment):
            raise ValueError("a kubernetes rollback needs 'namespace' and 'deployment'")
        return self


class RollbackError(RuntimeError):
    pass


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def validate(
    config: RollbackConfig, target_url: str, secret: str | None = None, apps_api: Any = None
) -> str:
    """Evidence that the action can run; raises RollbackError when it cannot.

    ``apps_api`` is the Kubernetes ``AppsV1Api`` the ``kubernetes`` action uses (from the
    Airflow connection in a task; the default kubeconfig when None)."""
    if config.type == "command":
        program = config.command[0]  # type: ignore[index]
        found = shutil.which(program)
        if not found:
            raise RollbackError(f"rollback command {program!r} is not an executable on PATH")
        return f"command {found} is executable"
    if config.type == "kubernetes":
        from loadgate import kubernetes as k8s

        try:
            return k8s.check_rollout_undo(
                apps_api or k8s.connect().apps, config.namespace, config.deployment
            )
        except Exception as exc:  # API errors, missing config: all mean "cannot roll back"
            raise RollbackError(f"{type(exc).__name__}: {exc}") from None
    if config.type == "webhook":
        return f"webhook {config.url.scheme}://{config.url.host}{config.url.path or ''}"  # type: ignore[union-attr]
    if not secret:
        raise RollbackError("the syncbridge rollback needs the target's admin token")
    response = requests.get(
        f"{target_url.rstrip('/')}/admin/release", headers=_auth(secret), timeout=10
    )
    if response.status_code != 200:
        raise RollbackError(f"GET /admin/release answered HTTP {response.status_code}")
    history = response.json().get("history", [])
    if len(history) < 2:
        raise RollbackError(f"no previous release to restore (history: {history})")
    return f"previous release {history[-2]['release']} can be restored"


def wait_healthy(target_url: str, timeout_s: float) -> dict[str, Any]:
    """Poll /healthz and /readyz until both answer 200; what the target said last."""
    base = target_url.rstrip("/")
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {"healthy": False}
    while True:
        try:
            health = requests.get(f"{base}/healthz", timeout=5)
            ready = requests.get(f"{base}/readyz", timeout=5)
            body = health.json() if health.status_code == 200 else {}
            last = {
                "healthy": health.status_code == 200 and ready.status_code == 200,
                "healthz": health.status_code,
                "readyz": ready.status_code,
                "release": body.get("release"),
            }
        except (requests.RequestException, ValueError) as exc:
            last = {"healthy": False, "error": type(exc).__name__}
        if last["healthy"] or time.monotonic() >= deadline:
            return last
        time.sleep(1)


def execute(
    config: RollbackConfig,
    *,
    target_url: str,
    release: str | None,
    run_id: str,
    reasons: list[str],
    secret: str | None = None,
    env: Mapping[str, str] | None = None,
    apps_api: Any = None,
) -> dict[str, Any]:
    """Run the action, then verify health. The outcome dict holds no secret."""
    started = time.monotonic()
    outcome: dict[str, Any] = {"action": config.type, "release": release}
    try:
        if config.type == "command":
            proc = subprocess.run(
                config.command,  # type: ignore[arg-type]
                capture_output=True,
                text=True,
                timeout=config.timeout_s,
                env={
                    **os.environ,
                    **(env or {}),
                    "LOADGATE_RELEASE": release or "",
                    "LOADGATE_RUN_ID": run_id,
                },
                check=False,
            )
            outcome["exit_code"] = proc.returncode
            outcome["output_tail"] = (proc.stdout + proc.stderr)[-2000:]
            ok = proc.returncode == 0
        elif config.type == "kubernetes":
            from loadgate import kubernetes as k8s

            try:
                undo = k8s.rollout_undo(
                    apps_api or k8s.connect().apps,
                    config.namespace,
                    config.deployment,
                    timeout_s=config.timeout_s,
                )
                outcome["rollout"] = undo
                ok = True
            except k8s.KubernetesError as exc:
                outcome["error"] = f"{type(exc).__name__}: {exc}"
                ok = False
        elif config.type == "webhook":
            response = requests.post(
                str(config.url),
                json={"release": release, "run_id": run_id, "reasons": reasons},
                headers=_auth(secret),
                timeout=config.timeout_s,
            )
            outcome["http_status"] = response.status_code
            ok = 200 <= response.status_code < 300
        else:
            response = requests.post(
                f"{target_url.rstrip('/')}/admin/rollback",
                headers=_auth(secret),
                timeout=config.timeout_s,
            )
            outcome["http_status"] = response.status_code
            ok = response.status_code == 200
            if ok:
                outcome["restored_release"] = response.json().get("release")
    except (subprocess.TimeoutExpired, requests.RequestException, OSError) as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}"
        ok = False
    health = wait_healthy(target_url, config.verify_timeout_s) if ok else {"healthy": None}
    outcome["health"] = health
    outcome["seconds"] = round(time.monotonic() - started, 2)
    if not ok:
        outcome["outcome"] = "failed"
    elif not health["healthy"]:
        outcome["outcome"] = "rolled back, target unhealthy"
    else:
        outcome["outcome"] = "rolled back, target healthy"
    if secret:
        outcome = _scrub(outcome, secret)
    return outcome


def _scrub(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, dict):
        return {k: _scrub(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secret) for v in value]
    return value
