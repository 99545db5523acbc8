"""The pre-test checklist against the real reference service."""

from __future__ import annotations

import pytest

from loadgate.actions import command
from loadgate.plan.model import ScrapeSpec
from loadgate.run import checklist as cl
from loadgate_syncbridge.rollback import Config as SyncbridgeRollback

SPECS = {
    "memory_utilization": ScrapeSpec(metric="syncbridge_memory_utilization_ratio"),
    "cpu_utilization": ScrapeSpec(
        metric="process_cpu_seconds_total", fn="rate", divide_by="syncbridge_cpu_limit_cores"
    ),
}


@pytest.fixture
def deployed(start_syncbridge, tmp_path):
    """v1 deployed, then v2 on the same database: v2 is live, v1 can be restored."""
    first = start_syncbridge(tmp_path / "v1", release="v1", db_path=tmp_path / "sb.db")
    first.stop()
    return start_syncbridge(
        tmp_path / "v2", release="v2", db_path=tmp_path / "sb.db", admin_token="adm-tok"
    )


def test_healthy_target_passes(deployed) -> None:
    url = deployed.url
    assert cl.check_deployment(url, "v2").status == "pass"
    assert cl.check_health(url).status == "pass"
    monitoring = cl.check_monitoring(url, None, SPECS)
    assert monitoring.status == "pass", monitoring.evidence
    logs = cl.check_logs(str(deployed.log_path))
    assert logs.status == "pass", logs.evidence
    rollback = cl.check_rollback(SyncbridgeRollback(), url, "adm-tok")
    assert rollback.status == "pass" and "v1" in rollback.evidence
    assert cl.check_team_notified(lambda: "sent").status == "pass"


def test_wrong_release_fails(deployed) -> None:
    check = cl.check_deployment(deployed.url, "v3")
    assert check.status == "fail" and "'v2'" in check.evidence and check.required


def test_missing_series_fail_monitoring(deployed) -> None:
    specs = {**SPECS, "db": ScrapeSpec(metric="postgres_connections_in_use")}
    check = cl.check_monitoring(deployed.url, None, specs)
    assert check.status == "fail" and "postgres_connections_in_use" in check.evidence


def test_down_target_fails_before_any_load(tmp_path) -> None:
    url = "http://127.0.0.1:9"
    for check in (
        cl.check_deployment(url, "v1"),
        cl.check_health(url),
        cl.check_monitoring(url, None, SPECS),
    ):
        assert check.status == "fail"
    assert cl.failed_required([cl.check_health(url)])


def test_rollback_without_token_or_history_fails(start_syncbridge, tmp_path) -> None:
    svc = start_syncbridge(tmp_path, admin_token="t")
    assert cl.check_rollback(SyncbridgeRollback(), svc.url, None).status == "fail"
    only_one = cl.check_rollback(SyncbridgeRollback(), svc.url, "t")
    assert only_one.status == "fail" and "no previous release" in only_one.evidence
    assert cl.check_rollback(SyncbridgeRollback(), svc.url, "wrong").status == "fail"


def test_rollback_command_must_exist() -> None:
    missing = command.Config(command=["no-such-rollback-tool", "undo"])
    assert cl.check_rollback(missing, "http://127.0.0.1:9", None).status == "fail"
    present = command.Config(command=["true"])
    assert cl.check_rollback(present, "http://127.0.0.1:9", None).status == "pass"


def test_logs_and_alert_rules_warn_when_not_configured(tmp_path) -> None:
    assert cl.check_logs("").status == "warn"
    assert cl.check_alert_rules(None).status == "warn"
    assert cl.check_logs(str(tmp_path / "missing.log")).status == "fail"


def test_failed_start_message_fails_the_item() -> None:
    def boom() -> str:
        raise RuntimeError("slack down")

    check = cl.check_team_notified(boom)
    assert check.status == "fail" and "slack down" in check.evidence
