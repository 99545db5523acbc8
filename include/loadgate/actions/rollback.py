"""Rollback actions: what runs when a gate says ``rollback``, and the health check after it.

An action is configured per run (the DAG's ``rollback`` parameter) and validated by the
checklist before any load is sent ("rollback plan documented"). Secrets an action needs (a
webhook token, the reference service's admin token) are passed in separately and never appear
in the outcome, which goes to XCom and the report: a webhook shows as ``scheme://host[:port]``
only (its path is often the secret), and a command's output is scrubbed of every secret the
action knows of (the token, the webhook URL, the values of the environment it was given and of
the worker's variables whose names say they hold a secret) before it is recorded.

No request here follows a redirect (:mod:`loadgate.probe`): a 3xx is a failed action or an
unhealthy answer naming the status and the host it pointed at. A target's bad answer (a
``/healthz`` that is not a JSON object, too large, not JSON) is an ``unhealthy: <reason>``
result, never an exception.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from loadgate import probe
from loadgate.safety import redact_url

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


def webhook_origin(url: Any) -> str:
    """``scheme://host[:port]`` of a webhook URL: what evidence and reports may show of it."""
    parts = HttpUrl(str(url))
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{parts.host}{port}"


OUTPUT_TAIL = 2000
MIN_SECRET_LEN = 4  # shorter values ("1", "on") would blank out the output, not a secret
_SECRET_NAME = re.compile(
    r"SECRET|TOKEN|PASSW|PASSPHRASE|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|_KEY\b|^KEY|AUTH|"
    r"COOKIE|SESSION|SIGNATURE|WEBHOOK|DSN|^AIRFLOW_CONN_|_CONN\b|FERNET|DATABASE_URL",
    re.IGNORECASE,
)


def known_secrets(
    config: RollbackConfig, secret: str | None, env: Mapping[str, str] | None = None
) -> list[str]:
    """Every secret an action may echo: the token, the webhook URL (and its path and query),
    the environment it was given, and the worker's variables whose names say they are secret."""
    found = [secret or ""]
    if config.url is not None:
        url = str(config.url)
        parts = HttpUrl(url)
        found += [url, url.rstrip("/"), parts.path or "", parts.query or ""]
    found += list((env or {}).values())
    found += [v for k, v in os.environ.items() if _SECRET_NAME.search(k)]
    unique = {v for v in found if len(v) >= MIN_SECRET_LEN and v.strip("/")}
    return sorted(unique, key=len, reverse=True)  # a longer one first: no half-scrubbed secret


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret replaced by ``***`` and any ``user:password@`` in a URL too."""
    for value in secrets:
        text = text.replace(value, "***")
    return re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@", r"\1***@", text)


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
        from loadgate import kube
        from loadgate.actions import kubernetes as rollout

        try:
            return rollout.check_rollout_undo(
                apps_api or kube.connect().apps, config.namespace, config.deployment
            )
        except Exception as exc:  # API errors, missing config: all mean "cannot roll back"
            raise RollbackError(f"{type(exc).__name__}: {exc}") from None
    if config.type == "webhook":
        return f"webhook {webhook_origin(config.url)}"
    if not secret:
        raise RollbackError("the syncbridge rollback needs the target's admin token")
    try:
        answer = probe.get(
            f"{target_url.rstrip('/')}/admin/release", headers=_auth(secret), timeout=10
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
        raise RollbackError(f"no previous release to restore (history: {_short(releases)})")
    return f"previous release {_short(releases[-2])} can be restored"


def _short(value: Any, limit: int = 200) -> str:
    """A target-given value for evidence: its repr, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
                out["release"] = _short(release)
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
    """Run the action, then verify health. The outcome dict holds no secret (see
    :func:`known_secrets`)."""
    started = time.monotonic()
    secrets = known_secrets(config, secret, env)
    outcome: dict[str, Any] = {"action": config.type, "release": release}
    try:
        if config.type == "command":
            proc = subprocess.run(
                config.command,  # type: ignore[arg-type]
                capture_output=True,
                text=True,
                errors="replace",
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
            # scrubbed whole, then cut: a secret at the cut is never left half-shown
            outcome["output_tail"] = scrub_text(proc.stdout + proc.stderr, secrets)[-OUTPUT_TAIL:]
            ok = proc.returncode == 0
        elif config.type == "kubernetes":
            from loadgate import kube
            from loadgate.actions import kubernetes as rollout

            try:
                undo = rollout.rollout_undo(
                    apps_api or kube.connect().apps,
                    config.namespace,
                    config.deployment,
                    timeout_s=config.timeout_s,
                )
                outcome["rollout"] = undo
                ok = True
            except kube.KubernetesError as exc:
                outcome["error"] = f"{type(exc).__name__}: {exc}"
                ok = False
        elif config.type == "webhook":
            outcome["webhook"] = webhook_origin(config.url)
            answer = probe.post(
                str(config.url),
                json={"release": release, "run_id": run_id, "reasons": reasons},
                headers=_auth(secret),
                timeout=config.timeout_s,
                what="the webhook",
            )
            outcome["http_status"] = answer.status
            ok = 200 <= answer.status < 300
            if answer.redirect:
                outcome["error"] = f"the webhook: {answer.redirect}"
        else:
            answer = probe.post(
                f"{target_url.rstrip('/')}/admin/rollback",
                headers=_auth(secret),
                timeout=config.timeout_s,
            )
            outcome["http_status"] = answer.status
            ok = answer.status == 200
            if answer.redirect:
                outcome["error"] = f"POST /admin/rollback: {answer.redirect}"
            if ok:
                try:
                    restored = answer.json_object("POST /admin/rollback").get("release")
                    outcome["restored_release"] = None if restored is None else _short(restored)
                except probe.BadAnswer as exc:
                    outcome["restored_release"] = None
                    outcome["note"] = str(exc)
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
    return _scrub(outcome, secrets)


_OWN = frozenset({"action", "outcome"})  # loadgate's own words, never a secret


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, dict):
        return {k: v if k in _OWN else _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value
