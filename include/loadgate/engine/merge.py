"""Merging shard results: any number of shard directories of one stage into one aggregate.

Windows are aligned by their wall-clock second; counts and histograms are added (see
:mod:`loadgate.engine.aggregate`). A shard that was killed (no end in its ``meta.json``, maybe a
truncated last line) is merged with what it wrote and reported as incomplete. Windows are
streamed, never all held in memory: the shards' windows are read side by side in time order,
one second of all shards at a time. Large merges are split over worker processes (each sums its
share of the shards, the parent adds the sums), which is exact because addition is.

Asked for it (``digest=True``, as the gate does), the same pass also folds each second into the
stage's per-second digest (:class:`~loadgate.engine.seconds.SecondsDigest`, what the comparison
with a baseline reads): each HTTP histogram is decoded once, into the second's histogram of its
window key, which goes both to the digest and to the aggregate.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, TypeVar

from loadgate.engine.aggregate import Aggregate
from loadgate.engine.histogram import Accumulator
from loadgate.engine.results import (
    ResultsError,
    ShardResults,
    find_shard_dirs,
    iter_windows,
    read_meta,
    windows_bytes,
)
from loadgate.engine.seconds import HttpDecoder, Record, SecondsDigest, by_second
from loadgate.storage import as_path, is_remote

PARALLEL_MIN_BYTES = 16_000_000
T = TypeVar("T")


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
    digest: SecondsDigest | None = None  # per second, folded in the merge when asked

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
    first: dict[str, Any] = min(own or aborts, key=lambda a: a.get("at_s") or 0.0)
    return first


def _limits(meta: dict[str, Any]) -> dict[str, Any]:
    return (meta.get("generator") or {}).get("limits") or {}


def _in_time_order(dirs: Sequence[str], skipped: list[list[int]]) -> Iterator[Record]:
    """The windows of some shard directories merged in time order (each shard's are)."""
    streams = [iter_windows(as_path(d), count) for d, count in zip(dirs, skipped, strict=True)]
    return heapq.merge(*streams, key=itemgetter("t"))


def _without_http_histograms(rec: Record) -> Record:
    """The record for the aggregate to count: its HTTP histograms are decoded per second."""
    http = rec.get("http")
    if not http:
        return rec
    return rec | {"http": [(*entry[:6], None) for entry in http]}


def _add_second(
    agg: Aggregate, digest: SecondsDigest, decode: HttpDecoder, t: int, records: list[Record]
) -> None:
    """One second of all shards into both, each HTTP histogram decoded once: into the second's
    histogram of its window key, added to the aggregate, then folded into the digest."""
    hists = decode(records)
    for rec in records:
        agg.add_record(_without_http_histograms(rec))
    for key, hist in hists.items():
        target = agg.http[key]  # the record's counts created it
        if target.acc is None:
            target.acc = Accumulator()
        target.acc.add(hist)
    digest.add_second(t, records, hists)


def aggregate_dirs(
    dirs: list[str], limits: dict[str, Any], digest: bool = False
) -> tuple[Aggregate, list[int], SecondsDigest | None]:
    """Sum the windows of some shard directories, and fold them into a per-second digest when
    ``digest``: (aggregate, skipped lines per directory, digest or None)."""
    agg = Aggregate(limits.get("loop_lag_ms"), limits.get("cpu"))
    skipped = [[0] for _ in dirs]
    records = _in_time_order(dirs, skipped)
    seconds = None
    if digest:
        seconds, decode = SecondsDigest(), HttpDecoder()
        for t, batch in by_second(records):
            _add_second(agg, seconds, decode, t, batch)
        seconds.finish()
    else:
        agg.add_records(records)
    return agg, [count[0] for count in skipped], seconds


def digest_dirs(dirs: list[str]) -> SecondsDigest:
    """The per-second digest of some shard directories alone (no aggregate)."""
    digest, decode = SecondsDigest(), HttpDecoder()
    for t, batch in by_second(_in_time_order(dirs, [[0] for _ in dirs])):
        digest.add_second(t, batch, decode(batch))
    digest.finish()
    return digest


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


def _split(work: Callable[..., T], names: list[str], n: int, *args: Any) -> list[T]:
    """``work(group, *args)`` on ``n`` groups of ``names`` in worker processes."""
    groups = [names[i::n] for i in range(n)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n, mp_context=ctx) as pool:
        return list(pool.map(work, groups, *([arg] * n for arg in args)))


def _unsplit(names: list[str], n: int, parts: Iterable[list[int]]) -> list[int]:
    """Per-name figures of :func:`_split`'s groups back in the order of ``names``."""
    by_name: dict[str, int] = {}
    for i, part in enumerate(parts):
        by_name.update(zip(names[i::n], part, strict=True))
    return [by_name[name] for name in names]


def digest_paths(paths: Sequence[Any], workers: int | None = None) -> SecondsDigest:
    """The per-second digest of shard directories (or stage directories holding them), local
    or store URLs, without merging them; split over worker processes as a merge is."""
    found = find_shard_dirs(list(paths))
    names = [str(d) for d in found]
    n = _workers(found, workers)
    if n <= 1:
        return digest_dirs(names)
    parts = _split(digest_dirs, names, n)
    digest = parts[0]
    for part in parts[1:]:
        digest.add(part)
    return digest


def stage_digest(merged: MergedStage, workers: int | None = None) -> SecondsDigest:
    """A merged stage's per-second digest: the one its merge folded (``digest=True``), else read
    from its shard directories (their windows are read again)."""
    if merged.digest is not None:
        return merged.digest
    return digest_paths([shard.dir for shard in merged.shards], workers)


def merge_dirs(dirs: list[Any], workers: int | None = None, digest: bool = False) -> MergedStage:
    """Merge shard directories (meta checked first, then the windows summed); with ``digest``,
    the stage's per-second digest is folded in the same pass (``MergedStage.digest``)."""
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
        agg, skipped, seconds = aggregate_dirs(names, limits, digest)
    else:
        parts = _split(aggregate_dirs, names, n, limits, digest)
        agg, _, seconds = parts[0]
        for part, _, part_seconds in parts[1:]:
            agg.merge(part)
            if seconds is not None and part_seconds is not None:
                seconds.add(part_seconds)
        skipped = _unsplit(names, n, (skips for _, skips, _ in parts))
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
        digest=seconds,
    )


def load_merged(paths: list[Any], workers: int | None = None, digest: bool = False) -> MergedStage:
    """Read and merge shard directories (or stage directories holding them), local paths or
    store URLs; ``digest``: also fold the per-second digest (see :func:`merge_dirs`)."""
    dirs = find_shard_dirs(list(paths))
    unique: dict[Any, None] = {}
    for d in dirs:
        unique.setdefault(d if is_remote(d) else d.resolve(), None)
    return merge_dirs(list(unique), workers, digest)
