"""``make demo``: the release gate end to end on this machine, in a few minutes.

Starts the reference SyncBridge service on a free loopback port, runs the real ``release_gate``
DAG with ``airflow dags test`` at a demo scale, and stops what it started. ``--bad-release``
deploys release v2 with an injected fault (20% of API requests fail) over a healthy v1, so the
gate rolls it back to v1.

Airflow's own output goes to a file (``.demo/logs/airflow-<time>.log``); what is printed is what
a person watches, read from the run folder as the run writes it (:class:`loadgate.run.watch.
RunWatch`): each checklist item, the seeding, each stage's users, requests per second, p95 and
errors every few seconds, each gate's verdict with its reasons, the final verdict and the
report's path.

Everything lives under ``.demo/`` in the checkout (Airflow's home and log, the service's
database and log, the run artifacts); a second run reuses the Airflow database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncbridge.launcher import RunningService

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from loadgate.run.watch import RunWatch, find_run
from loadgate_syncbridge.profiles import syncbridge as syncbridge_profile

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """An AIRFLOW_HOME of its own (SQLite), this checkout's DAGs and plugins, no examples, and
    the deployment's local settings (``deploy/airflow_local_settings.py``: the scheduler
    imports the gate's modules before it forks its tasks)."""
    (home / "config").mkdir(parents=True, exist_ok=True)
    shipped = (ROOT / "deploy" / "airflow_local_settings.py").read_bytes()
    installed = home / "config" / "airflow_local_settings.py"
    if not installed.exists() or installed.read_bytes() != shipped:
        installed.write_bytes(shipped)
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
    # a SIGTERM stops the demo as Ctrl-C does: Airflow and the service are stopped on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    work = args.workdir.resolve()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    svc_dir = work / f"service-{stamp}"
    db = svc_dir / "syncbridge.db"
    admin = secrets.token_urlsafe(24)
    artifacts = work / "artifacts"
    log_path = work / "logs" / f"airflow-{stamp}.log"
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
            "artifacts_root": str(artifacts),
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
        print(f"running the release_gate DAG: {json.dumps(conf)}")
        print(f"Airflow's output goes to {log_path}", flush=True)
        started = time.monotonic()
        code, run_root = run_watched(env, conf, log_path, artifacts, service.url)
        took = time.monotonic() - started
    finally:
        if service is not None:
            service.stop()
    print(f"\nthe DAG run took {took:.0f} s; Airflow's log: {log_path}")
    if run_root is None or not (run_root / "report.json").is_file():
        print("the DAG wrote no report; the end of Airflow's log:", file=sys.stderr)
        print(tail(log_path), file=sys.stderr)
        return 1
    expected_fail = args.bad_release
    return 0 if (code != 0) == expected_fail else 1


def run_watched(
    env: dict[str, str],
    conf: dict[str, Any],
    log_path: Path,
    artifacts: Path,
    target_url: str,
    *,
    poll_s: float = 1.0,
    timeout: float = 1800,
) -> tuple[int, Path | None]:
    """``airflow dags test`` with its output in ``log_path``, while the run folder it writes
    under ``artifacts`` is followed and printed (:class:`RunWatch`). Its exit code and run
    folder (None when the DAG wrote none). Airflow is stopped if this is interrupted."""
    before = {p.name for p in artifacts.iterdir()} if artifacts.is_dir() else set()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    watch: RunWatch | None = None
    argv = [str(BIN / "airflow"), "dags", "test", "release_gate", "-c", json.dumps(conf)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    print(f"the DAG run took over {timeout:.0f} s: stopping it", file=sys.stderr)
                    break
                if watch is None:
                    found = find_run(artifacts, target_url, before)
                    watch = None if found is None else RunWatch(found)
                if watch is not None:
                    say(watch.poll())
                time.sleep(poll_s)
        finally:
            stop(proc)
    if watch is None:
        found = find_run(artifacts, target_url, before)
        watch = None if found is None else RunWatch(found)
    if watch is not None:
        say(watch.poll(final=True))
    return int(proc.returncode), None if watch is None else watch.root


def say(lines: list[str]) -> None:
    for line in lines:
        print(line, flush=True)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 60) -> None:
    """Stop Airflow if it still runs: SIGTERM (its task stops the load's shards), then SIGKILL
    (the shards' watchdog stops them)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} is not readable)"


if __name__ == "__main__":
    raise SystemExit(main())
