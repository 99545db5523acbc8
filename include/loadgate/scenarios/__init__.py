"""Scenarios: user behaviours as plain async functions ``async def name(vu: VU) -> None``.

A plan's ``exec`` names one by a registered short name (:data:`REGISTRY`: the installed
packages' ``loadgate.scenarios`` entry points) or as
``package.module:function`` within a package the deployment allows (``loadgate.scenarios``, and
the packages its operators list in :data:`PACKAGES_ENV`, an environment variable of the
workers and, for pods, of the profile's ``kubernetes.env``): nothing else is imported, so a
plan cannot run a module's import-time code by naming it. :func:`scenario` marks what a
function needs, so that a run that cannot work (no ``--users`` for a scenario that logs in)
fails before any request is sent, and the pacing it follows, so that a summary can say what
request rate the plan implies.

Pacing, declared as ``@scenario(pacing=fn)``: ``fn(options) -> (requests_per_iteration,
idle_seconds_per_iteration)``, the expected values for the plan's ``options`` (a request drawn
with probability p counts p; a think time uniform in [a, b] counts (a + b) / 2), optionally
followed by ``spread``, the seconds of that idle time that lie between the iteration's first
and last request (sleeps between requests; default 0: the requests come first, then the idle
time, as a think time does), and ``idle_sd``, the standard deviation of an iteration's idle
seconds (uniform in [a, b]: (b - a) / √12; default: the idle time after the requests taken as
uniform from 0, the seed's think times). One VU then runs an iteration every ``idle + requests
× latency`` seconds, whatever ``--time-scale`` is (it never scales pacing), the first the moment
it starts; :mod:`loadgate.runner.summary` turns this into the stage's planned rate with the
latency it measured (``spread`` and ``idle_sd`` matter only in a stage a few iterations long:
which requests of its last iteration a VU stopped early still sends, and how soon VUs that
started together lose step). A scenario without a declaration has no planned rate.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from loadgate.extensions import SCENARIOS, declared

F = TypeVar("F", bound=Callable[..., Any])
# options -> (requests per iteration, idle seconds per iteration[, spread[, idle_sd]])
Pacing = Callable[[Mapping[str, Any]], tuple[float, ...]]


class IterationPacing(NamedTuple):
    """A scenario's declared pacing for some options (see the module's doc)."""

    requests: float  # per iteration (expected)
    idle: float  # seconds per iteration (expected): sleeps and think times
    spread: float = 0.0  # of ``idle``, the seconds between the first and the last request
    idle_sd: float | None = None  # standard deviation of ``idle`` (None: not declared)


REGISTRY: dict[str, str] = declared(SCENARIOS)  # short name -> module:function


class ScenarioError(ValueError):
    pass


# the operator's packages scenarios may come from, comma-separated
PACKAGES_ENV = "LOADGATE_SCENARIO_PACKAGES"
BUILTIN_PACKAGES = ("loadgate.scenarios",)
_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def allowed_packages(extra: Sequence[str] = ()) -> tuple[str, ...]:
    from_env = [p.strip() for p in os.environ.get(PACKAGES_ENV, "").split(",") if p.strip()]
    return (*BUILTIN_PACKAGES, *from_env, *extra)


def check_allowed(exec_ref: str, extra_packages: Sequence[str] = ()) -> str:
    """The ``module:function`` an ``exec`` names, when it is registered or in an allowed
    package (whole dotted segments: ``shop`` allows ``shop.x``, not ``shopping``);
    ScenarioError otherwise. Imports nothing."""
    target = REGISTRY.get(exec_ref, exec_ref)
    if not _REF.match(target):
        raise ScenarioError(
            f"unknown scenario {exec_ref!r}: use 'package.module:function' or one of "
            + ", ".join(sorted(REGISTRY))
        )
    if exec_ref in REGISTRY:
        return target
    module = target.split(":", 1)[0]
    packages = allowed_packages(extra_packages)
    if not any(module == p or module.startswith(p + ".") for p in packages):
        raise ScenarioError(
            f"scenario {exec_ref!r} is not registered and {module} is not in an allowed "
            f"package ({', '.join(packages)}; operators add packages to {PACKAGES_ENV})"
        )
    return target


def scenario(*, needs_user: bool = False, pacing: Pacing | None = None) -> Callable[[F], F]:
    """Declare what a scenario function needs (``needs_user``: a seeded user per VU) and, if
    known, its ``pacing`` (see the module's doc)."""

    def mark(fn: F) -> F:
        fn.needs_user = needs_user  # type: ignore[attr-defined]  # marks on the function object
        fn.pacing = pacing  # type: ignore[attr-defined]  # marks on the function object
        return fn

    return mark


def resolve(exec_ref: str) -> Callable[..., Any]:
    """The scenario function an ``exec`` names; ScenarioError when it cannot be used (checked
    against the allowed packages before anything is imported)."""
    target = check_allowed(exec_ref)
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
    found: Callable[..., Any] = fn
    return found


def needs_user(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, "needs_user", False))


def declared_pacing(fn: Callable[..., Any], options: Mapping[str, Any]) -> IterationPacing | None:
    """The pacing the scenario declares for these options; None when it declares none or its
    declaration does not fit the options."""
    pacing = getattr(fn, "pacing", None)
    if pacing is None:
        return None
    try:
        values = tuple(pacing(options))
        if not 2 <= len(values) <= 4:
            return None
        requests, idle = float(values[0]), float(values[1])
        spread = float(values[2]) if len(values) > 2 else 0.0
        idle_sd = float(values[3]) if len(values) > 3 else None
    except Exception:  # a declaration that does not fit these options
        return None
    if not (requests >= 0 and idle >= 0 and 0 <= spread <= idle) or requests == idle == 0:
        return None
    if idle_sd is not None and not idle_sd >= 0:
        return None
    return IterationPacing(requests, idle, spread, idle_sd)


def pacing_of(exec_ref: str, options: Mapping[str, Any]) -> IterationPacing | None:
    """The declared pacing of the scenario an ``exec`` names (None when it cannot be imported
    here or declares none)."""
    try:
        fn = resolve(exec_ref)
    except Exception:  # any module that fails here: no planned rate, never a failed summary
        return None
    return declared_pacing(fn, options)
