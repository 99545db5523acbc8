"""``make up`` / ``make down``: a local Airflow running the release gate, ready in the browser.

``up`` starts, on loopback and with everything under ``.up/`` in the checkout:

- the reference SyncBridge service, release v1 deployed over a v0 (so a rollback has a release
  to return to), on a free port;
- Airflow 3 from this environment with this checkout's ``dags/`` and ``plugins/``, its metadata
  database in SQLite: ``airflow db migrate``, then the scheduler (LocalExecutor), the
  dag-processor, the triggerer and the api-server (port 8080, or a free one when 8080 is taken);
- the ``syncbridge`` profile (the ``loadgate_profiles`` Variable, by environment) pointed at
  that service, at the demo's size (30 users, time scale 0.04), so the **Trigger** form's
  defaults gate the running service; run roots under ``.up/artifacts``.

It waits until the UI answers and ``release_gate`` is listed, then prints the URL and how to log
in: the SimpleAuthManager's user ``admin``, whose password Airflow generates into a file under
``.up/airflow`` (the path is printed, never the password). Each process runs in a session of its
own with its pid in ``.up/run/<name>.pid`` and its log in ``.up/logs/<name>.log``. A second
``up`` finds them running and starts nothing.

``down`` stops what ``up`` started, by its pid files (each process group with its descendants,
also load shards in process groups of their own: SIGTERM, then SIGKILL after a grace), and says
what it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from loadgate_syncbridge.demo import ROOT, airflow_env, connection_env, profiles_env
from loadgate_syncbridge.profiles import syncbridge as syncbridge_profile

BIN = Path(sys.executable).parent
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")  # what runs DAG runs
SERVICE = "syncbridge"
ADMIN_USER = "admin"
DAG_ID = "release_gate"
DEFAULT_PORT = 8080
RELEASE, PREVIOUS = "v1", "v0"
# the demo's size: what a laptop runs in a few minutes
SCALE, TIME_SCALE, SHARDS = 0.003, 0.04, 2
GRACE_S = 20.0


@dataclass(frozen=True)
class Layout:
    """Where ``up`` keeps its state: everything under one folder."""

    root: Path

    @property
    def home(self) -> Path:  # AIRFLOW_HOME: the SQLite database, the generated password
        return self.root / "airflow"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "run"

    @property
    def service(self) -> Path:
        return self.root / "service"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def state(self) -> Path:  # what `up` printed, for a second `up`: no secret in it
        return self.root / "state.json"

    @property
    def passwords(self) -> Path:
        """The SimpleAuthManager's generated passwords file (Airflow writes it)."""
        return self.home / "simple_auth_manager_passwords.json.generated"

    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"


# --- processes by pid file ----------------------------------------------------------------


def _running(layout: Layout, name: str) -> psutil.Process | None:
    """The live process of ``name``'s pid file: one created before the file was written (a
    pid the system gave to another process since is not ours)."""
    path = layout.pid_file(name)
    try:
        pid = int(path.read_text().strip())
        written = path.stat().st_mtime
        proc = psutil.Process(pid)
        if proc.create_time() <= written + 1 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def _spawn(layout: Layout, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> int:
    """Start ``argv`` in a session of its own (``down`` ends its whole process group), its
    output in ``logs/<name>.log``, its pid in ``run/<name>.pid``."""
    with open(layout.logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    layout.pid_file(name).write_text(f"{proc.pid}\n")
    return proc.pid


def _family(proc: psutil.Process) -> list[psutil.Process]:
    """A process, its descendants (load shards run in process groups of their own) and the
    other members of its process group."""
    found = {proc.pid: proc}
    with contextlib.suppress(psutil.Error):
        for child in proc.children(recursive=True):
            found[child.pid] = child
    for other in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if other.pid not in found and os.getpgid(other.pid) == proc.pid:
                found[other.pid] = other
    return list(found.values())


def _stop(procs: Iterable[psutil.Process], grace: float = GRACE_S) -> None:
    """SIGTERM, then SIGKILL to whatever is left after ``grace`` seconds."""
    procs = list(procs)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def names() -> tuple[str, ...]:
    """Every process ``up`` starts."""
    return (*COMPONENTS, SERVICE)


def running(layout: Layout) -> dict[str, psutil.Process]:
    return {name: proc for name in names() if (proc := _running(layout, name)) is not None}


def pids(layout: Layout) -> set[int]:
    """Every live process of this ``up``: each started process with its family."""
    return {p.pid for proc in running(layout).values() for p in _family(proc)}


def down(layout: Layout, out: Any = sys.stdout) -> list[str]:
    """Stop everything ``up`` started under ``layout``; returns what was running."""
    live = running(layout)
    stopped = [f"{name} (pid {proc.pid})" for name, proc in live.items()]
    # Airflow's components at once (each takes seconds to wind down), then the service, which a
    # stopping task may still be talking to
    airflow = [p for name, proc in live.items() if name != SERVICE for p in _family(proc)]
    _stop(airflow)
    if SERVICE in live:
        _stop(_family(live[SERVICE]))
    for name in names():
        layout.pid_file(name).unlink(missing_ok=True)
    layout.state.unlink(missing_ok=True)
    where = _shown(layout.root)
    if stopped:
        print(f"loadgate down: stopped {', '.join(stopped)} ({where})", file=out)
    else:
        print(f"loadgate down: nothing was running under {where}", file=out)
    return stopped


# --- starting -----------------------------------------------------------------------------


def port_free(port: int) -> bool:
    """Free for a server (SO_REUSEADDR, as the API server binds: past TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _secret(layout: Layout, name: str) -> str:
    """A secret all the components share (the JWT and API keys), made for this ``up``; kept
    in a 0600 file, never on a command line."""
    path = layout.home / f".{name}-secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text()


def start_service(layout: Layout, admin_token: str, timeout: float = 30) -> str:
    """The reference service: ``v0`` first (a release to roll back to), then ``v1`` over it on
    the same database, in a session of its own. Returns its URL."""
    from syncbridge.launcher import start_syncbridge

    db = layout.service / "syncbridge.db"
    start_syncbridge(
        layout.service / PREVIOUS, release=PREVIOUS, db_path=db, admin_token=admin_token
    ).stop()
    port_file = layout.service / "port"
    port_file.unlink(missing_ok=True)
    # the admin token in the environment: a command line is anyone's to read (ps)
    env = {**os.environ, "SYNCBRIDGE_ADMIN_TOKEN": admin_token}
    argv = [
        str(BIN / "python"),
        "-m",
        "syncbridge",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--db",
        f"sqlite:///{db}",
        "--release",
        RELEASE,
        "--log-file",
        str(layout.service / "syncbridge.log"),
        "--pool-size",
        "16",
    ]
    _spawn(layout, SERVICE, argv, env, layout.service)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _running(layout, SERVICE) is None:
            log = _tail(layout.logs / f"{SERVICE}.log")
            raise RuntimeError(f"the reference service exited:\n{log}")
        if port_file.exists() and port_file.read_text().strip():
            url = f"http://127.0.0.1:{int(port_file.read_text())}"
            if _get(f"{url}/readyz")[0] == 200:
                return url
        time.sleep(0.1)
    raise RuntimeError(f"the reference service did not answer in {timeout:.0f} s")


def profile(layout: Layout, service_url: str) -> dict[str, Any]:
    """The shipped ``syncbridge`` profile, pointed at the running service at the demo's size."""
    return {
        **syncbridge_profile(),
        "description": "The reference SyncBridge service started by make up",
        "default_target": service_url,
        "scale": SCALE,
        "time_scale": TIME_SCALE,
        "shards": SHARDS,
        "artifacts_root": str(layout.artifacts),
        "target_log": str(layout.service / "syncbridge.log"),
    }


def environment(layout: Layout, port: int, service_url: str, admin_token: str) -> dict[str, str]:
    """The environment every Airflow component runs with."""
    url = f"http://127.0.0.1:{port}"
    return airflow_env(
        layout.home,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{ADMIN_USER}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(layout.passwords),
        AIRFLOW__API__BASE_URL=url,
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{url}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET=_secret(layout, "jwt"),
        AIRFLOW__API__SECRET_KEY=_secret(layout, "api"),
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        # a task's end noticed within 1 s, not 5 (a gate run is a chain of ~16 short tasks)
        AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="1",
        # and the next task started within a quarter second, not a second: an idle scheduler
        # loop sleeps this long before it looks again (0.08 of a core more while it idles)
        AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.25",
        **profiles_env({"syncbridge": profile(layout, service_url)}),
        # the admin token the reference service's rollback uses
        **connection_env("loadgate_target", conn_type="http", password=admin_token),
    )


def _migrate(layout: Layout, env: dict[str, str]) -> None:
    with open(layout.logs / "db-migrate.log", "wb") as log:
        done = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=env,
            cwd=layout.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError("airflow db migrate failed:\n" + _tail(layout.logs / "db-migrate.log"))


def _token(url: str, password: str) -> str | None:
    request = urllib.request.Request(
        f"{url}/auth/token",
        data=json.dumps({"username": ADMIN_USER, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            token: str = json.loads(resp.read())["access_token"]
            return token
    except (OSError, ValueError, KeyError):
        return None


def admin_password(layout: Layout) -> str | None:
    try:
        found: str = json.loads(layout.passwords.read_text())[ADMIN_USER]
        return found
    except (OSError, ValueError, KeyError):
        return None


def wait_ready(layout: Layout, url: str, timeout: float) -> None:
    """Until the API server answers, every component reports healthy and ``release_gate`` is
    parsed; a component that exits ends the wait with its log's tail."""
    deadline = time.monotonic() + timeout
    last = "nothing answered"
    while time.monotonic() < deadline:
        for name in COMPONENTS:
            if _running(layout, name) is None:
                raise RuntimeError(f"airflow {name} exited:\n" + _tail(layout.logs / f"{name}.log"))
        status, body = _get(f"{url}/api/v2/monitor/health")
        password = admin_password(layout)
        if status != 200 or password is None:
            last = f"health: {status or 'no answer'}"
        else:
            health = json.loads(body)
            unhealthy = [k for k, v in health.items() if (v or {}).get("status") != "healthy"]
            token = _token(url, password)
            dag = _get(f"{url}/api/v2/dags/{DAG_ID}", {"Authorization": f"Bearer {token}"})[0]
            if not unhealthy and dag == 200:
                return
            last = f"unhealthy: {unhealthy}, GET /dags/{DAG_ID}: {dag}"
        time.sleep(1)
    raise TimeoutError(f"Airflow was not ready in {timeout:.0f} s ({last})")


def _shown(path: Path) -> str:
    """A path as a person in the checkout reads it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def describe(layout: Layout, out: Any = sys.stdout) -> None:
    state = json.loads(layout.state.read_text())
    print(
        f"""
Airflow: {state["url"]}
  log in as {ADMIN_USER}; the password is in {_shown(layout.passwords)}
  DAG {DAG_ID}: its Trigger form, untouched, gates the reference service below
    at scale {SCALE}, time scale {TIME_SCALE} (profile syncbridge); tick "Dry run" to send no load
  a run's report: the Report tab on the run's page
reference service: release {RELEASE} at {state["service_url"]} (over {PREVIOUS}, to roll back to)
run roots: {_shown(layout.artifacts)}, logs: {_shown(layout.logs)}
stop it all with `make down`""",
        file=out,
        flush=True,
    )


def up(layout: Layout, port: int | None = None, timeout: float = 300, out: Any = sys.stdout) -> str:
    """Start everything (once: a running ``up`` is left as it is); returns the UI's URL."""
    live = running(layout)
    if live and len(live) == len(names()) and layout.state.exists():
        print(f"loadgate up: already running under {_shown(layout.root)}", file=out)
        describe(layout, out)
        return str(json.loads(layout.state.read_text())["url"])
    if live:
        print("loadgate up: a previous up is partly running; stopping it first", file=out)
        down(layout, out)
    for folder in (layout.home, layout.logs, layout.pids, layout.service, layout.artifacts):
        folder.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = DEFAULT_PORT if port_free(DEFAULT_PORT) else free_port()
    elif port == 0:
        port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(
        f"loadgate up: Airflow ({', '.join(COMPONENTS)}) and the reference service, "
        f"under {_shown(layout.root)} (first run: about a minute) …",
        file=out,
        flush=True,
    )
    try:
        admin_token = secrets.token_urlsafe(24)
        service_url = start_service(layout, admin_token)
        env = environment(layout, port, service_url, admin_token)
        _migrate(layout, env)
        for component in COMPONENTS:
            argv = [str(BIN / "airflow"), component]
            if component == "api-server":
                argv += ["--host", "127.0.0.1", "--port", str(port)]
            _spawn(layout, component, argv, env, layout.home)
        wait_ready(layout, url, timeout)
    except BaseException:
        print("loadgate up: failed; stopping what was started", file=out, flush=True)
        down(layout, out)
        raise
    layout.state.write_text(json.dumps({"url": url, "service_url": service_url}) + "\n")
    print("loadgate up: ready", file=out)
    describe(layout, out)
    return url


def status(layout: Layout, out: Any = sys.stdout) -> bool:
    live = running(layout)
    if not live:
        print(f"loadgate up: not running under {_shown(layout.root)}", file=out)
        return False
    shown = ", ".join(f"{name} (pid {proc.pid})" for name, proc in live.items())
    print(f"loadgate up: running: {shown}", file=out)
    if layout.state.exists():
        describe(layout, out)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgate-up", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"), nargs="?", default="up")
    parser.add_argument("--dir", type=Path, default=ROOT / ".up", help="state folder (.up/)")
    parser.add_argument(
        "--port", type=int, help=f"the UI's port (default {DEFAULT_PORT}, or a free one; 0: free)"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for Airflow")
    args = parser.parse_args(argv)
    layout = Layout(args.dir.resolve())
    if args.command == "down":
        down(layout)
        return 0
    if args.command == "status":
        return 0 if status(layout) else 3
    try:
        up(layout, args.port, args.timeout)
    except (RuntimeError, TimeoutError) as exc:
        print(f"loadgate up: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
