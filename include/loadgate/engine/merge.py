"""Merging shard results: any number of shard directories of one stage into one aggregate.

Windows are aligned by their wall-clock second; counts and histograms are added (see
:mod:`loadgate.engine.aggregate`). A shard that was killed (no end in its ``meta.json``, maybe a
truncated last line) is merged with what it wrote and reported as incomplete. Windows are
streamed, never all held in memory; large merges are split over worker processes (each sums
its share of the shards, the parent adds the sums), which is exact because addition is.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from loadgate.storage import as_path, is_remote

from .aggregate import Aggregate
from .results import (
    ResultsError,
    ShardResults,
    find_shard_dirs,
    iter_windows,
    read_meta,
    windows_bytes,
)

PARALLEL_MIN_BYTES = 16_000_000


@dataclass
class MergedStage:
    stage: str
    plan: str
    shards: list[ShardResults]  # meta only (their windows are in the aggregate)
    aggregate: Aggregate
    started_at: float | None
    ended_at: float | None
    status: str
    aborted: dict[str, Any] | None
    incomplete: list[str] = field(default_factory=list)
    truncated_lines: int = 0

    @property
    def duration_s(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.ended_at
        if end is None and self.aggregate.t_max is not None:
            end = float(self.aggregate.t_max + 1)
        return max(0.0, (end or self.started_at) - self.started_at)


def _status(shards: list[ShardResults]) -> str:
    statuses = [s.meta.get("status") for s in shards]
    for status in ("aborted", "error", "terminated"):
        if status in statuses:
            return status
    if any(not s.finished for s in shards):
        return "incomplete"
    return "completed"


def _first_abort(shards: list[ShardResults]) -> dict[str, Any] | None:
    aborts = [s.meta["aborted"] for s in shards if s.meta.get("aborted")]
    if not aborts:
        return None
    own = [a for a in aborts if not a.get("by_marker")]
    return min(own or aborts, key=lambda a: a.get("at_s") or 0.0)


def _limits(meta: dict[str, Any]) -> dict[str, Any]:
    return (meta.get("generator") or {}).get("limits") or {}


def aggregate_dirs(dirs: list[str], limits: dict[str, Any]) -> tuple[Aggregate, list[int]]:
    """Sum the windows of some shard directories; (aggregate, skipped lines per directory)."""
    agg = Aggregate(limits.get("loop_lag_ms"), limits.get("cpu"))
    skipped_per_dir = []
    for d in dirs:
        skipped = [0]
        agg.add_records(iter_windows(as_path(d), skipped))
        skipped_per_dir.append(skipped[0])
    return agg, skipped_per_dir


def _workers(dirs: list[Any], workers: int | None) -> int:
    if workers is not None:
        return max(1, min(workers, len(dirs)))
    size = sum(windows_bytes(d) for d in dirs)
    if size < PARALLEL_MIN_BYTES:
        return 1
    cpus = os.cpu_count() or 1
    try:
        idle = cpus - os.getloadavg()[0]  # workers only help on cores nobody else uses
    except OSError:  # pragma: no cover - no load average on this platform
        idle = cpus
    return max(1, min(len(dirs), round(idle), 8))


def merge_dirs(dirs: list[Any], workers: int | None = None) -> MergedStage:
    """Merge shard directories (meta checked first, then the windows summed)."""
    if not dirs:
        raise ResultsError("nothing to merge")
    shards = [ShardResults(dir=d, meta=read_meta(d)) for d in dirs]
    stages = {s.meta.get("stage") for s in shards}
    if len(stages) > 1:
        raise ResultsError(
            "the directories hold different stages ("
            + ", ".join(sorted(str(s) for s in stages))
            + "); summarize one stage at a time"
        )
    limits = _limits(shards[0].meta)
    n = _workers(dirs, workers)
    names = [str(d) for d in dirs]
    if n == 1:
        agg, skipped = aggregate_dirs(names, limits)
    else:
        groups = [names[i::n] for i in range(n)]
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(n, mp_context=ctx) as pool:
            parts = list(pool.map(aggregate_dirs, groups, [limits] * n))
        agg = parts[0][0]
        for part, _ in parts[1:]:
            agg.merge(part)
        by_name = {}
        for group, (_, skips) in zip(groups, parts, strict=True):
            by_name.update(zip(group, skips, strict=True))
        skipped = [by_name[name] for name in names]
    for shard, count in zip(shards, skipped, strict=True):
        shard.truncated_lines = count
    starts = [s.meta["started_at"] for s in shards if s.meta.get("started_at") is not None]
    ends = [s.meta.get("ended_at") for s in shards]
    return MergedStage(
        stage=str(shards[0].meta.get("stage")),
        plan=str((shards[0].meta.get("plan") or {}).get("name", "")),
        shards=shards,
        aggregate=agg,
        started_at=min(starts) if starts else None,
        ended_at=max(e for e in ends if e is not None)
        if all(e is not None for e in ends)
        else None,
        status=_status(shards),
        aborted=_first_abort(shards),
        incomplete=[str(s.dir) for s in shards if not s.finished],
        truncated_lines=sum(skipped),
    )


def load_merged(paths: list[Any], workers: int | None = None) -> MergedStage:
    """Read and merge shard directories (or stage directories holding them), local paths or
    store URLs."""
    dirs = find_shard_dirs(list(paths))
    unique: dict[Any, None] = {}
    for d in dirs:
        unique.setdefault(d if is_remote(d) else d.resolve(), None)
    return merge_dirs(list(unique), workers)
