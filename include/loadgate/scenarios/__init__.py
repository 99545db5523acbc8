"""Scenarios: user behaviours as plain async functions ``async def name(vu: VU) -> None``.

A plan's ``exec`` names one as ``package.module:function`` or by a registered short name
(:data:`REGISTRY`). :func:`scenario` marks what a function needs, so that a run that cannot
work (no ``--users`` for a scenario that logs in) fails before any request is sent.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

REGISTRY: dict[str, str] = {
    "basic.get": "loadgate.scenarios.basic:get",
    "syncbridge.api_mix": "loadgate.scenarios.syncbridge:api_mix",
    "syncbridge.websocket": "loadgate.scenarios.syncbridge:websocket",
    "syncbridge.session_state": "loadgate.scenarios.syncbridge:session_state",
    "syncbridge.handoff": "loadgate.scenarios.syncbridge:handoff",
}


class ScenarioError(ValueError):
    pass


def scenario(*, needs_user: bool = False) -> Callable[[F], F]:
    """Declare what a scenario function needs (``needs_user``: a seeded user per VU)."""

    def mark(fn: F) -> F:
        fn.needs_user = needs_user  # type: ignore[attr-defined]
        return fn

    return mark


def resolve(exec_ref: str) -> Callable[..., Any]:
    """The scenario function an ``exec`` names; ScenarioError when it cannot be used."""
    target = REGISTRY.get(exec_ref, exec_ref)
    if ":" not in target:
        raise ScenarioError(
            f"unknown scenario {exec_ref!r}: use 'package.module:function' or one of "
            + ", ".join(sorted(REGISTRY))
        )
    module_name, func_name = target.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ScenarioError(f"scenario {exec_ref!r}: cannot import {module_name}: {exc}") from None
    fn = getattr(module, func_name, None)
    if fn is None:
        raise ScenarioError(f"scenario {exec_ref!r}: {module_name} has no {func_name}")
    if not asyncio.iscoroutinefunction(fn):
        raise ScenarioError(f"scenario {exec_ref!r} must be an 'async def' function of one VU")
    return fn


def needs_user(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, "needs_user", False))
