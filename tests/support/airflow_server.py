"""A real Airflow 3 deployment on loopback, for the deployment tier (``tests/deployment``).

``AirflowDeployment(home).start()`` migrates the metadata database, then starts the Airflow
components asked for (by default the dag-processor and the api-server; the scheduler and the
triggerer when a test runs DAG runs) from the pinned environment, with this checkout's DAGs and
plugins, each in a process group of its own with its log in ``home/logs/<component>.log``.
It waits until the API server answers and ``release_gate`` is parsed, or fails with the tail of
the log of the component that died. ``stop()`` ends every process group it started (SIGTERM,
then SIGKILL), also when a test failed; nothing is left outside ``home``.

The metadata database is SQLite in ``home`` by default. With ``postgres=True`` it is a
throwaway PostgreSQL cluster in ``home/postgres`` (``tests.support.postgres``: Debian's
``postgresql``; the test is skipped where it is absent), and the executor is the LocalExecutor
with ``parallelism`` task slots (default 8): the production shape of ``docker-compose.yaml``.
``start()`` starts the cluster before ``airflow db migrate``; ``stop()`` stops it after the
Airflow components, also when starting failed half-way.

The interface the other tiers build on (stable): ``url`` (the API server's base URL),
``env`` (a property: the environment every component runs with, for ``airflow`` commands of
one's own), ``token()``, ``api(method, path, **requests_kwargs)`` (path under ``/api/v2``),
``dag_runs(dag_id)`` (newest first), ``pids()`` (every live process it started), ``start()``,
``stop()``. ``FULL`` is the component set that runs DAG runs.

Authentication is the SimpleAuthManager's, the documented way: one ``admin`` user with a random
password in a passwords file; ``token()`` obtains a JWT from ``POST /auth/token`` and ``api()``
calls the REST API v2 with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from loadgate.client import RETRY_DELAYS_S, TRANSIENT
from tests.support.airflow import airflow_env
from tests.support.postgres import PostgresCluster

ADMIN_USER = "admin"
DAG_ID = "release_gate"
FULL = ("scheduler", "dag-processor", "triggerer", "api-server")  # what runs DAG runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


class AdminApi:
    """The REST API v2 as the admin user: a JWT from the SimpleAuthManager's token endpoint
    (``POST /auth/token``), then bearer calls. For a class with ``url``, ``password`` and a
    ``_token`` attribute (None until the first call)."""

    url: str
    password: str
    _token: str | None

    def token(self) -> str:
        """A JWT from the SimpleAuthManager's token endpoint (``POST /auth/token``)."""
        if self._token is None:
            resp = requests.post(
                f"{self.url}/auth/token",
                json={"username": ADMIN_USER, "password": self.password},
                timeout=10,
            )
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """``path`` under ``/api/v2``, with the admin's token. A call other than a POST answered
        with a server error is sent again (as ``loadgate gate`` does): the API server answers
        500 when PostgreSQL reports a deadlock with the scheduler, e.g. marking a run failed
        while its tasks end."""
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        delays = [] if method.upper() == "POST" else list(RETRY_DELAYS_S)
        while True:
            resp = requests.request(
                method, f"{self.url}/api/v2{path}", headers=headers, timeout=30, **kwargs
            )
            if resp.status_code not in TRANSIENT or not delays:
                return resp
            time.sleep(delays.pop(0))

    def dag_runs(self, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        """The DAG's runs, newest first."""
        resp = self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"})
        resp.raise_for_status()
        runs: list[dict[str, Any]] = resp.json()["dag_runs"]
        return runs


@dataclass
class AirflowDeployment(AdminApi):
    home: Path
    components: tuple[str, ...] = ("dag-processor", "api-server")
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    postgres: bool = False  # the metadata database on PostgreSQL (and the LocalExecutor)
    base_path: str = ""  # where the UI and API are served, e.g. "/airflow" ([api] base_url)
    parallelism: int = 8  # the executor's task slots
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    database: PostgresCluster | None = None  # the cluster, while it runs
    _token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    @property
    def env(self) -> dict[str, str]:
        passwords = self.home / "simple_auth_manager_passwords.json"
        return airflow_env(
            self.home,
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{ADMIN_USER}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
            AIRFLOW__API__BASE_URL=self.url,
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.url}/execution/",
            AIRFLOW__API_AUTH__JWT_SECRET=self._secret("jwt"),
            AIRFLOW__API__SECRET_KEY=self._secret("api"),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            # the DAG files do not change while a test runs: parsed at the start, not every 30 s
            # (each parse is a process importing the DAG, a second or two of CPU)
            AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="600",
            # as docker-compose.yaml: a task's end noticed within 1 s, not 5 (a gate run is a
            # chain of about 16 short tasks)
            AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="1",
            **self._database_env(),
            **self.env_extra,
        )

    def _database_env(self) -> dict[str, str]:
        if not self.postgres:
            return {}
        if self.database is None:
            raise RuntimeError("the PostgreSQL cluster is not started: call start() first")
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database.url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "5",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            # a scheduler loop with nothing to do sleeps this long (default 1 s) before it looks
            # for a task that has ended: each step of a run's chain of ~25 (a task, or a skip
            # decided by the scheduler) waited up to a second. A refused run's ~25 steps took
            # 26 s at 1 s, 21 s at 0.25 s (one run each). The suite is short of CPU, not of
            # wall time: a healthy run (REST-triggered, 3 stages) cost the scheduler and
            # PostgreSQL 19.8 CPU-s at 0.25 s, 14.1 at 0.5 s, 9.3 at 1 s, and ended in 77.5 s,
            # 77.4 s and 82.3 s (one run each, quiet machine, 3 December).
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
        }

    def _secret(self, name: str) -> str:
        """A secret of this deployment, the same for every component it starts."""
        path = self.home / f".{name}-secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 240) -> AirflowDeployment:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        (self.home / "simple_auth_manager_passwords.json").write_text(
            json.dumps({ADMIN_USER: self.password})
        )
        try:
            if self.postgres:
                self.database = PostgresCluster(self.home / "postgres")
                self.database.start()
            env = self.env
            self._migrate(env)
            for component in self.components:
                self._spawn(component, env)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _migrate(self, env: dict[str, str]) -> None:
        """``airflow db migrate``; its output in ``home/logs/db-migrate.log``, its tail in the
        error when it fails."""
        log_path = self.home / "logs" / "db-migrate.log"
        with open(log_path, "wb") as log:
            proc = subprocess.run(
                [str(Path(env["PATH"].split(os.pathsep)[0]) / "airflow"), "db", "migrate"],
                env=env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=600,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed ({proc.returncode}):\n{_tail(log_path)}")

    def _spawn(self, component: str, env: dict[str, str]) -> None:
        argv = [str(Path(env["PATH"].split(os.pathsep)[0]) / "airflow"), component]
        if component == "api-server":
            argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.home / "logs" / f"{component}.log", "ab") as log:
            self.procs[component] = subprocess.Popen(
                argv,
                env=env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() ends its children too
            )

    def _check_alive(self) -> None:
        for component, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow {component} exited with {proc.returncode}:\n"
                    + _tail(self.home / "logs" / f"{component}.log")
                )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "nothing answered"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5)
                if health.ok:
                    dag = self.api("GET", f"/dags/{DAG_ID}")
                    if dag.ok:
                        return
                    last = f"GET /dags/{DAG_ID}: {dag.status_code} {dag.text[:200]}"
                else:
                    last = f"health: {health.status_code}"
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(1)
        logs = "\n".join(
            f"--- {c}\n{_tail(self.home / 'logs' / f'{c}.log', 1500)}" for c in self.procs
        )
        raise TimeoutError(f"Airflow not ready in {timeout:.0f} s ({last}):\n{logs}")

    def stop(self, grace: float = 20) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            _signal_group(proc, signal.SIGKILL)  # the group's stragglers too
            proc.wait()
        self.procs.clear()
        if self.database is not None:
            self.database.stop()
            self.database = None

    def pids(self) -> set[int]:
        """Every live process this deployment started: the components' process groups with
        their children, and the PostgreSQL server with its backends."""
        roots = [proc.pid for proc in self.procs.values() if proc.poll() is None]
        if self.database is not None and self.database.pid is not None:
            roots.append(self.database.pid)
        found: set[int] = set()
        for pid in roots:
            with contextlib.suppress(psutil.NoSuchProcess):
                root = psutil.Process(pid)
                found |= {pid, *(child.pid for child in root.children(recursive=True))}
        groups = {proc.pid for proc in self.procs.values()}
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if os.getpgid(proc.pid) in groups:
                    found.add(proc.pid)
        return found


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
