"""A real Airflow 3 deployment on loopback, for the deployment tier (``tests/deployment``).

``AirflowDeployment(home).start()`` migrates the metadata database, then starts the Airflow
components asked for (by default the dag-processor and the api-server; the scheduler and the
triggerer when a test runs DAG runs) from the pinned environment, with this checkout's DAGs and
plugins, each in a process group of its own with its log in ``home/logs/<component>.log``.
It waits until the API server answers and ``release_gate`` is parsed, or fails with the tail of
the log of the component that died. ``stop()`` ends every process group it started (SIGTERM,
then SIGKILL), also when a test failed; nothing is left outside ``home``.

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

import requests

from tests.support.airflow import airflow_env, migrate

ADMIN_USER = "admin"
DAG_ID = "release_gate"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class AirflowDeployment:
    home: Path
    components: tuple[str, ...] = ("dag-processor", "api-server")
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
            **self.env_extra,
        )

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
        env = self.env
        migrate(env)
        try:
            for component in self.components:
                self._spawn(component, env)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

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

    # --- REST API v2 --------------------------------------------------------------------------

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
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return requests.request(
            method, f"{self.url}/api/v2{path}", headers=headers, timeout=30, **kwargs
        )

    def dag_runs(self, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        resp = self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"})
        resp.raise_for_status()
        return resp.json()["dag_runs"]


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
