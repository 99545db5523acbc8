"""The pre-test checklist (the seed's §7.1), each item a real check with its evidence.

A failed required item stops the run before any load is sent: never load an unhealthy
production. Items that cannot be checked in this setup (no Prometheus, no log source) are
warnings that say so, not passes. The target's answers are read through :mod:`loadgate.probe`:
no redirect is followed (a 3xx fails its item, naming the status and the host it pointed at),
bodies are bounded, and a bad answer (not JSON, not a JSON object) is evidence, not a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from loadgate import probe
from loadgate.actions import ActionConfig, RollbackError, known_types
from loadgate.actions import validate as validate_rollback
from loadgate.metrics.prometheus import PrometheusError, PrometheusSource
from loadgate.metrics.scrape import parse_exposition
from loadgate.plan.model import ScrapeSpec
from loadgate.run.records import ChecklistItem, CheckStatus

Status = CheckStatus


@dataclass
class Check:
    item: str  # as the seed's checklist names it
    status: Status
    evidence: str
    required: bool = True

    def record(self) -> ChecklistItem:
        """As ``checklist.json`` holds it."""
        return ChecklistItem(
            item=self.item, status=self.status, evidence=self.evidence, required=self.required
        )


MAX_METRICS_BODY = 32 * 1024 * 1024  # a large service's /metrics is a few MB


def _get(url: str, timeout: float = 5.0, max_bytes: int = probe.MAX_BODY) -> probe.Answer:
    return probe.get(url, timeout=timeout, max_bytes=max_bytes)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_deployment(target: str, release: str) -> Check:
    item = "Production deployment complete"
    try:
        answer = _get(f"{target}/healthz")
        if answer.redirect:
            return Check(item, "fail", f"{target}/healthz: {answer.redirect}")
        if answer.status != 200:
            return Check(item, "fail", f"{target}/healthz answered HTTP {answer.status}")
        reported = answer.json_object(f"{target}/healthz").get("release")
    except probe.BadAnswer as exc:
        return Check(item, "fail", str(exc))
    except requests.RequestException as exc:
        return Check(item, "fail", f"{target}/healthz did not answer: {type(exc).__name__}")
    if not release:
        return Check(
            item, "warn", f"no expected release given; the target reports {_short(reported)}"
        )
    if reported != release:
        return Check(
            item,
            "fail",
            f"expected release {release!r}, the target reports {_short(reported)}",
        )
    return Check(item, "pass", f"the target reports release {reported!r}")


def check_health(target: str) -> Check:
    item = "All health checks passing"
    answers: dict[str, str] = {}
    ok = True
    for path in ("/healthz", "/readyz"):
        try:
            answer = _get(f"{target}{path}")
            answers[path] = answer.redirect or str(answer.status)
            ok = ok and answer.status == 200
        except (requests.RequestException, probe.BadAnswer) as exc:
            answers[path] = str(exc) if isinstance(exc, probe.BadAnswer) else type(exc).__name__
            ok = False
    evidence = ", ".join(f"{p} → {s}" for p, s in answers.items())
    return Check(item, "pass" if ok else "fail", evidence)


def check_monitoring(
    target: str,
    prometheus: PrometheusSource | None,
    scrape_specs: Mapping[str, ScrapeSpec],
    promql_metrics: Sequence[str] = (),
) -> Check:
    """The metrics source answers, and the series the criteria need exist."""
    item = "Monitoring dashboards ready"
    if prometheus is not None:
        if not prometheus.healthy():
            return Check(item, "fail", f"Prometheus at {prometheus.url} is not ready")
        try:
            missing = prometheus.missing_series(promql_metrics)
        except (requests.RequestException, PrometheusError) as exc:
            return Check(item, "fail", f"Prometheus query failed: {exc}")
        where = f"Prometheus {prometheus.url}"
    else:
        try:
            answer = _get(f"{target}/metrics", max_bytes=MAX_METRICS_BODY)
            if answer.status != 200:
                why = answer.redirect or f"HTTP {answer.status}"
                return Check(item, "fail", f"{target}/metrics unreadable: {why}")
            text = answer.body.decode("utf-8", "replace")
            names = {name for name, _ in parse_exposition(text)}
        except probe.BadAnswer as exc:
            return Check(item, "fail", f"{target}/metrics unreadable: {exc}")
        except (requests.RequestException, ValueError) as exc:
            return Check(item, "fail", f"{target}/metrics unreadable: {type(exc).__name__}")
        needed = {s.metric for s in scrape_specs.values()}
        needed |= {s.divide_by for s in scrape_specs.values() if s.divide_by}
        missing = sorted(needed - names)
        where = f"{target}/metrics ({len(names)} series)"
    if missing:
        return Check(item, "fail", f"{where}: missing series {', '.join(missing)}")
    return Check(item, "pass", f"{where}: every series the criteria use is present")


def check_alert_rules(prometheus: PrometheusSource | None) -> Check:
    item = "Alert rules configured"
    if prometheus is None:
        return Check(
            item, "warn", "no Prometheus configured: alert rules cannot be read", required=False
        )
    try:
        rules = prometheus.alert_rules()
    except (requests.RequestException, PrometheusError) as exc:
        return Check(item, "fail", f"Prometheus rules unreadable: {exc}", required=False)
    if not rules:
        return Check(item, "warn", f"Prometheus {prometheus.url} has no alerting rules", False)
    names = ", ".join(sorted({r["name"] for r in rules})[:10])
    return Check(item, "pass", f"{len(rules)} alerting rules loaded: {names}", required=False)


def check_logs(log_path: str, max_age_s: float = 600.0) -> Check:
    """Recent lines of the target's log are readable (the embedded default's log file)."""
    item = "Log aggregation working"
    if not log_path:
        return Check(item, "warn", "no target log source configured", required=False)
    path = Path(log_path)
    try:
        age = time.time() - path.stat().st_mtime
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 65536))
            lines = [ln for ln in handle.read().splitlines() if ln.strip()]
    except OSError as exc:
        return Check(item, "fail", f"{log_path} unreadable: {exc.strerror}", required=False)
    if not lines:
        return Check(item, "fail", f"{log_path} has no lines", required=False)
    if age > max_age_s:
        return Check(item, "warn", f"{log_path}: last line written {age:.0f} s ago", False)
    return Check(
        item, "pass", f"{log_path}: {len(lines)} recent lines, last {age:.0f} s ago", False
    )


def check_rollback(
    config: ActionConfig | None, target: str, secret: str | None, apps_api: Any = None
) -> Check:
    """The profile's rollback action can run; a profile without one fails this item (there is
    no default action), so no load goes to a target that could not be rolled back."""
    item = "Rollback plan documented"
    if config is None:
        return Check(
            item,
            "fail",
            "no rollback action configured: set the profile's 'rollback' "
            f"(types: {', '.join(known_types())})",
        )
    try:
        evidence = validate_rollback(config, target, secret, apps_api)
    except (RollbackError, requests.RequestException, ValueError) as exc:
        return Check(item, "fail", f"{config.type} rollback cannot run: {exc}")
    return Check(item, "pass", f"{config.type}: {evidence}")


def check_team_notified(send_start: Callable[[], str]) -> Check:
    item = "Team notified of test execution"
    try:
        outcome = send_start()
    except Exception as exc:  # any sender failure is this item's evidence
        return Check(item, "fail", f"start message not delivered: {type(exc).__name__}: {exc}")
    return Check(item, "pass", f"start message {outcome}")


def failed_required(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if c.required and c.status == "fail"]
