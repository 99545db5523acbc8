"""A stage's windows reduced second by second to what a comparison with a baseline needs.

For each scope (``http all``, each ``"METHOD name"``; ``ws all`` and each WebSocket latency
name) and each wall-clock second: the requests (the error rate's denominator), the failed ones,
and the second's latency histogram folded into cumulative counts over coarse bins of ``STEP``
HDR counts indexes (0.8–1.6% wide), plus the scope's pooled histogram over the stage.
:mod:`loadgate.verdict.compare` bootstraps over these seconds.

A digest is built from the records of one second of all shards at a time
(:meth:`SecondsDigest.add_second`), in time order: the merge folds each second into one while
it sums the windows (:func:`loadgate.engine.merge.merge_dirs` with ``digest=True``), so the
windows are read and their HTTP histograms decoded once for both. Digests of different shards
of one stage add up exactly (:meth:`SecondsDigest.add`): counts are integers. The scopes "all"
are never decoded or folded themselves: a second's fold is the sum of its names' folds
(:func:`sum_folded`), the pooled histogram the sum of theirs (:meth:`SecondsDigest.finish`).
"""

from __future__ import annotations

import ctypes
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyhdrh import add_array

from loadgate.engine.histogram import COUNTS_LEN, Accumulator

STEP = 16  # HDR counts indexes per coarse bin (HDR sub-buckets are 0.05–0.1% wide)
ALL = "all"
HTTP, WS = "http", "ws"
FORMAT = "loadgate-seconds/1"

Record = dict[str, Any]
ScopeKey = tuple[str, str]  # (source, scope): ("http", "all"), ("http", "GET /x"), ("ws", …)
HttpKey = tuple[str, str, str, str]  # a window's HTTP key: scenario, method, name, status class

assert COUNTS_LEN % STEP == 0  # every coarse bin lies wholly inside the counts


def fold(acc: Accumulator) -> tuple[int, array[int]]:
    """(first coarse bin, cumulative counts at the end of each coarse bin from it).

    The counts of the bins' span are copied and accumulated in place in C: hdrhistogram's
    ``add_array`` adds ``src[i]`` to ``dst[i]`` for i = 0, 1, … in turn (a plain C loop over
    pointers that may alias), so with ``dst`` one count after ``src`` each count receives the
    running sum before it. ``tests/loadgate/engine/test_merge_digest.py`` checks the result
    against HdrHistogram's counts accumulated in Python.
    """
    lo, hi = acc._min_index, acc._max_index  # the counts, read in C
    k0, k1 = lo // STEP, hi // STEP
    if k1 < k0:
        return k0, array("q")
    counts = array("q")
    counts.frombytes(memoryview(acc._counts).cast("B")[k0 * STEP * 8 : (k1 + 1) * STEP * 8])
    at = counts.buffer_info()[0]
    add_array(at + 8, at, len(counts) - 1, 8)
    return k0, counts[STEP - 1 :: STEP]


def by_second(records: Iterable[Record]) -> Iterator[tuple[int, list[Record]]]:
    """Records in time order, grouped by their second: (t, that second's records)."""
    current = 0
    batch: list[Record] = []
    for rec in records:
        t = int(rec["t"])
        if batch and t != current:
            yield current, batch
            batch = []
        current = t
        batch.append(rec)
    if batch:
        yield current, batch


@dataclass
class ScopeSeries:
    """One scope of one run, second by second: counts and folded latency histograms."""

    n: list[int] = field(default_factory=list)  # requests (or the rate's denominator)
    failed: list[int] = field(default_factory=list)
    k0: list[int] = field(default_factory=list)
    cum: list[array[int] | None] = field(default_factory=list)
    pooled: Accumulator = field(default_factory=Accumulator)

    def pad(self, length: int) -> None:
        missing = length - len(self.n)
        if missing > 0:
            self.n.extend([0] * missing)
            self.failed.extend([0] * missing)
            self.k0.extend([0] * missing)
            self.cum.extend([None] * missing)

    def latency_total(self, i: int) -> int:
        c = self.cum[i]
        return int(c[-1]) if c else 0

    def cum_at(self, i: int, k: int) -> int:
        """Samples of second ``i`` at or below the end of coarse bin ``k``."""
        c = self.cum[i]
        if not c:
            return 0
        j = k - self.k0[i]
        if j < 0:
            return 0
        return int(c[j]) if j < len(c) else int(c[-1])


def decode_http(
    records: list[Record], spare: list[Accumulator] | None = None
) -> dict[HttpKey, Accumulator]:
    """A second's HTTP histograms per window key, each blob decoded once (into ``spare``
    empty histograms first, when given)."""
    hists: dict[HttpKey, Accumulator] = {}
    for rec in records:
        for scenario, method, name, cls, _count, _failed, hdr in rec.get("http", ()):
            if hdr:
                key = (scenario, method, name, cls)
                acc = hists.get(key)
                if acc is None:
                    acc = hists[key] = spare.pop() if spare else Accumulator()
                acc.add_encoded(hdr)
    return hists


def _clear(acc: Accumulator) -> None:
    """Empty a histogram for reuse: only the counts in use are zeroed."""
    if acc.total:
        lo, hi = acc._min_index, acc._max_index
        ctypes.memset(ctypes.addressof(acc._counts) + lo * 8, 0, (hi - lo + 1) * 8)
    acc._min_index, acc._max_index, acc.total = COUNTS_LEN, -1, 0


class HttpDecoder:
    """:func:`decode_http` into histograms reused from one second to the next (each valid until
    the next call): a fresh histogram is two arrays of 18,432 counts to allocate and zero."""

    def __init__(self) -> None:
        self._spare: list[Accumulator] = []
        self._lent: list[Accumulator] = []

    def __call__(self, records: list[Record]) -> dict[HttpKey, Accumulator]:
        for acc in self._lent:
            _clear(acc)
        self._spare += self._lent
        hists = decode_http(records, self._spare)
        self._lent = list(hists.values())
        return hists


def _sum_in_place(accs: list[Accumulator]) -> Accumulator:
    """The sum of some histograms, added into the one with the most samples (the cost of an
    addition is the span of the added one)."""
    if len(accs) == 1:
        return accs[0]
    into = max(accs, key=lambda acc: acc.total)
    for acc in accs:
        if acc is not into:
            into.add(acc)
    return into


def sum_folded(parts: Sequence[tuple[int, array[int]]]) -> tuple[int, array[int]]:
    """The fold of a sum of histograms from their folds (:func:`fold`): below its first bin a
    part counts nothing, beyond its last all its samples. The additions are done in C."""
    k0 = min(k for k, _ in parts)
    k1 = max(k + len(c) for k, c in parts)
    total = array("q", bytes(8 * (k1 - k0)))
    at = total.buffer_info()[0]
    for k, c in parts:
        tail = k1 - k - len(c)
        padded = c + array("q", c[-1:]) * tail if tail else c
        add_array(at + 8 * (k - k0), padded.buffer_info()[0], len(padded), 8)
    return k0, total


@dataclass
class SecondsDigest:
    """A stage's windows reduced to what a comparison needs, one entry per second."""

    seconds: list[int] = field(default_factory=list)
    scopes: dict[ScopeKey, ScopeSeries] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> SecondsDigest:
        """From window records of any shards, in any order (grouped by their second)."""
        by_t: dict[int, list[Record]] = defaultdict(list)
        for rec in records:
            by_t[int(rec["t"])].append(rec)
        digest = cls()
        for t in sorted(by_t):
            digest.add_second(t, by_t[t])
        digest.finish()
        return digest

    def add(self, other: SecondsDigest) -> None:
        """Add another digest of the same stage (other shards): seconds align by their time."""
        self.finish()
        other.finish()
        seconds = sorted(set(self.seconds) | set(other.seconds))
        mine = {t: i for i, t in enumerate(self.seconds)}
        theirs = {t: i for i, t in enumerate(other.seconds)}
        for key in self.scopes.keys() | other.scopes.keys():
            a, b = self.scopes.get(key), other.scopes.get(key)
            merged = ScopeSeries()
            for t in seconds:
                i, j = mine.get(t), theirs.get(t)
                parts = [(s, x) for s, x in ((a, i), (b, j)) if s is not None and x is not None]
                merged.n.append(sum(s.n[x] for s, x in parts))
                merged.failed.append(sum(s.failed[x] for s, x in parts))
                cums = [(s.k0[x], c) for s, x in parts if (c := s.cum[x])]
                k0, cum = sum_folded(cums) if cums else (0, None)
                merged.k0.append(k0)
                merged.cum.append(cum)
            for s in (a, b):
                if s is not None:
                    merged.pooled.add(s.pooled)
            self.scopes[key] = merged
        self.seconds = seconds

    def _scope(self, key: ScopeKey) -> ScopeSeries:
        series = self.scopes.get(key)
        if series is None:
            series = self.scopes[key] = ScopeSeries()
        return series

    def add_second(
        self, t: int, records: list[Record], hists: dict[HttpKey, Accumulator] | None = None
    ) -> None:
        """Fold second ``t`` (the records of all shards for it), after the seconds already
        added. ``hists``: the second's HTTP histograms per window key (:func:`decode_http`),
        when the caller decoded them already (the merge, for its aggregate); they are consumed
        (those of one request name are summed into one of them)."""
        if hists is None:
            hists = decode_http(records)
        i = len(self.seconds)
        self.seconds.append(t)
        counts: dict[ScopeKey, list[int]] = {}
        parts: dict[ScopeKey, list[Accumulator]] = {}
        for (_scenario, method, name, _cls), hist in hists.items():
            key = (HTTP, f"{method} {name}")
            group = parts.get(key)
            if group is None:
                parts[key] = [hist]
            else:
                group.append(hist)
        for rec in records:
            for _scenario, method, name, _cls, count, failed, _hdr in rec.get("http", ()):
                key = (HTTP, f"{method} {name}")
                slot = counts.get(key)
                if slot is None:
                    slot = counts[key] = [0, 0]
                slot[0] += count
                slot[1] += failed
            for ws in (rec.get("ws") or {}).values():
                self._count_ws(counts, ws)
                for name, hdr in (ws.get("latency") or {}).items():
                    if hdr:
                        group = parts.get((WS, name))
                        if group is None:
                            group = parts[(WS, name)] = [Accumulator()]
                        group[0].add_encoded(hdr)
        http_all = [0, 0]
        for key, slot in counts.items():
            if key[0] == HTTP:
                http_all[0] += slot[0]
                http_all[1] += slot[1]
        folds: dict[ScopeKey, tuple[int, array[int]]] = {}
        for key, group in parts.items():
            acc = _sum_in_place(group)
            if acc.total:
                folds[key] = fold(acc)
                self._scope(key).pooled.add(acc)  # the scope "all": summed in finish()
        for source in (HTTP, WS):
            names = [f for (src, _), f in folds.items() if src == source]
            if names:
                folds[(source, ALL)] = sum_folded(names)
        if http_all[0] or (HTTP, ALL) in folds:
            counts[(HTTP, ALL)] = http_all
        for key in counts.keys() | parts.keys() | folds.keys():
            series = self._scope(key)
            series.pad(i)
            n, failed = counts.get(key, (0, 0))
            k0, cum = folds.get(key, (0, None))
            series.n.append(n)
            series.failed.append(failed)
            series.k0.append(k0)
            series.cum.append(cum)

    @staticmethod
    def _count_ws(counts: dict[ScopeKey, list[int]], ws: dict[str, Any]) -> None:
        """A scenario's WebSocket error rate: errors of connection attempts + messages sent."""
        slot = counts.get((WS, ALL))
        if slot is None:
            slot = counts[(WS, ALL)] = [0, 0]
        slot[0] += ws.get("connects", 0) + ws.get("connect_failed", 0) + ws.get("msgs_out", 0)
        slot[1] += (
            ws.get("connect_failed", 0)
            + ws.get("closed_unexpected", 0)
            + ws.get("error_replies", 0)
            + ws.get("send_errors", 0)
        )

    def finish(self) -> None:
        """Pad every scope to the seconds, and sum each source's pooled histogram ("all") from
        its names' (added seconds leave it to this)."""
        for series in self.scopes.values():
            series.pad(len(self.seconds))
        for source in (HTTP, WS):
            whole = self.scopes.get((source, ALL))
            if whole is not None:
                whole.pooled = Accumulator()
                for (src, scope), series in self.scopes.items():
                    if src == source and scope != ALL:
                        whole.pooled.add(series.pooled)

    # --- serialization (a stored digest spares a baseline's windows being decoded again) ----

    def to_dict(self) -> dict[str, Any]:
        self.finish()
        return {
            "format": FORMAT,
            "step": STEP,
            "seconds": self.seconds,
            "scopes": [
                {
                    "source": source,
                    "scope": scope,
                    "n": s.n,
                    "failed": s.failed,
                    "k0": s.k0,
                    "cum": [None if c is None else c.tolist() for c in s.cum],
                    "pooled": s.pooled.encode() if s.pooled.total else None,
                }
                for (source, scope), s in self.scopes.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SecondsDigest:
        if data.get("format") != FORMAT or data.get("step") != STEP:
            raise ValueError(f"not a {FORMAT} digest of this bin layout")
        digest = cls(seconds=list(data["seconds"]))
        for item in data["scopes"]:
            pooled = Accumulator()
            pooled.add_encoded(item.get("pooled"))
            digest.scopes[(item["source"], item["scope"])] = ScopeSeries(
                n=list(item["n"]),
                failed=list(item["failed"]),
                k0=list(item["k0"]),
                cum=[None if c is None else array("q", c) for c in item["cum"]],
                pooled=pooled,
            )
        return digest
