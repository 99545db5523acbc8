"""Start the real ``syncbridge serve`` as a subprocess on a free loopback port.

Used by the tests (see tests/conftest.py) and by anything that needs the reference service as
a local target:

    svc = start_syncbridge(workdir, faults={"error_rate": 0.1}, kdf_cost=4)
    try:
        requests.get(svc.url + "/healthz")
        svc.set_faults({"latency_ms": 200})
    finally:
        svc.stop()

The admin token reaches the service in its environment (``SYNCBRIDGE_ADMIN_TOKEN``), never on
its command line (``syncbridge serve`` refuses ``--admin-token``: any user of the machine reads
a command line in ``ps``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ServiceStartError(RuntimeError):
    pass


@dataclass
class RunningService:
    url: str
    port: int
    admin_token: str
    db_path: Path
    log_path: Path
    proc: subprocess.Popen
    workdir: Path
    args: list[str] = field(default_factory=list)

    def _admin(self, method: str, body: bytes | None = None) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.url}/admin/faults",
            data=body,
            method=method,
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def set_faults(self, faults: dict[str, Any]) -> dict[str, Any]:
        """Replace the live fault set ({} clears); returns what the service now has."""
        return self._admin("PUT", json.dumps(faults).encode())["faults"]

    def get_faults(self) -> dict[str, Any]:
        return self._admin("GET")["faults"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_records(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        text = self.log_path.read_text()
        # The service may be writing right now: only complete lines count.
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.split("\n") if line.strip()]

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return 0


def start_syncbridge(
    workdir: str | os.PathLike,
    *,
    faults: dict[str, Any] | None = None,
    admin_token: str | None = None,
    kdf_cost: int = 4,
    release: str = "v1",
    token_ttl: float | None = None,
    refresh_ttl: float | None = None,
    pool_size: int | None = None,
    pool_timeout: float | None = None,
    memory_limit_mb: float | None = None,
    cpu_limit_cores: float | None = None,
    db_path: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    start_timeout: float = 20.0,
    cpu_affinity: list[int] | None = None,
) -> RunningService:
    """Start the service and wait until it answers /readyz (or /healthz, wait_ready=False)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(3)
    db_path = Path(db_path) if db_path else workdir / "syncbridge.db"
    log_path = Path(log_path) if log_path else workdir / f"syncbridge-{tag}.log"
    port_file = workdir / f"syncbridge-{tag}.port"
    if admin_token is None:
        admin_token = secrets.token_urlsafe(24)  # "" starts the service with admin disabled
    args = [
        sys.executable,
        "-m",
        "syncbridge",
        "serve",
        "--host",
        host,
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--db",
        f"sqlite:///{db_path}",
        "--release",
        release,
        "--log-file",
        str(log_path),
        "--kdf-cost",
        str(kdf_cost),
    ]
    if faults is not None:
        args += ["--faults", json.dumps(faults)]
    for flag, value in (
        ("--token-ttl", token_ttl),
        ("--refresh-ttl", refresh_ttl),
        ("--pool-size", pool_size),
        ("--pool-timeout", pool_timeout),
        ("--memory-limit-mb", memory_limit_mb),
        ("--cpu-limit-cores", cpu_limit_cores),
    ):
        if value is not None:
            args += [flag, str(value)]
    args += extra_args or []
    # the token in the environment: a command line is anyone's to read (ps)
    child_env = {**os.environ, "SYNCBRIDGE_ADMIN_TOKEN": admin_token, **(env or {})}
    if cpu_affinity:
        args = ["taskset", "-c", ",".join(map(str, cpu_affinity)), *args]
    out = open(workdir / f"syncbridge-{tag}.stdout", "wb")  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=child_env, cwd=workdir)
    out.close()
    deadline = time.monotonic() + start_timeout
    port = None
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceStartError(
                    f"syncbridge exited with {proc.returncode}: "
                    + (workdir / f"syncbridge-{tag}.stdout").read_text()[-2000:]
                )
            if port is None and port_file.exists():
                port = int(port_file.read_text().strip())
            if port is not None:
                h = f"[{host}]" if ":" in host else host
                url = f"http://{h}:{port}"
                status = _get(url + ("/readyz" if wait_ready else "/healthz"))
                if status == 200:
                    return RunningService(
                        url=url,
                        port=port,
                        admin_token=admin_token,
                        db_path=db_path,
                        log_path=log_path,
                        proc=proc,
                        workdir=workdir,
                        args=args,
                    )
            time.sleep(0.05)
        raise ServiceStartError(f"syncbridge not ready within {start_timeout}s")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        raise
