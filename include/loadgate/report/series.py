"""A stage's seconds for the report's charts, read from the shards' windows in its folder.

Each shard writes one window a second (:mod:`loadgate.engine.results`); the windows of a stage's
shards align on their wall-clock second ``t``. For every second of the stage, all shards
together: the active users, the requests and their latency percentiles (from the second's merged
histograms, never averaged percentiles), the errors by kind (the windows' ``errors``: failed
4xx and 5xx answers, timeouts, connection errors), the WebSocket connections open and the round
trip's percentiles, and the target's system metrics as the shards sampled them (the highest
reading of the second). The abort marker of the stage's folder says when an abort fired.

A stage whose folder holds no readable windows (results elsewhere, a record built by hand) is
charted from the per-second series its gate kept (:func:`from_gate_series`), which has fewer
figures.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loadgate.engine.abort import read_marker
from loadgate.engine.histogram import Accumulator
from loadgate.engine.results import ResultsError, find_shard_dirs, iter_windows, read_meta

PERCENTILES = (50, 95, 99)
RTT = "heartbeat"  # the WebSocket round trip the seed reports, when the scenario sends it
# the windows' error kinds, as the charts name them (connection errors: refused, reset, closed)
ERROR_KINDS = {
    "4xx": "4xx",
    "5xx": "5xx",
    "timeout": "timeouts",
    "connect": "connection errors",
    "closed": "connection errors",
    "protocol": "protocol errors",
}
WS_ERROR_KINDS = {
    "connect_failed": "WebSocket connect failures",
    "closed_unexpected": "WebSocket unexpected closes",
    "error_replies": "WebSocket error replies",
    "send_errors": "WebSocket send errors",
}

Record = dict[str, Any]


@dataclass
class StageSeries:
    """A stage, second by second: ``t`` is the end of each second, in seconds from the stage's
    start; every other list has one entry per second."""

    t: list[float] = field(default_factory=list)
    vus: list[int] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    latency_ms: dict[int, list[float | None]] = field(default_factory=dict)  # percentile →
    errors: dict[str, list[int]] = field(default_factory=dict)  # kind → errors that second
    ws_open: list[int] = field(default_factory=list)
    ws_sent: list[int] = field(default_factory=list)  # connect attempts + messages sent
    rtt_ms: dict[int, list[float | None]] = field(default_factory=dict)  # percentile →
    system: dict[str, list[float | None]] = field(default_factory=dict)  # metric →
    abort_s: float | None = None
    abort_criterion: str | None = None
    has_http: bool = False
    has_ws: bool = False
    from_windows: bool = True  # False: from the gate's series (fewer figures)
    attempt: int = 1  # the stage's attempt these seconds are of (a re-run's: 2)


def _percentiles(acc: Accumulator) -> dict[int, float | None]:
    if not acc.total:
        return dict.fromkeys(PERCENTILES)
    return {p: round(acc.percentile_ms(p), 3) for p in PERCENTILES}


def _add_second(
    out: StageSeries,
    records: list[Record],
    gauges: Mapping[str, Record],
    errors_by_second: list[dict[str, int]],
    system_by_second: list[dict[str, float]],
) -> None:
    """One second of all shards; ``gauges``: each shard's latest window so far (a shard that
    wrote nothing this second still has its users and connections)."""
    http, rtt, other_rtt = Accumulator(), Accumulator(), Accumulator()
    requests = ws_sent = 0
    errors: dict[str, int] = defaultdict(int)
    system: dict[str, float] = {}
    for rec in records:
        for _scenario, _method, _name, _cls, count, _failed, hdr in rec.get("http") or ():
            requests += int(count)
            if hdr:
                http.add_encoded(hdr)
        for kind, count in (rec.get("errors") or {}).items():
            errors[ERROR_KINDS.get(kind, kind)] += int(count)
        for ws in (rec.get("ws") or {}).values():
            ws_sent += sum(int(ws.get(k, 0)) for k in ("connects", "connect_failed", "msgs_out"))
            for key, kind in WS_ERROR_KINDS.items():
                errors[kind] += int(ws.get(key, 0))
            for name, hdr in (ws.get("latency") or {}).items():
                if hdr:
                    (rtt if name == RTT else other_rtt).add_encoded(hdr)
        for name, value in (rec.get("sys") or {}).items():
            if isinstance(value, int | float):
                system[name] = max(float(value), system.get(name, float(value)))
    out.has_http = out.has_http or bool(requests)
    out.has_ws = out.has_ws or any(rec.get("ws") for rec in records)
    out.requests.append(requests)
    out.ws_sent.append(ws_sent)
    out.vus.append(
        sum(int(v[0]) for rec in gauges.values() for v in (rec.get("vus") or {}).values())
    )
    out.ws_open.append(
        sum(
            int(ws.get("open", 0))
            for rec in gauges.values()
            for ws in (rec.get("ws") or {}).values()
        )
    )
    for p, value in _percentiles(http).items():
        out.latency_ms.setdefault(p, []).append(value)
    for p, value in _percentiles(rtt if rtt.total else other_rtt).items():
        out.rtt_ms.setdefault(p, []).append(value)
    errors_by_second.append(errors)
    system_by_second.append(system)


def read_stage(folder: Any, aborted: Mapping[str, Any] | None = None) -> StageSeries | None:
    """The stage's seconds from the shards' windows under ``folder`` (a local path or a store
    URL: ``stages/<stage>`` or its ``attempt-<n>``); None when it holds no readable window.
    ``aborted``: the gate's abort record, for when the folder has no marker."""
    try:
        shard_dirs = find_shard_dirs([folder])
        metas = [read_meta(d) for d in shard_dirs]
    except (ResultsError, OSError):
        return None
    by_t: dict[int, dict[str, Record]] = defaultdict(dict)
    for shard_dir in shard_dirs:
        for rec in iter_windows(shard_dir):
            by_t[int(rec["t"])][str(shard_dir)] = rec
    if not by_t:
        return None
    starts = [float(m["started_at"]) for m in metas if m.get("started_at") is not None]
    start = min(starts) if starts else float(min(by_t))
    out = StageSeries()
    gauges: dict[str, Record] = {}
    errors: list[dict[str, int]] = []
    system: list[dict[str, float]] = []
    for t in sorted(by_t):
        shards = by_t[t]
        gauges.update(shards)
        out.t.append(round(t + 1 - start, 3))
        _add_second(out, list(shards.values()), gauges, errors, system)
    for kind in sorted({k for second in errors for k in second}):
        out.errors[kind] = [second.get(kind, 0) for second in errors]
    for name in sorted({k for second in system for k in second}):
        out.system[name] = [second.get(name) for second in system]
    _abort(out, folder, start, aborted)
    return out


def _abort(out: StageSeries, folder: Any, start: float, aborted: Mapping[str, Any] | None) -> None:
    """When the stage's abort fired: its marker's time, else the gate's record of it."""
    try:
        marker = read_marker(folder) or {}
    except OSError:
        marker = {}
    if isinstance(marker.get("at"), int | float):
        out.abort_s = round(float(marker["at"]) - start, 3)
        out.abort_criterion = marker.get("criterion")
    elif aborted and isinstance(aborted.get("at_s"), int | float):
        out.abort_s = float(aborted["at_s"])
        out.abort_criterion = aborted.get("criterion")


def from_gate_series(
    series: Mapping[str, Any], aborted: Mapping[str, Any] | None = None
) -> StageSeries | None:
    """What the gate kept per second (``t``, ``rps``, ``p95_ms``, ``errors``, ``vus``): the
    requests, users, p95 and errors (all kinds together) of each second."""
    t = list(series.get("t") or [])
    if not t:
        return None

    def column(key: str, default: Any) -> list[Any]:
        values = list(series.get(key) or [])
        return values + [default] * (len(t) - len(values))

    out = StageSeries(
        t=[float(x) for x in t],
        vus=column("vus", 0),
        requests=column("rps", 0),
        latency_ms={95: column("p95_ms", None)},
        errors={"errors (all kinds)": column("errors", 0)},
        ws_open=[0] * len(t),
        ws_sent=[0] * len(t),
        from_windows=False,
    )
    out.has_http = any(out.requests)
    if aborted and isinstance(aborted.get("at_s"), int | float):
        out.abort_s = float(aborted["at_s"])
        out.abort_criterion = aborted.get("criterion")
    return out


def stage_folder(root: Any, stage: str, attempt: int = 1) -> Any:
    """The folder of a stage's ``attempt`` under the run root (as
    :func:`loadgate.run.folder.stage_folder` names it)."""
    base = root / "stages" / stage
    return base if attempt <= 1 else base / f"attempt-{attempt}"
