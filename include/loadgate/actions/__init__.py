"""Rollback actions: what runs when a gate says ``rollback``, and the health check after it.

One module an action (:class:`loadgate.actions.base.Action`), found by its ``type``:

- the core's: ``command`` (:mod:`loadgate.actions.command`), ``webhook``
  (:mod:`loadgate.actions.webhook`) and ``kubernetes`` (:mod:`loadgate.actions.kubernetes`);
- a package's, through the entry point group ``loadgate.actions`` (type → module, or
  ``module:object``): the example registers ``syncbridge`` (the reference service restores its
  previous release) this way. A package cannot replace a core action.

A profile's ``rollback`` (:data:`RollbackAction`) is validated by the ``Config`` of the action
its ``type`` names; an unknown type is refused naming the known ones. There is no default
action: a profile without one has ``rollback`` None, and the checklist's "rollback plan
documented" item fails, so no load is sent to a target that could not be rolled back.

An action is configured by operators (a profile), never by a trigger: a type is a registered
name, never a module a run's parameters could choose.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from functools import cache
from importlib import import_module
from typing import Annotated, Any

import requests
from pydantic import BeforeValidator, SerializeAsAny, WithJsonSchema

from loadgate import probe
from loadgate.actions.base import (
    Action,
    ActionConfig,
    Call,
    RollbackError,
    known_secrets,
    scrub,
    wait_healthy,
)
from loadgate.extensions import ACTIONS, declared
from loadgate.safety import redact_url

__all__ = [
    "CORE",
    "Action",
    "ActionConfig",
    "RollbackAction",
    "RollbackError",
    "action",
    "execute",
    "known_types",
    "parse_action",
    "validate",
]

CORE = {
    "command": "loadgate.actions.command",
    "kubernetes": "loadgate.actions.kubernetes",
    "webhook": "loadgate.actions.webhook",
}


@cache
def registered() -> dict[str, str]:
    """Every action by type: the core's, and the packages' (``loadgate.actions`` entry points)."""
    return {**declared(ACTIONS), **CORE}  # a package's action never replaces a core one


def known_types() -> list[str]:
    return sorted(registered())


@cache
def action(type_name: str) -> Action:
    """The action registered as ``type_name``; ValueError naming the known types if none is."""
    where = registered().get(type_name)
    if where is None:
        raise ValueError(
            f"unknown rollback action type {type_name!r} (known types: {', '.join(known_types())})"
        )
    module_name, _, attr = where.partition(":")
    found: Any = import_module(module_name)
    if attr:
        found = getattr(found, attr)
    missing = [n for n in ("Config", "validate", "execute") if not hasattr(found, n)]
    if missing:
        raise ValueError(f"rollback action {type_name!r} ({where}) has no {', '.join(missing)}")
    return found  # type: ignore[no-any-return]  # a module checked to have the Action's names


def parse_action(data: Any) -> ActionConfig | None:
    """A profile's ``rollback`` mapping validated by its action's ``Config`` (by ``type``);
    None stays None (no action configured)."""
    if data is None or isinstance(data, ActionConfig):
        return data
    if not isinstance(data, Mapping):
        raise ValueError("a rollback action is a mapping with a 'type'")
    type_name = data.get("type")
    if not isinstance(type_name, str):
        raise ValueError(
            f"a rollback action needs a 'type' (known types: {', '.join(known_types())})"
        )
    return action(type_name).Config.model_validate(dict(data))


_SCHEMA = {
    **ActionConfig.model_json_schema(),
    "additionalProperties": True,
    "title": "RollbackAction",
    "description": "a registered rollback action by its 'type', with that action's settings",
}

RollbackAction = Annotated[
    SerializeAsAny[ActionConfig], BeforeValidator(parse_action), WithJsonSchema(_SCHEMA)
]
"""A pydantic field type: any registered action's settings, validated by its ``Config``."""


def validate(
    config: ActionConfig, target_url: str, secret: str | None = None, apps_api: Any = None
) -> str:
    """Evidence that the action can run; raises RollbackError when it cannot.

    ``apps_api`` is the Kubernetes ``AppsV1Api`` the ``kubernetes`` action uses (from the
    Airflow connection in a task; the default kubeconfig when None)."""
    return action(config.type).validate(config, target_url, secret, apps_api)


def execute(
    config: ActionConfig,
    *,
    target_url: str,
    release: str | None,
    run_id: str,
    reasons: list[str],
    secret: str | None = None,
    env: Mapping[str, str] | None = None,
    apps_api: Any = None,
) -> dict[str, Any]:
    """Run the action, then verify health. The outcome dict holds no secret (see
    :func:`loadgate.actions.base.known_secrets`)."""
    started = time.monotonic()
    secrets = known_secrets(config, secret, env)
    call = Call(target_url, release, run_id, reasons, secret, env or {}, apps_api, secrets)
    outcome: dict[str, Any] = {"action": config.type, "release": release}
    try:
        ok = action(config.type).execute(config, call, outcome)
    except (subprocess.TimeoutExpired, requests.RequestException, probe.BadAnswer, OSError) as exc:
        outcome["error"] = f"{type(exc).__name__}: {redact_url(str(exc))}"
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
    scrubbed: dict[str, Any] = scrub(outcome, secrets)
    return scrubbed
