"""``make demo``: the release gate end to end on this machine, in a few minutes.

Starts the reference SyncBridge service on a free loopback port, runs the real ``release_gate``
DAG with ``airflow dags test`` at a demo scale, prints the verdict and the report's path, and
stops what it started. ``--bad-release`` deploys release v2 with an injected fault (20% of API
requests fail) over a healthy v1, so the gate rolls it back to v1.

Everything lives under ``.demo/`` in the checkout (Airflow's home, the service's database and
log, the run artifacts); a second run reuses the Airflow database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncbridge.launcher import RunningService

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from loadgate_syncbridge.profiles import syncbridge as syncbridge_profile

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """An AIRFLOW_HOME of its own (SQLite), this checkout's DAGs and plugins, no examples."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.update(extra)
    return env


def connection_env(conn_id: str, **fields: Any) -> dict[str, str]:
    """An Airflow connection given by environment variable (JSON form)."""
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(fields)}


def profiles_env(profiles: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The ``loadgate_profiles`` Variable by environment variable: what an operator configures
    (profile name → settings, over the shipped profiles)."""
    return {"AIRFLOW_VAR_LOADGATE_PROFILES": json.dumps(profiles)}


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade Airflow's database (fast when it is current)."""
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )


def dags_test(
    env: dict[str, str],
    conf: dict[str, Any],
    *,
    cwd: Path,
    timeout: float = 1800,
    capture: bool = True,
    dag_id: str = "release_gate",
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "airflow"), "dags", "test", dag_id, "-c", json.dumps(conf)],
        env=env,
        cwd=cwd,
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=False,
    )


def _service(
    workdir: Path, release: str, db: Path, admin: str, faults: dict[str, Any] | None = None
) -> RunningService:
    from syncbridge.launcher import start_syncbridge

    return start_syncbridge(
        workdir,
        release=release,
        db_path=db,
        admin_token=admin,
        faults=faults,
        log_path=workdir / "syncbridge.log",
        pool_size=16,  # sized for the demo load, as a deploy is sized for its traffic
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgate-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bad-release",
        action="store_true",
        help="deploy a faulty v2 over v1 and watch the gate roll it back",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=0.003,
        help="load scale (default 0.003: 30 of the plan's 10,000 users)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=0.04,
        help="time scale: shortens the schedule, never the users' think times (default "
        "0.04: the 44-minute API test in 106 s)",
    )
    parser.add_argument("--shards", type=int, default=2, help="load generators per stage (2)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".demo")
    args = parser.parse_args(argv)

    work = args.workdir.resolve()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    svc_dir = work / f"service-{stamp}"
    db = svc_dir / "syncbridge.db"
    admin = secrets.token_urlsafe(24)
    env = airflow_env(
        work / "airflow", **connection_env("loadgate_target", conn_type="http", password=admin)
    )
    print("loadgate demo: preparing Airflow (first run: about a minute) …", flush=True)
    migrate(env)

    service = None
    try:
        if args.bad_release:
            _service(svc_dir / "v1", "v1", db, admin).stop()
            service = _service(svc_dir / "v2", "v2", db, admin, faults={"error_rate": 0.2})
            release = "v2"
            print(f"deployed release v2 with a fault (20% of API requests fail) at {service.url}")
        else:
            _service(svc_dir / "v0", "v0", db, admin).stop()  # a release to roll back to
            service = _service(svc_dir / "v1", "v1", db, admin)
            release = "v1"
            print(f"deployed release v1 at {service.url}")
        # the operator's part: the shipped syncbridge profile, with this demo's folders
        profile = {
            **syncbridge_profile(),
            "default_target": service.url,
            "shards": args.shards,
            "artifacts_root": str(work / "artifacts"),
            "target_log": str(service.log_path),
        }
        env.update(profiles_env({"syncbridge": profile}))
        # the trigger's part: which release, how much load, for how long
        conf = {
            "target_url": service.url,
            "release": release,
            "scale": args.scale,
            "time_scale": args.time_scale,
        }
        print(f"running the release_gate DAG: {json.dumps(conf)}", flush=True)
        started = time.monotonic()
        proc = dags_test(env, conf, cwd=ROOT, capture=False)
        took = time.monotonic() - started
    finally:
        if service is not None:
            service.stop()
    runs = sorted((work / "artifacts").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        print("the DAG wrote no report: see the output above", file=sys.stderr)
        return 1
    report = json.loads(runs[-1].read_text())
    print(f"\nverdict: {report['verdict']} (release {report['release']}, {took:.0f} s)")
    for reason in report.get("reasons", [])[:6]:
        print(f"  - {reason}")
    if report.get("rollback"):
        print(f"rollback: {report['rollback']['outcome']}")
    print(f"report: {runs[-1].with_name('report.html')}")
    expected_fail = args.bad_release
    return 0 if (proc.returncode != 0) == expected_fail else 1


if __name__ == "__main__":
    raise SystemExit(main())
