"""The embedded default backend: a stage's shards as local processes of ``loadgate run-stage``.

The command line is the one a Kubernetes pod runs (:func:`engine_argv`); only the launcher
differs. Each shard's output goes to its ``engine.log`` and, line by line, to the caller (the
task log). If the caller is stopped (a task killed from the UI), the shards are stopped too.
With the run root on an object store the shards write their results there themselves
(``--out s3://…``); their ``engine.log`` is kept in a local folder while they run and uploaded
beside their results when they end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from loadgate import pipeline

EXIT_COMPLETED, EXIT_ERROR, EXIT_ABORTED = 0, 2, 3
GRACE_S = 20.0


def run_key(run_id: str) -> str:
    """A short id for one execution of a stage, unique across reruns of the same DAG run.

    The engine builds the ids of what it creates (``ss-<key>-<shard>-<vu>-<iteration>``) from
    it; Airflow run ids are long and carry characters ids may not (``+``, ``:``, ``_``).
    """
    digest = hashlib.sha1(run_id.encode()).hexdigest()[:8]
    return f"{digest}-{time.time_ns() // 1_000_000 % 10**10:x}"


def engine_argv(
    run: pipeline.Run, stage: str, shard: int, shards: int, out: str, key: str
) -> list[str]:
    """``loadgate run-stage …`` for one shard: the same for a local process and for a pod."""
    cfg = run.config
    argv = [
        "run-stage",
        "--plan",
        str(run.plan_location()),
        "--stage",
        stage,
        "--target",
        cfg.target_url,
        "--out",
        out,
        "--shard",
        f"{shard}/{shards}",
        "--scale",
        f"{cfg.scale:g}",
        "--time-scale",
        f"{cfg.time_scale:g}",
        "--run-id",
        key,
    ]
    for entry in cfg.allowlist:
        argv += ["--allow", entry]
    users = run.users_file()
    if users.exists():
        argv += ["--users", str(users)]
    if cfg.prometheus_url:
        argv += ["--prometheus-url", cfg.prometheus_url]
    else:
        argv += ["--metrics-url", f"{cfg.target_url}/metrics"]
    return argv


def _pump(stream: IO[bytes], log_file: Path, prefix: str, emit: Callable[[str], None]) -> None:
    with log_file.open("ab") as sink:
        for raw in iter(stream.readline, b""):
            sink.write(raw)
            sink.flush()
            line = raw.decode(errors="replace").rstrip()
            emit(line if line.startswith(prefix) else f"{prefix} {line}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_stage_local(
    run: pipeline.Run, stage: str, emit: Callable[[str], None] = print, attempt: int = 1
) -> dict[str, Any]:
    """Run every shard of ``stage`` concurrently and wait for all; a fresh start on a rerun.
    ``attempt`` 2 is the re-run an inconclusive gate asks for (its own folder)."""
    folder = pipeline.clear_stage(run, stage, attempt)
    local = run.artifacts.is_local
    logs = Path(str(folder)) if local else Path(tempfile.mkdtemp(prefix=f"loadgate-{stage}-"))
    shards = run.shards(stage)
    what = stage if attempt == 1 else f"{stage} (attempt {attempt})"
    run.timeline(f"stage {what} started: {shards} shard(s)")
    loadgate = [sys.executable, "-m", "loadgate"]
    key = run_key(run.run_id)
    procs: list[subprocess.Popen[bytes]] = []
    pumps: list[threading.Thread] = []
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
            )
            procs.append(proc)
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
        for pump in pumps:
            pump.join(timeout=5)
        if not local:
            for log_file in sorted(logs.glob("*/engine.log")):
                target = folder / log_file.parent.name / "engine.log"
                target.write_bytes(log_file.read_bytes())
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
