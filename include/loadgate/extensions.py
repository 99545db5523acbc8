"""What installed packages add to loadgate, found through their entry points.

A package extends loadgate by declaring entry points in its metadata (``pyproject.toml``), never
by being imported from the core:

- ``loadgate.plans``: a package holding plan files (``*.yaml``, package data); each file is a
  plan named by its stem.
- ``loadgate.scenarios``: a scenario's short name → ``module:function``.
- ``loadgate.profiles``: a profile's name → ``module:function`` returning its data (a mapping).
- ``loadgate.actions``: a rollback action's type → its module.

The example (``loadgate_syncbridge``) registers the reference service's scenarios, plan,
profile and rollback action this way.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.metadata import entry_points
from importlib.resources.abc import Traversable

PLANS = "loadgate.plans"
SCENARIOS = "loadgate.scenarios"
PROFILES = "loadgate.profiles"
ACTIONS = "loadgate.actions"


def declared(group: str) -> dict[str, str]:
    """Entry point name → its value (``module`` or ``module:attr``) for one group; the first
    declaration of a name wins."""
    found: dict[str, str] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep.value)
    return found


@cache
def plan_files() -> dict[str, Traversable]:
    """Every shipped plan by name: the ``*.yaml`` files of the packages in ``loadgate.plans``."""
    plans: dict[str, Traversable] = {}
    for package in declared(PLANS).values():
        for entry in resources.files(package).iterdir():
            if entry.name.endswith(".yaml") and entry.is_file():
                plans.setdefault(entry.name[: -len(".yaml")], entry)
    return plans
