"""The ``syncbridge`` rollback action: the reference service restores its previous release.

``{"type": "syncbridge"}``: ``GET /admin/release`` shows there is a previous release (the
checklist), ``POST /admin/rollback`` restores it; both with the target connection's admin token
as a bearer token. Registered through the entry point group ``loadgate.actions``
(``pyproject.toml``): the core never imports the example.
"""

from __future__ import annotations

from typing import Any, Literal

from loadgate import probe
from loadgate.actions.base import ActionConfig, Call, RollbackError, bearer, short


class Config(ActionConfig):
    type: Literal["syncbridge"] = "syncbridge"


def validate(
    config: Config, target_url: str, secret: str | None = None, apps_api: Any = None
) -> str:
    if not secret:
        raise RollbackError("the syncbridge rollback needs the target's admin token")
    try:
        answer = probe.get(
            f"{target_url.rstrip('/')}/admin/release", headers=bearer(secret), timeout=10
        )
        if answer.redirect:
            raise RollbackError(f"GET /admin/release: {answer.redirect}")
        if answer.status != 200:
            raise RollbackError(f"GET /admin/release answered HTTP {answer.status}")
        history = answer.json_object("GET /admin/release").get("history")
    except probe.BadAnswer as exc:
        raise RollbackError(str(exc)) from None
    releases = [h.get("release") for h in history or [] if isinstance(h, dict)]
    if not isinstance(history, list) or len(releases) != len(history):
        raise RollbackError("GET /admin/release: 'history' is not a list of releases")
    if len(releases) < 2:
        raise RollbackError(f"no previous release to restore (history: {short(releases)})")
    return f"previous release {short(releases[-2])} can be restored"


def execute(config: Config, call: Call, outcome: dict[str, Any]) -> bool:
    answer = probe.post(
        f"{call.target_url.rstrip('/')}/admin/rollback",
        headers=bearer(call.secret),
        timeout=config.timeout_s,
    )
    outcome["http_status"] = answer.status
    if answer.redirect:
        outcome["error"] = f"POST /admin/rollback: {answer.redirect}"
    if answer.status != 200:
        return False
    try:
        restored = answer.json_object("POST /admin/rollback").get("release")
        outcome["restored_release"] = None if restored is None else short(restored)
    except probe.BadAnswer as exc:
        outcome["restored_release"] = None
        outcome["note"] = str(exc)
    return True
