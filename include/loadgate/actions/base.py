"""What every rollback action shares: its settings' base model, what it is given when it runs,
the secrets it must never show, and the target's health check after it.

An action is a module (or an object) with three names (:class:`Action`):

- ``Config``: a pydantic model, a subclass of :class:`ActionConfig` whose ``type`` is
  ``Literal["<name>"]``, with the action's own settings;
- ``validate(config, target_url, secret=None, apps_api=None) -> str``: evidence that the action
  can run (the checklist's "rollback plan documented"); raises :class:`RollbackError` when not;
- ``execute(config, call, outcome) -> bool``: run it, adding its own keys to ``outcome`` (the
  ``rollback.json`` record's action-specific keys), and say whether it rolled back. What every
  action shares (timing, the health check after, the outcome's words, scrubbing secrets from
  all of it) is :func:`loadgate.actions.execute`'s.

Secrets an action needs (a webhook token, the reference service's admin token) are passed in
separately and never appear in the outcome, which goes to XCom and the report: a webhook shows
as ``scheme://host[:port]`` only (its path is often the secret), and a command's output is
scrubbed of every secret the action knows of (:func:`known_secrets`) before it is recorded.

No request here follows a redirect (:mod:`loadgate.probe`): a 3xx is a failed action or an
unhealthy answer naming the status and the host it pointed at. A target's bad answer (a
``/healthz`` that is not a JSON object, too large, not JSON) is an ``unhealthy: <reason>``
result, never an exception.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from loadgate import probe


class RollbackError(RuntimeError):
    pass


class ActionConfig(BaseModel):
    """The settings every action has; an action's ``Config`` adds its own and narrows ``type``
    to its name."""

    model_config = ConfigDict(extra="forbid")

    type: str
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    verify_timeout_s: float = Field(default=60.0, gt=0, le=3600)

    def secrets(self) -> list[str]:
        """Values of these settings that are secret (a webhook's URL): scrubbed from outcomes."""
        return []


@dataclass(frozen=True)
class Call:
    """What one rollback is run with. ``secrets``: every secret it may echo, longest first
    (:func:`known_secrets`), for an action that records text it did not write."""

    target_url: str
    release: str | None
    run_id: str
    reasons: list[str]
    secret: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    apps_api: Any = None
    secrets: list[str] = field(default_factory=list)


class Action(Protocol):
    """A rollback action, as the registry (:mod:`loadgate.actions`) finds it."""

    Config: type[ActionConfig]

    def validate(
        self, config: Any, target_url: str, secret: str | None = None, apps_api: Any = None
    ) -> str: ...

    def execute(self, config: Any, call: Call, outcome: dict[str, Any]) -> bool: ...


def bearer(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``token``; none without one."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def short(value: Any, limit: int = 200) -> str:
    """A target-given value for evidence: its repr, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def webhook_origin(url: Any) -> str:
    """``scheme://host[:port]`` of a webhook URL: what evidence and reports may show of it."""
    parts = HttpUrl(str(url))
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{parts.host}{port}"


MIN_SECRET_LEN = 4  # shorter values ("1", "on") would blank out the output, not a secret
_SECRET_NAME = re.compile(
    r"SECRET|TOKEN|PASSW|PASSPHRASE|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|_KEY\b|^KEY|AUTH|"
    r"COOKIE|SESSION|SIGNATURE|WEBHOOK|DSN|^AIRFLOW_CONN_|_CONN\b|FERNET|DATABASE_URL",
    re.IGNORECASE,
)


def known_secrets(
    config: ActionConfig, secret: str | None, env: Mapping[str, str] | None = None
) -> list[str]:
    """Every secret an action may echo: the token, the action's own (a webhook's URL, its path
    and query), the environment it was given, and the worker's variables whose names say they
    are secret."""
    found = [secret or "", *config.secrets()]
    found += list((env or {}).values())
    found += [v for k, v in os.environ.items() if _SECRET_NAME.search(k)]
    unique = {v for v in found if len(v) >= MIN_SECRET_LEN and v.strip("/")}
    return sorted(unique, key=len, reverse=True)  # a longer one first: no half-scrubbed secret


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret replaced by ``***`` and any ``user:password@`` in a URL too."""
    for value in secrets:
        text = text.replace(value, "***")
    return re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@", r"\1***@", text)


_OWN = frozenset({"action", "outcome"})  # loadgate's own words, never a secret


def scrub(value: Any, secrets: list[str]) -> Any:
    """``value`` (an outcome: strings, dicts, lists) with every secret scrubbed from its text."""
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, dict):
        return {k: v if k in _OWN else scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    return value


def health(target_url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """One look at /healthz and /readyz: healthy when both answer 200 and /healthz's body is a
    JSON object. Any other answer is ``healthy: False`` with its reason, never an exception."""
    base = target_url.rstrip("/")
    try:
        healthz = probe.get(f"{base}/healthz", timeout=timeout_s)
        readyz = probe.get(f"{base}/readyz", timeout=timeout_s)
    except requests.RequestException as exc:
        return {"healthy": False, "error": type(exc).__name__}
    except probe.BadAnswer as exc:
        return {"healthy": False, "error": f"unhealthy: {exc}"}
    out: dict[str, Any] = {"healthz": healthz.status, "readyz": readyz.status, "release": None}
    answers = {"/healthz": healthz, "/readyz": readyz}
    problems = [f"{path}: {a.redirect}" for path, a in answers.items() if a.redirect]
    if healthz.status == 200:
        try:
            release = healthz.json_object("/healthz").get("release")
        except probe.BadAnswer as exc:
            problems.append(str(exc))
        else:
            if release is not None and not isinstance(release, str):
                problems.append(f"/healthz 'release' is a JSON {type(release).__name__}")
            elif release is not None:
                out["release"] = short(release)
    out["healthy"] = healthz.status == 200 and readyz.status == 200 and not problems
    if problems:
        out["error"] = "unhealthy: " + "; ".join(problems)
    return out


def wait_healthy(target_url: str, timeout_s: float) -> dict[str, Any]:
    """Poll /healthz and /readyz until both answer 200 (see :func:`health`); what the target
    said last."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = health(target_url)
        left = deadline - time.monotonic()
        if last["healthy"] or left <= 0:
            return last
        time.sleep(min(1.0, left))
