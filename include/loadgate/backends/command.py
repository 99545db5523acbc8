"""The one engine command line: ``loadgate run-stage …`` for one shard, the same for a local
process and a pod."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the watchdog imports this module and needs no more
    from loadgate.run.folder import Run


def run_key(run_id: str) -> str:
    """A short id for one execution of a stage, unique across reruns of the same DAG run.

    The engine builds the ids of what it creates (``ss-<key>-<shard>-<vu>-<iteration>``) from
    it; Airflow run ids are long and carry characters ids may not (``+``, ``:``, ``_``).
    """
    digest = hashlib.sha1(run_id.encode()).hexdigest()[:8]
    return f"{digest}-{time.time_ns() // 1_000_000 % 10**10:x}"


def engine_argv(run: Run, stage: str, shard: int, shards: int, out: str, key: str) -> list[str]:
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
