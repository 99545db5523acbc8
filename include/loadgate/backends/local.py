"""The embedded default backend: a stage's shards as local processes of ``loadgate run-stage``.

The command line is the one a Kubernetes pod runs (:func:`engine_argv`); only the launcher
differs. Each shard's output goes to its ``engine.log`` and, line by line, to the caller (the
task log). With the run root on an object store the shards write their results there themselves
(``--out s3://…``); their ``engine.log`` is kept in a local folder while they run and uploaded
beside their results when they end.

The shards die with the task, however it ends. Each shard runs in a process group of its own
(``start_new_session``), so a signal meant for the task's group does not reach it half-way and
the whole shard, children included, is stopped as one: SIGTERM (the engine writes its results
and exits), then SIGKILL after :data:`GRACE_S`. The task stops them when it ends or is stopped
(Airflow's SIGTERM raises in the task: ``finally``). A watchdog process, in a group of its own
too, is told each shard's group as it starts: if the task process dies without stopping them
(SIGKILL, the OOM killer, a SIGTERM with no handler), the watchdog finds its end of the pipe
closed and stops every group the same way.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from loadgate.backends.command import engine_argv, run_key

if TYPE_CHECKING:  # imported where used: the watchdog imports this module and needs no more
    from loadgate.run.folder import Run

EXIT_COMPLETED, EXIT_ERROR, EXIT_ABORTED = 0, 2, 3
GRACE_S = 20.0  # between SIGTERM and SIGKILL for a shard's process group


def _pump(stream: IO[bytes], log_file: Path, prefix: str, emit: Callable[[str], None]) -> None:
    with log_file.open("ab") as sink:
        for raw in iter(stream.readline, b""):
            sink.write(raw)
            sink.flush()
            line = raw.decode(errors="replace").rstrip()
            emit(line if line.startswith(prefix) else f"{prefix} {line}")


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # only zombies left, or the id went to someone else's group
        return False
    return True


def stop_groups(pgids: Iterable[int], grace_s: float = GRACE_S, poll_s: float = 0.05) -> None:
    """Stop whole process groups: SIGTERM, then SIGKILL to any still there after ``grace_s``."""
    alive = [pgid for pgid in pgids if _signal_group(pgid, signal.SIGTERM)]
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(poll_s)
        alive = [pgid for pgid in alive if _group_running(pgid)]
    for pgid in alive:
        _signal_group(pgid, signal.SIGKILL)


def _group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies, ended but not yet reaped by
    their parent, do not count)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def watchdog(grace_s: float = GRACE_S) -> None:
    """The shards' watchdog (``python -c``, a process of its own): reads process-group ids from
    stdin, one a line. ``done`` means the task stopped them itself: it exits. The end of stdin
    without ``done`` means the task process is gone: it stops every group it was told of."""
    groups: list[int] = []
    for line in sys.stdin:
        word = line.strip()
        if word == "done":
            return
        if word.isdigit():
            groups.append(int(word))
    stop_groups(groups, grace_s)


class _Watchdog:
    """The task's side of :func:`watchdog`."""

    def __init__(self, grace_s: float, label: str) -> None:
        code = f"from loadgate.backends.local import watchdog; watchdog({float(grace_s)!r})"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, label],  # label: what it guards, for ps; never run
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # outlives a kill of the task's process group
        )

    def watch(self, pgid: int) -> bool:
        """Tell the watchdog of a group; False if it is gone (the task still stops it)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{pgid}\n".encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return False
        return True

    def release(self) -> None:
        """The shards were stopped by the task: the watchdog ends without doing anything."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"done\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop every shard's process group (a no-op for the groups already gone) and reap them."""
    stop_groups([proc.pid for proc in procs])
    for proc in procs:
        proc.wait()


def run_stage_local(
    run: Run, stage: str, emit: Callable[[str], None] = print, attempt: int = 1
) -> dict[str, Any]:
    """Run every shard of ``stage`` concurrently and wait for all; a fresh start on a rerun.
    ``attempt`` 2 is the re-run an inconclusive gate asks for (its own folder)."""
    from loadgate.run.folder import clear_stage  # not at the top: the watchdog needs no more

    folder = clear_stage(run, stage, attempt)
    local = run.artifacts.is_local
    logs = Path(str(folder)) if local else Path(tempfile.mkdtemp(prefix=f"loadgate-{stage}-"))
    shards = run.shards(stage)
    what = stage if attempt == 1 else f"{stage} (attempt {attempt})"
    run.timeline(f"stage {what} started: {shards} shard(s)")
    loadgate = [sys.executable, "-m", "loadgate"]
    key = run_key(run.run_id)
    procs: list[subprocess.Popen[bytes]] = []
    pumps: list[threading.Thread] = []
    guard = _Watchdog(GRACE_S, str(folder))
    try:
        for i in range(shards):
            out = folder / f"shard-{i}"
            (logs / out.name).mkdir(parents=True, exist_ok=True)
            argv = loadgate + engine_argv(run, stage, i, shards, str(out), key)
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # its own process group, stopped as one
            )
            procs.append(proc)
            if not guard.watch(proc.pid):
                emit(
                    f"[{stage} {i}/{shards}] the shards' watchdog is gone: if this task is "
                    "killed, stop the shard's process group yourself"
                )
            assert proc.stdout is not None
            pump = threading.Thread(
                target=_pump,
                args=(proc.stdout, logs / out.name / "engine.log", f"[{stage} {i}/{shards}]", emit),
                daemon=True,
            )
            pump.start()
            pumps.append(pump)
        codes = [proc.wait() for proc in procs]
    finally:
        _stop(procs)  # a no-op when all ended; stops the shards when we are being stopped
        guard.release()
        for pump in pumps:
            pump.join(timeout=5)
        if not local:
            for log_file in sorted(logs.glob("*/engine.log")):
                target = folder / log_file.parent.name / "engine.log"
                with log_file.open("rb") as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
            shutil.rmtree(logs, ignore_errors=True)
    aborted = any(code == EXIT_ABORTED for code in codes)
    errors = [i for i, code in enumerate(codes) if code not in (EXIT_COMPLETED, EXIT_ABORTED)]
    run.timeline(
        f"stage {what} ended: exit codes {codes}" + (" (aborted by a criterion)" if aborted else "")
    )
    return {
        "stage": stage,
        "attempt": attempt,
        "shards": shards,
        "exit_codes": codes,
        "aborted": aborted,
        "errors": errors,
        "results": str(folder),
    }
