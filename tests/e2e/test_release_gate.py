"""The real release_gate DAG (``airflow dags test``) against the real reference service.

Tiny scale (20 users, the plan played at 1/100 of its length), but every part is real:
Airflow, the engine's processes, the service, the files, Slack through a local stand-in.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from syncbridge.launcher import RunningService
from tests.support import target
from tests.support.airflow import airflow_env, as_profile, connection_env, dags_test, migrate
from tests.support.s3 import FAKE_KEY_ID, FAKE_SECRET, Bucket, S3Server, new_bucket
from tests.support.slack_standin import SlackStandIn
from tests.support.target import api_requests

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
ADMIN = "e2e-admin-token"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("airflow")
    migrate(airflow_env(home))
    return home


def deploy(start_syncbridge, tmp_path: Path, release: str, faults: dict | None = None):
    """The previous release, then ``release`` over it on the same database."""
    return target.deploy(start_syncbridge, tmp_path, release, admin_token=ADMIN, faults=faults)


STORE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")


def run_gate(
    home: Path,
    svc,
    tmp_path: Path,
    slack: SlackStandIn | None = None,
    env_extra: Mapping[str, str] | None = None,
    **conf,
):
    """``airflow dags test`` of the gate; (the process, the local run root, or None when the
    artifacts are on S3: then the tasks have no AWS variable, the run's connection is their
    only way to the store)."""
    extra = connection_env("loadgate_target", conn_type="http", password=ADMIN)
    if slack is not None:
        extra |= connection_env(
            "loadgate_slack",
            conn_type="slack",
            password="xoxb-e2e-token",
            extra={"base_url": f"{slack.url}/api/", "channel": "#deploys"},
        )
    full = {
        "target_url": svc.url,
        "release": "v2",
        "scale": 0.002,  # 20 users: far from the reference service's limits on 2 cores
        "time_scale": 0.01,
        "artifacts_root": str(tmp_path / "artifacts"),
        "target_log": str(svc.log_path),
        "rollback": {"type": "syncbridge"},  # the example's action: the core has no default
        **conf,
    }
    profile, trigger = as_profile(full)
    env = airflow_env(home, **extra, **(env_extra or {}), **profile)
    if str(full["artifacts_root"]).startswith("s3://"):
        for name in STORE_KEYS:
            env.pop(name, None)
        return dags_test(env, trigger, cwd=tmp_path), None
    proc = dags_test(env, trigger, cwd=tmp_path)
    runs = list((tmp_path / "artifacts").glob("*/run.json"))
    assert len(runs) == 1, f"no run root written:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc, runs[0].parent


SECRET_FILES = ("users.jsonl", ".seed-secret")  # where the credentials live, 0600


def secrets_of(run_root: Path, seed_secret: str | None = None) -> list[str]:
    """Every secret of a run: the seeded users' passwords and tokens, the secret their
    passwords derive from, the target's admin token, the Slack token and the AWS keys."""
    users = [json.loads(line) for line in (run_root / "users.jsonl").read_text().splitlines()]
    seed = run_root.parent / ".seed-secret"
    if seed_secret is None and seed.exists():
        seed_secret = seed.read_text().strip()
    assert seed_secret, "the seed secret of the run was not found"
    return [ADMIN, "xoxb-e2e-token", FAKE_KEY_ID, FAKE_SECRET, seed_secret] + [
        u[k] for u in users for k in ("password", "accessToken", "refreshToken")
    ]


def assert_no_secret_leaks(
    home: Path,
    run_root: Path,
    output: str,
    *,
    seed_secret: str | None = None,
    also: Mapping[str, str | bytes] | None = None,
) -> None:
    """None of the run's secrets is in any artifact of the run root (but the users file, which
    holds them), any XCom value, the Airflow output (``airflow dags test`` writes the task logs
    there) or a task log file under AIRFLOW_HOME/logs, or ``also`` (what Slack, the Kubernetes
    API or the object store received)."""
    secrets = secrets_of(run_root, seed_secret)
    users = (run_root / "users.jsonl").read_text()
    assert all(u in users for u in secrets[5:]) and len(secrets) > 5  # the search finds them
    places: dict[str, str | bytes] = {"airflow output": output, **(also or {})}
    with sqlite3.connect(home / "airflow.db") as db:
        xcoms = db.execute("select dag_id, task_id, key, value from xcom").fetchall()
    assert xcoms, "no XCom value was recorded"
    for dag_id, task_id, key, value in xcoms:
        places[f"XCom {dag_id}.{task_id}.{key}"] = value if isinstance(value, bytes) else str(value)
    artifacts = [p for p in run_root.rglob("*") if p.is_file() and p.name not in SECRET_FILES]
    names = {p.name for p in artifacts}
    assert {"run.json", "report.md", "report.html", "notifications.jsonl", "meta.json"} <= names
    for path in artifacts:
        places[f"artifact {path.relative_to(run_root)}"] = path.read_bytes()
    for path in (home / "logs").rglob("*") if (home / "logs").exists() else []:
        if path.is_file():
            places[f"task log {path.relative_to(home)}"] = path.read_bytes()
    for where, text in places.items():
        data = text.encode() if isinstance(text, str) else text
        leaked = [s for s in secrets if s and s.encode() in data]
        assert not leaked, f"{len(leaked)} secret(s) leaked into {where}"


def slack_received(slack: SlackStandIn) -> dict[str, str]:
    """What Slack received (the bodies: the Authorization header is where the token belongs)."""
    return {"Slack": json.dumps([call["body"] for call in slack.calls])}


def store_objects(s3, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` of the store but the credentials (the users file and the
    seed secret): the run roots and the release history."""
    return {
        f"object {key}": s3.get(key)
        for key in s3.keys(prefix)
        if key.rsplit("/", 1)[-1] not in SECRET_FILES
    }


@dataclass
class HealthyRun:
    """The healthy release's gate run, once for the module's two tests of it."""

    svc: RunningService
    proc: Any
    output: str
    cwd: Path  # airflow dags test's working directory
    s3: Bucket
    run_key: str
    run_root: Path  # the run root on S3, downloaded
    slack: SlackStandIn


def run_on_store(s3: Bucket, output: str, dest: Path) -> tuple[str, Path]:
    """The one run root under ``gate-runs/`` on the store (beside the seed secret and the
    release history): its key, and its objects downloaded into ``dest`` to read as files."""
    runs = {k.split("/")[1] for k in s3.keys("gate-runs/")} - {".seed-secret", "history"}
    assert len(runs) == 1, f"no run root written:\n{output[-8000:]}"
    (run_key,) = runs
    return run_key, s3.download(f"gate-runs/{run_key}", dest)


@pytest.fixture(scope="module")
def healthy_run(airflow_home, s3_server: S3Server, start_syncbridge_for_module, tmp_path_factory):
    """A healthy release gated once, the production way: 2 shards a stage, the artifacts on
    a local S3 server reached only through the run's Airflow aws connection (no AWS
    variable in the tasks' environment), the messages to Slack's stand-in. One run read by
    two tests: what the gate decided and told (``test_healthy_release_passes``), and what it
    wrote to the store (``..._with_artifacts_on_s3``); the local run root is the other
    tests' (the bad release, the dry run, the failed checklist) and ``make demo``'s."""
    tmp_path = tmp_path_factory.mktemp("healthy")
    svc = deploy(start_syncbridge_for_module, tmp_path, "v2")
    s3 = new_bucket(s3_server)
    # the region, no AWS config file of the machine's; the keys only in the connection
    extra = {k: v for k, v in s3_server.env(str(tmp_path)).items() if k not in STORE_KEYS}
    extra |= s3.airflow_connection_env("loadgate_s3")
    with SlackStandIn() as slack:
        proc, _ = run_gate(
            airflow_home,
            svc,
            tmp_path,
            slack=slack,
            env_extra=extra,
            shards=2,
            artifacts_root=s3.url("gate-runs"),
            aws_conn_id="loadgate_s3",
        )
    output = proc.stdout + proc.stderr
    run_key, run_root = run_on_store(s3, output, tmp_path_factory.mktemp("from-s3"))
    return HealthyRun(svc, proc, output, tmp_path, s3, run_key, run_root, slack)


def test_healthy_release_passes(healthy_run: HealthyRun, airflow_home) -> None:
    run, run_root = healthy_run, healthy_run.run_root
    assert run.proc.returncode == 0, run.output[-5000:]
    report = json.loads((run_root / "report.json").read_text())
    assert report["verdict"] == "pass", report["reasons"]
    assert set(report["stages"]) == {"api", "websocket", "session"}
    for name, stage in report["stages"].items():
        assert stage["verdict"] == "pass", (name, stage["reasons"])
    assert report["stages"]["api"]["requests"] > 100
    # every shard ran and wrote results
    assert sorted(p.parent.name for p in run_root.glob("stages/api/*/meta.json")) == [
        "shard-0",
        "shard-1",
    ]
    # the service saw what the engine counted (plus seeding and checks)
    assert api_requests(run.svc) >= sum(s["requests"] for s in report["stages"].values())
    html = (run_root / "report.html").read_text()
    assert "<svg" in html and "Acceptance Criteria" in html and "PASS" in html
    junit = ET.parse(run_root / "junit.xml").getroot()
    assert int(junit.find("testsuite").get("failures")) == 0
    assert {c["item"] for c in report["checklist"]} >= {
        "Production deployment complete",
        "Rollback plan documented",
    }
    # Slack got the start, one message per gate and the verdict, each once
    texts = [m["text"] for m in run.slack.messages()]
    assert len(texts) == 5, texts
    assert "starting" in texts[0] and "pass" in texts[-1]
    assert all(c["auth"] == "Bearer xoxb-e2e-token" for c in run.slack.calls)
    assert_no_secret_leaks(
        airflow_home,
        run_root,
        run.output,
        seed_secret=run.s3.get("gate-runs/.seed-secret").decode().strip(),
        also=slack_received(run.slack),
    )


def test_bad_release_is_rolled_back(start_syncbridge, airflow_home, tmp_path) -> None:
    """20% of requests fail: the live test stops the API stage and the gate rolls back.

    Telling 20% from the 5% threshold at the plan's false-alarm rate takes about 120 requests
    (median; 265 at the 99th percentile: bench/verdict/live_alarm.md), whatever a single
    second shows. 100 users on one shard, at the plan's pacing, send that many within about
    8 s of the stage's start (the ramp starts from 0), far before its 26 s end."""
    svc = deploy(start_syncbridge, tmp_path, "v2", faults={"error_rate": 0.2})
    proc, run_root = run_gate(airflow_home, svc, tmp_path, scale=0.01, shards=1)
    assert proc.returncode != 0, "a rollback verdict must fail the DAG run"
    report = json.loads((run_root / "report.json").read_text())
    assert report["verdict"] == "rollback"
    api = report["stages"]["api"]
    assert api["verdict"] == "rollback"
    assert api["aborted"] and api["aborted"]["at_s"] < 10, api["aborted"]
    # the remaining stages were skipped: no load, no results
    assert report["stages"]["websocket"]["verdict"] == "not run"
    assert not (run_root / "stages" / "websocket").exists()
    assert report["rollback"]["outcome"] == "rolled back, target healthy"
    health = requests.get(f"{svc.url}/healthz", timeout=5).json()
    assert health["release"] == "v-prev"
    assert svc.get_faults() == {}
    notes = [
        json.loads(line) for line in (run_root / "notifications.jsonl").read_text().splitlines()
    ]
    assert [n["key"] for n in notes] == ["start", "gate:api", "final"]
    assert "rollback" in notes[-1]["text"]
    output = proc.stdout + proc.stderr
    assert "finalize" in output
    # a local run root: the credentials in files only their owner reads, and nowhere else
    for name in ("users.jsonl", "../.seed-secret"):
        assert stat.S_IMODE((run_root / name).stat().st_mode) == 0o600, name
    assert_no_secret_leaks(airflow_home, run_root, output)


def test_dry_run_sends_no_load(start_syncbridge, airflow_home, tmp_path) -> None:
    svc = deploy(start_syncbridge, tmp_path, "v2")
    before = api_requests(svc)
    proc, run_root = run_gate(airflow_home, svc, tmp_path, dry_run=True, scale=1.0, time_scale=1.0)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert api_requests(svc) == before
    report = json.loads((run_root / "report.json").read_text())
    assert report["verdict"] == "dry_run"
    planned = json.loads((run_root / "run.json").read_text())["load"]
    api_rows = [r for r in planned if r["stage"] == "api"]
    assert sum(r["peak_vus"] for r in api_rows) == 10_000
    assert "Planned Load" in (run_root / "report.md").read_text()
    assert not (run_root / "users.jsonl").exists()


def test_failed_checklist_sends_no_load(start_syncbridge, airflow_home, tmp_path) -> None:
    svc = deploy(start_syncbridge, tmp_path, "v2")
    before = api_requests(svc)
    proc, run_root = run_gate(airflow_home, svc, tmp_path, release="v3")
    assert proc.returncode != 0
    assert api_requests(svc) == before
    report = json.loads((run_root / "report.json").read_text())
    assert report["verdict"] == "error"
    assert any("expected release 'v3'" in r for r in report["reasons"])
    assert not (run_root / "stages").exists()
    # the failed task told the team, and so did the final message
    notes = [json.loads(x) for x in (run_root / "notifications.jsonl").read_text().splitlines()]
    assert [n["key"] for n in notes] == ["task-failed:checklist:1", "final"]
    assert "Production deployment complete" in notes[0]["text"]


def test_target_off_the_allowlist_is_refused(start_syncbridge, airflow_home, tmp_path) -> None:
    svc = deploy(start_syncbridge, tmp_path, "v2")
    profile, trigger = as_profile({"artifacts_root": str(tmp_path / "a")})
    proc = dags_test(
        airflow_env(airflow_home, **profile),
        {**trigger, "target_url": "https://api.harmonyflow.example"},
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "not on the allowlist" in proc.stdout + proc.stderr
    assert not (tmp_path / "a").exists()
    # a trigger naming what only operators set (a command to run) is refused the same way
    proc = dags_test(
        airflow_env(airflow_home, **profile),
        {
            **trigger,
            "target_url": svc.url,
            "rollback": {"type": "command", "command": ["touch", str(tmp_path / "ran")]},
        },
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "a trigger may not set rollback" in proc.stdout + proc.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "ran").exists()
    assert api_requests(svc) == 0


def test_healthy_release_passes_with_artifacts_on_s3(healthy_run: HealthyRun, airflow_home):
    """artifacts_root s3://…: the run root, the shards' results, abort markers, logs and the
    report on a local S3 server, reached only through the run's Airflow aws connection."""
    run, run_root, s3 = healthy_run, healthy_run.run_root, healthy_run.s3
    assert run.proc.returncode == 0, run.output[-5000:]
    assert not (run.cwd / "artifacts").exists() and not list(run.cwd.glob("s3*"))
    keys = s3.keys("gate-runs/")
    # the release history is kept beside the runs, on the store too
    assert [k for k in keys if k.startswith("gate-runs/history/") and "/entries/" in k]
    report = json.loads((run_root / "report.json").read_text())
    assert report["verdict"] == "pass", report["reasons"]
    for stage in ("api", "websocket", "session"):
        for shard in ("shard-0", "shard-1"):
            folder = run_root / "stages" / stage / shard
            assert (folder / "meta.json").exists() and (folder / "engine.log").exists()
            assert list((folder / "windows").glob("*.jsonl")), (stage, shard)
            assert not (folder / "windows.jsonl").exists()
    assert (run_root / "report.html").read_text().count("<svg") >= 1
    assert (run_root / "logs" / "generator" / "api-shard-0.log").exists()
    assert (run_root / "users.jsonl").exists()
    notes = [json.loads(x) for x in (run_root / "notifications.jsonl").read_text().splitlines()]
    keys = [n["key"] for n in notes]  # the ledger on the store: every message, each once
    assert keys[0] == "start" and "final" in keys and len(keys) == len(set(keys)), keys
    assert_no_secret_leaks(
        airflow_home,
        run_root,
        run.output,
        seed_secret=s3.get("gate-runs/.seed-secret").decode().strip(),
        also=store_objects(s3, "gate-runs/"),
    )
