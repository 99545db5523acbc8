"""A stage's figures while it runs, a few seconds at a time, from its shards' windows.

Each shard appends one window a second to its ``windows.jsonl`` as the second closes
(:mod:`loadgate.engine.results`), so the stage's folder already holds what a person watching
the stage wants to see: active users, requests per second, p95, errors and, for a WebSocket
scenario, open connections, messages and round trips. :class:`StageTail` follows the folder
(local only), reading only what was appended since its last look, and hands back whole
intervals of the stage (:func:`interval`) once every shard has written past them: a second is
reported once, with all its shards, and the intervals of shards that started a moment apart
line up on the windows' wall-clock second ``t``. Percentiles come from the interval's merged
histograms, never from averaged percentiles.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from loadgate.engine.abort import read_marker
from loadgate.engine.histogram import Accumulator
from loadgate.engine.results import META, WINDOWS

Record = dict[str, Any]
RTT = "heartbeat"  # the WebSocket round trip the seed reports, when the scenario sends it


@dataclass(frozen=True)
class Interval:
    """A few seconds of a stage, all shards: ``start_s`` to ``end_s`` (seconds into the stage,
    from its first window)."""

    start_s: int
    end_s: int
    vus: int  # active at the interval's end, all shards
    requests: int
    failed: int
    p95_ms: float | None  # None without a request
    ws_open: int  # connections open at the interval's end
    ws_messages: int  # sent and received
    ws_errors: int  # failed connects, unexpected closes, error replies, failed sends
    rtt_p95_ms: float | None  # the heartbeat's round trip (else any round trip), when measured

    @property
    def seconds(self) -> int:
        return max(1, self.end_s - self.start_s)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    @property
    def ws_rate(self) -> float:
        return self.ws_messages / self.seconds


def _ws_counts(ws: Mapping[str, Any]) -> tuple[int, int]:
    messages = int(ws.get("msgs_in", 0)) + int(ws.get("msgs_out", 0))
    errors = sum(
        int(ws.get(k, 0))
        for k in ("connect_failed", "closed_unexpected", "error_replies", "send_errors")
    )
    return messages, errors


def interval(by_shard: Mapping[str, Sequence[Record]], start_s: int, end_s: int) -> Interval:
    """The figures of some seconds of a stage from its shards' windows of those seconds
    (shard → windows in time order)."""
    requests = failed = messages = ws_errors = vus = ws_open = 0
    http, rtt, other_rtt = Accumulator(), Accumulator(), Accumulator()
    for records in by_shard.values():
        for rec in records:
            for _scenario, _method, _name, _cls, count, bad, hdr in rec.get("http") or ():
                requests += count
                failed += bad
                http.add_encoded(hdr)
            for ws in (rec.get("ws") or {}).values():
                m, e = _ws_counts(ws)
                messages += m
                ws_errors += e
                for name, hdr in (ws.get("latency") or {}).items():
                    (rtt if name == RTT else other_rtt).add_encoded(hdr)
        if records:  # the gauges as this shard last read them
            last = records[-1]
            vus += sum(int(v[0]) for v in (last.get("vus") or {}).values())
            ws_open += sum(int(ws.get("open", 0)) for ws in (last.get("ws") or {}).values())
    round_trips = rtt if rtt.total else other_rtt
    return Interval(
        start_s=start_s,
        end_s=end_s,
        vus=vus,
        requests=requests,
        failed=failed,
        p95_ms=http.percentile_ms(95) if http.total else None,
        ws_open=ws_open,
        ws_messages=messages,
        ws_errors=ws_errors,
        rtt_p95_ms=round_trips.percentile_ms(95) if round_trips.total else None,
    )


def intervals(
    by_shard: Mapping[str, Sequence[Record]], first_t: int, until_t: int, every_s: int
) -> list[Interval]:
    """The stage's intervals of ``every_s`` seconds from ``first_t`` (its first window's second)
    up to ``until_t`` (excluded): a finished stage's whole run, as :class:`StageTail` reports
    it while the stage runs (the last interval may be shorter)."""
    out = []
    for start in range(first_t, until_t, every_s):
        end = min(start + every_s, until_t)
        part = {s: [r for r in recs if start <= int(r["t"]) < end] for s, recs in by_shard.items()}
        out.append(interval(part, start - first_t, end - first_t))
    return out


@dataclass
class _Shard:
    """One shard's windows file, read from where the last look stopped."""

    dir: Path
    offset: int = 0
    partial: bytes = b""
    last_t: int | None = None
    ended: bool = False

    def read(self) -> list[Record]:
        """The windows appended since the last read (a line still being written waits)."""
        meta = self.dir / META
        if meta.is_file() and not self.ended:
            # ended_at is written after the last window: read it before the windows
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                self.ended = orjson.loads(meta.read_bytes()).get("ended_at") is not None
        try:
            with (self.dir / WINDOWS).open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:  # a killed writer's truncated line
                continue
            out.append(rec)
            self.last_t = int(rec["t"])
        return out


@dataclass
class StageTail:
    """Follows one attempt of a stage in its folder (``stages/<stage>`` or its
    ``attempt-<n>``) while its ``shards`` shards write, ``every_s`` seconds an interval."""

    folder: Path
    shards: int
    every_s: int = 5
    first_t: int | None = None
    reported_t: int | None = None  # the first second not yet reported
    done: bool = False
    has_http: bool = False
    has_ws: bool = False
    _shards: dict[str, _Shard] = field(default_factory=dict)
    _pending: dict[str, list[Record]] = field(default_factory=dict)

    def abort(self) -> dict[str, Any] | None:
        """The stage's abort marker (which criterion stopped it, on which shard), if any."""
        try:
            found = read_marker(self.folder)
        except OSError:
            return None
        return found or None

    def _read(self) -> None:
        for shard_dir in sorted(self.folder.glob("shard-*")):
            if shard_dir.is_dir() and shard_dir.name not in self._shards:
                self._shards[shard_dir.name] = _Shard(shard_dir)
        for name, shard in self._shards.items():
            records = shard.read()
            for rec in records:
                self.has_http = self.has_http or bool(rec.get("http"))
                self.has_ws = self.has_ws or bool(rec.get("ws"))
                t = int(rec["t"])
                self.first_t = t if self.first_t is None else min(self.first_t, t)
            self._pending.setdefault(name, []).extend(records)

    def _horizon(self) -> float:
        """The last second every shard has written (inf when all have ended)."""
        if len(self._shards) < self.shards:
            return -math.inf  # a shard that has not started yet may still write any second
        horizon = math.inf
        for shard in self._shards.values():
            if shard.ended:
                continue
            if shard.last_t is None:
                return -math.inf
            horizon = min(horizon, shard.last_t)
        return horizon

    def _take(self, start: int, end: int) -> Interval:
        """The interval of seconds ``start`` to ``end`` (excluded), its windows dropped."""
        part: dict[str, list[Record]] = {}
        for name, recs in self._pending.items():
            part[name] = [r for r in recs if int(r["t"]) < end]
            self._pending[name] = [r for r in recs if int(r["t"]) >= end]
        assert self.first_t is not None
        return interval(part, start - self.first_t, end - self.first_t)

    def poll(self, ended: bool = False) -> list[Interval]:
        """The intervals completed since the last poll. ``ended``: the stage is over (its gate
        decided, or the run went on): what is left is reported, the last interval as long as
        the stage ran, and the tail is done (as it is once every shard has ended)."""
        if self.done:
            return []
        self._read()
        finished = ended or (
            len(self._shards) >= self.shards and all(s.ended for s in self._shards.values())
        )
        if self.first_t is None:
            self.done = finished
            return []
        start = self.first_t if self.reported_t is None else self.reported_t
        out = []
        if finished:
            last_t = max((int(r["t"]) for rs in self._pending.values() for r in rs), default=None)
            while last_t is not None and start <= last_t:
                out.append(self._take(start, min(start + self.every_s, last_t + 1)))
                start += self.every_s
            self.done = True
        else:
            horizon = self._horizon()
            while start + self.every_s - 1 <= horizon:
                out.append(self._take(start, start + self.every_s))
                start += self.every_s
        if out or finished:  # before any: a shard that starts late may still move first_t back
            self.reported_t = start
        return out


def total_vus(load: Iterable[Any], stage: str) -> int:
    """The stage's planned peak of users, all shards (``run.json``'s load: each scenario's
    ``peak_total`` listed once per shard)."""
    return sum(r.peak_total for r in load if r.stage == stage and r.shard.startswith("0/"))
