"""A throwaway PostgreSQL cluster (Debian's ``postgresql`` package) in a test's temp folder.

``PostgresCluster(workdir).start()`` runs ``initdb`` into ``workdir/data``, starts the server
(``postgres``) on a free loopback port (its unix socket in ``workdir/sock``, its log in
``workdir/postgres.log``), waits for ``pg_isready`` and creates the database ``airflow`` owned
by the superuser ``airflow`` (trust authentication: loopback and the socket only, a cluster
that lives as long as its test). ``.url`` is the SQLAlchemy URL (psycopg2; Airflow derives its
async one, asyncpg). ``stop()`` asks for a fast shutdown, then kills what is left of the
server's process group; nothing lives outside ``workdir``.

The server runs as a child of the test, in a process group of its own, not daemonized by
``pg_ctl start``: a daemonized postmaster is reparented to PID 1, which in a container may
never reap it (a zombie left behind); a child is waited for.

The binaries are found by ``pg_config --bindir``, then ``/usr/lib/postgresql/<version>/bin``
(newest first), then ``initdb`` on PATH. Where there are none, the test is skipped.

PostgreSQL refuses to run as root. As root (a CI container), the server runs in a user
namespace (``unshare --user``) where the test's uid is seen as the ``postgres`` user: the
files stay the test's, in its temp folder, with no change of ownership or permissions.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SKIP_REASON = "PostgreSQL is not installed (Debian package 'postgresql'; .ci/run installs it)"
DATABASE = "airflow"
SUPERUSER = "airflow"
# a throwaway cluster: no durability, enough connections for every Airflow component's pools
SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200")
TOOLS = ("initdb", "postgres", "pg_isready", "createdb")
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes, with "/.s.PGSQL.<port>" after the folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _version(path: str) -> tuple[int, ...]:
    name = Path(path).parent.name  # /usr/lib/postgresql/<version>/bin
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def find_bindir() -> Path | None:
    """Where ``initdb``, ``postgres`` and ``pg_isready`` are, or None."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    candidates += [Path(p) for p in versions]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in TOOLS):
            return bindir
    return None


def _server_prefix() -> list[str]:
    """How the server's commands run: as they are, or as root in a user namespace where the
    test's uid maps to a user PostgreSQL accepts (it refuses uid 0)."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("PostgreSQL refuses to run as root and 'unshare' (util-linux) is missing")
    try:
        user = pwd.getpwnam("postgres")
        uid, gid = user.pw_uid, user.pw_gid
    except KeyError:
        uid = gid = 65534  # nobody
    prefix = [unshare, "--user", f"--map-user={uid}", f"--map-group={gid}"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(
            "PostgreSQL refuses to run as root and user namespaces are not allowed here: "
            + probe.stderr.strip()
        )
    return prefix


class PostgresCluster:
    def __init__(self, workdir: Path) -> None:
        bindir = find_bindir()
        if bindir is None:
            pytest.skip(SKIP_REASON)
        self.bindir = bindir
        self.workdir = workdir
        self.data = workdir / "data"
        self.sockdir = workdir / "sock"
        self.log = workdir / "postgres.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None  # the postmaster, while it runs
        self.pid: int | None = None
        if len(str(self.sockdir)) > SOCKET_PATH_MAX:
            raise ValueError(f"socket folder path too long for a unix socket: {self.sockdir}")

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the created database (psycopg2, over loopback TCP)."""
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, argv: list[str], prefix: list[str], timeout: float = 120) -> None:
        proc = subprocess.run(
            [*prefix, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(argv[:2])} failed ({proc.returncode}):\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}\n{log}"
            )

    def start(self, timeout: float = 60) -> PostgresCluster:
        prefix = _server_prefix()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            prefix,
        )
        argv = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        argv += ["-k", str(self.sockdir), "-c", "listen_addresses=127.0.0.1"]
        for setting in SETTINGS:
            argv += ["-c", setting]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*prefix, *argv],  # unshare execs: the Popen's pid is the postmaster's
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            )
        self.pid = self.proc.pid
        try:
            self._wait_ready(timeout)
            self._run(
                [
                    str(self.bindir / "createdb"),
                    "-h",
                    str(self.sockdir),
                    "-p",
                    str(self.port),
                    "-U",
                    SUPERUSER,
                    DATABASE,
                ],
                [],
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.proc.returncode}:\n"
                    + self.log.read_text(errors="replace")[-2000:]
                )
            ready = subprocess.run(
                [
                    *(str(self.bindir / "pg_isready"), "-q", "-h", str(self.sockdir)),
                    *("-p", str(self.port), "-U", SUPERUSER, "-d", "postgres"),
                ],
                stdin=subprocess.DEVNULL,
                timeout=10,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"PostgreSQL not ready in {timeout:.0f} s")

    def stop(self, grace: float = 30) -> None:
        """A fast shutdown (SIGINT to the postmaster: it ends its backends); what is left of
        its process group after ``grace`` seconds is killed."""
        proc, self.proc, self.pid = self.proc, None, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        _signal_group(proc.pid, signal.SIGKILL)  # the group's stragglers too
        proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (a child of ours not yet reaped) counts as gone
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True
