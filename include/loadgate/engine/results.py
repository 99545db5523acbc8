"""A shard's results directory: ``meta.json`` and its windows, locally or on an object store.

A local ``--out`` holds ``meta.json`` and the append-only ``windows.jsonl``. Object stores have
no append, so a store ``--out`` (``s3://bucket/prefix/…/shard-0``) holds ``meta.json`` and the
windows as numbered segment objects, each a run of whole lines of the same format::

    meta.json                 uploaded at the start and again at the end
    windows/000001.jsonl      the windows closed in the first few seconds (``--upload-every``)
    windows/000002.jsonl      the next ones, and so on; the last one at the end

The engine writes a store ``--out`` locally first, exactly as a local one (in a scratch folder:
``$LOADGATE_RESULTS_DIR`` or the system's temporary folder), and a background thread ships it
(:mod:`loadgate.engine.upload`): a killed generator loses at most the last few seconds, and the
final upload (completed, aborted or SIGTERM) has every window before the last ``meta.json``.
Readers (:func:`iter_windows`, :func:`find_shard_dirs`, :func:`read_meta`, the merge) take a
local path or a URL and read either layout, in that order: ``windows.jsonl``, then the segments.

``meta.json`` (written atomically at start, rewritten at the end)::

    format        "loadgate-results/1"
    plan          {name, path, sha256}       stage, run_id, target (no credentials)
    shard         {index, count}             scale, time_scale
    started_at    epoch seconds              ended_at: epoch seconds, or null while running
    status        running | completed | aborted | terminated | error
    exit_code     null while running, then the process's exit code
    aborted       null, or {criterion, observed, at_s, shard, by_marker}
    scenarios     {name: this shard's concrete profile}
    vu_lifetimes  null while running, then {name: [[seconds from a VU's start to its stop
                  request, the grace it then had, VUs], ...]} of each closed-model scenario
    generator     {pid, host, python, loop, limits, and at the end: windows, saturated_windows,
                   saturated, lag_max_ms, cpu_max, rss_max_mb}

``windows.jsonl`` (or the segments): one JSON object a line, one line per one-second window,
flushed as each window closes (so a killed generator loses at most the window in progress; a
reader ignores a truncated last line)::

    t         the window's wall-clock second (epoch, integer): windows of shards align on it
    at        seconds since this shard's stage start at the window's end
    sampled_at  seconds since the stage start when the gauges (vus, ws open) were read
    http      [[scenario, method, name, class, count, failed, hdr], ...] where class is a
              status class ("2xx" … "5xx") or a transport error kind ("connect", "timeout",
              "closed", "protocol"); hdr is the latency histogram (µs, HdrHistogram compressed
              base64) or null; "failed" counts responses outside the request's expected statuses
    errors    {kind: count} for connect, timeout, closed, protocol, and failed 4xx / 5xx
    checks    [[scenario, name, passed, failed], ...]
    ws        {scenario: {connects, connect_failed, closed, closed_unexpected, msgs_in,
              msgs_out, error_replies, send_errors, connect_hist, latency: {name: hdr},
              open, open_max}}
    vus       {scenario: [active at the window's end, max during it]}
    vu_s      {scenario: VU-seconds active during the window (the integral of the VU count)}
    http_cancelled  {scenario: requests sent but stopped in flight (no answer, no error kind)}
    iterations, dropped, interrupted, iteration_errors    {scenario: count}
    gen       {lag_max_ms, lag (hdr), cpu (cores), rss_mb, saturated}
    sys       {system metric: value or null}
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from loadgate.storage import as_path, is_remote, write_atomic

FORMAT = "loadgate-results/1"
META = "meta.json"
WINDOWS = "windows.jsonl"
SEGMENTS = "windows"  # on a store: windows/000001.jsonl, windows/000002.jsonl, …


class ResultsError(ValueError):
    """A directory that is not a readable shard result."""


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


class ResultsWriter:
    """Writes one shard's results; every method is cheap enough for the event loop."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self._windows: BinaryIO = open(out_dir / WINDOWS, "ab")  # noqa: SIM115

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_json_atomic(self.dir / META, meta)

    def append_window(self, record: dict[str, Any]) -> None:
        self._windows.write(orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS) + b"\n")
        self._windows.flush()

    def close(self) -> None:
        if not self._windows.closed:
            self._windows.close()


@dataclass
class ShardResults:
    """One shard's results as read back. ``windows`` is read from disk on first use (a merge
    streams them instead, so that 20 shards of 45 minutes never sit in memory at once)."""

    dir: Path
    meta: dict[str, Any]
    truncated_lines: int = 0
    _windows: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def windows(self) -> list[dict[str, Any]]:
        if self._windows is None:
            skipped = [0]
            self._windows = list(iter_windows(self.dir, skipped))
            self.truncated_lines = skipped[0]
        return self._windows

    @windows.setter
    def windows(self, value: list[dict[str, Any]]) -> None:
        self._windows = value

    @property
    def finished(self) -> bool:
        """False for a shard that never wrote its end (killed, or still running)."""
        return self.meta.get("ended_at") is not None

    @property
    def shard_label(self) -> str:
        shard = self.meta.get("shard") or {}
        return f"{shard.get('index', 0)}/{shard.get('count', 1)}"


def is_shard_dir(path: Path) -> bool:
    return (path / META).is_file()


def find_shard_dirs(paths: list[Any]) -> list[Any]:
    """Each path (local, or a store URL) is a shard directory, or a directory holding shard
    directories (a stage)."""
    out: list[Any] = []
    for path in map(as_path, paths):
        if is_shard_dir(path):
            out.append(path)
            continue
        if not path.is_dir():
            raise ResultsError(f"{path}: no such results directory")
        found = sorted(p for p in path.iterdir() if p.is_dir() and is_shard_dir(p))
        if not found:
            raise ResultsError(f"{path}: no {META} in it or in its subdirectories")
        out.extend(found)
    return out


def read_meta(path: Any) -> dict[str, Any]:
    path = as_path(path)
    try:
        meta = orjson.loads((path / META).read_bytes())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no {META}") from None
    except orjson.JSONDecodeError as exc:
        raise ResultsError(f"{path / META}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ResultsError(f"{path / META}: not a {FORMAT} file")
    return meta


def window_files(path: Any) -> list[Any]:
    """A shard directory's window files in order: ``windows.jsonl``, then the segments."""
    path = as_path(path)
    files = []
    single = path / WINDOWS
    if single.is_file():
        files.append(single)
    folder = path / SEGMENTS
    if folder.is_dir():
        segments = [p for p in folder.iterdir() if p.name.endswith(".jsonl")]
        files += sorted(segments, key=lambda p: p.name)  # zero-padded: by name is in order
    return files


def windows_bytes(path: Any) -> int:
    """The size of a shard directory's windows (to decide whether a merge is worth workers)."""
    path = as_path(path)
    if is_remote(path):
        try:
            return int(path.fs.du((path / SEGMENTS).path))
        except FileNotFoundError:
            return 0
    return sum(f.stat().st_size for f in window_files(path))


def _lines(source: Any) -> Iterator[bytes]:
    if is_remote(source):
        yield from source.read_bytes().splitlines()  # a segment: a few seconds, one GET
        return
    try:
        handle = open(source, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    with handle:
        yield from handle


def iter_windows(path: Any, skipped: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """The window records of a shard directory (local or a store URL), streamed; a truncated
    or corrupt line (a killed writer) is skipped and counted in ``skipped[0]`` when given."""
    loads = orjson.loads
    for source in window_files(path):
        for line in _lines(source):
            if not line.strip():
                continue
            try:
                yield loads(line)
            except orjson.JSONDecodeError:
                if skipped is not None:
                    skipped[0] += 1


def read_shard(path: Any) -> ShardResults:
    """Read a shard directory whole (meta and every window)."""
    path = as_path(path)
    result = ShardResults(dir=path, meta=read_meta(path))
    result.windows  # noqa: B018 - read now
    return result
