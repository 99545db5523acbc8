"""The sum of any set of window records: one shard's last N seconds, or all shards' whole stage.

This is the one place where window records become figures. Counts are added; histograms are
added as HDR counts (:class:`~loadgate.engine.histogram.Accumulator`); gauges (active VUs, open
connections) are added across shards per wall-clock second and their maximum taken over time;
system samples, which every shard reads from the same target, take the maximum across shards.
Percentiles are read from the summed histograms only, never averaged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadgate.engine.histogram import Accumulator
from loadgate.engine.window import TRANSPORT_ERRORS

HttpKey = tuple[str, str, str, str]
WS_COUNTS = (
    "connects",
    "connect_failed",
    "closed",
    "closed_unexpected",
    "msgs_in",
    "msgs_out",
    "error_replies",
    "send_errors",
)
# per-scenario counts of a window record, summed under the same name
COUNTED = ("iterations", "dropped", "interrupted", "iteration_errors", "http_cancelled")


class HttpAgg:
    __slots__ = ("acc", "count", "failed")

    def __init__(self) -> None:
        self.count = 0
        self.failed = 0
        self.acc: Accumulator | None = None


class WsAgg:
    __slots__ = ("connect_acc", "counts", "latency")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(WS_COUNTS, 0)
        self.connect_acc = Accumulator()
        self.latency: dict[str, Accumulator] = {}


@dataclass
class HttpFigures:
    requests: int = 0
    failed: int = 0
    by_class: dict[str, int] = field(default_factory=dict)
    failed_by_class: dict[str, int] = field(default_factory=dict)
    latency: Accumulator = field(default_factory=Accumulator)

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    @property
    def transport_errors(self) -> int:
        return sum(self.by_class.get(k, 0) for k in TRANSPORT_ERRORS)

    @property
    def unavailable(self) -> int:
        """Requests the service did not serve: 5xx answers and no answer at all."""
        return self.by_class.get("5xx", 0) + self.transport_errors


@dataclass
class WsFigures:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WS_COUNTS, 0))
    connect: Accumulator = field(default_factory=Accumulator)
    latency: Accumulator = field(default_factory=Accumulator)
    open_max: int = 0

    @property
    def attempts(self) -> int:
        return self.counts["connects"] + self.counts["connect_failed"]

    @property
    def errors(self) -> int:
        c = self.counts
        return c["connect_failed"] + c["closed_unexpected"] + c["error_replies"] + c["send_errors"]

    @property
    def error_base(self) -> int:
        """What an error rate divides by: connection attempts plus messages sent."""
        return self.attempts + self.counts["msgs_out"]

    @property
    def error_rate(self) -> float:
        return self.errors / self.error_base if self.error_base else 0.0


def _name_matches(method: str, name: str, wanted: Sequence[str]) -> bool:
    return not wanted or name in wanted or f"{method} {name}" in wanted


class Aggregate:
    """Figures over a set of window records (add them with :meth:`add_record`)."""

    def __init__(
        self,
        lag_limit_ms: float | None = None,
        cpu_limit: float | None = None,
        *,
        histograms: bool = True,
    ) -> None:
        self.http: dict[HttpKey, HttpAgg] = {}
        self.checks: dict[tuple[str, str], list[int]] = {}
        self.ws: dict[str, WsAgg] = {}
        self.iterations: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.interrupted: dict[str, int] = {}
        self.iteration_errors: dict[str, int] = {}
        self.http_cancelled: dict[str, int] = {}
        self.vu_seconds: dict[str, float] = {}  # VU-seconds (older results have none)
        self.vus_t: dict[int, dict[str, list[int]]] = {}
        self.ws_open_t: dict[int, dict[str, list[int]]] = {}
        self.sys: dict[str, dict[int, float]] = {}
        self.sys_unknown: dict[str, int] = {}
        self.lag = Accumulator()
        self.lag_max_ms = 0.0
        self.cpu_max = 0.0
        self.rss_max_mb = 0.0
        self.windows = 0
        self.saturated_windows = 0
        self.t_min: int | None = None
        self.t_max: int | None = None
        self._lag_limit_ms = lag_limit_ms
        self._cpu_limit = cpu_limit
        self._histograms = histograms  # False: counts only (a cheaper live reading)

    # --- adding -----------------------------------------------------------------------------

    def add_records(self, records: Iterable[dict[str, Any]]) -> Aggregate:
        for rec in records:
            self.add_record(rec)
        return self

    def add_record(self, rec: dict[str, Any]) -> None:
        t = rec["t"]
        if self.t_min is None or t < self.t_min:
            self.t_min = t
        if self.t_max is None or t > self.t_max:
            self.t_max = t
        self.windows += 1
        http = self.http
        for scenario, method, name, cls, count, failed, hdr in rec.get("http", ()):
            key = (scenario, method, name, cls)
            agg = http.get(key)
            if agg is None:
                agg = http[key] = HttpAgg()
            agg.count += count
            agg.failed += failed
            if hdr and self._histograms:
                if agg.acc is None:
                    agg.acc = Accumulator()
                agg.acc.add_encoded(hdr)
        for scenario, name, passed, failed in rec.get("checks", ()):
            slot = self.checks.get((scenario, name))
            if slot is None:
                self.checks[(scenario, name)] = [passed, failed]
            else:
                slot[0] += passed
                slot[1] += failed
        for scenario, ws in rec.get("ws", {}).items():
            agg_ws = self.ws.get(scenario)
            if agg_ws is None:
                agg_ws = self.ws[scenario] = WsAgg()
            counts = agg_ws.counts
            for count in WS_COUNTS:
                counts[count] += ws.get(count, 0)
            if self._histograms:
                agg_ws.connect_acc.add_encoded(ws.get("connect_hist"))
                for name, hdr in (ws.get("latency") or {}).items():
                    acc = agg_ws.latency.get(name)
                    if acc is None:
                        acc = agg_ws.latency[name] = Accumulator()
                    acc.add_encoded(hdr)
            if "open" in ws:
                self._gauge(self.ws_open_t, t, scenario, ws["open"], ws.get("open_max", ws["open"]))
        for scenario, (now, peak) in rec.get("vus", {}).items():
            self._gauge(self.vus_t, t, scenario, now, peak)
        for attr in COUNTED:
            target = getattr(self, attr)
            for scenario, n in rec.get(attr, {}).items():
                target[scenario] = target.get(scenario, 0) + n
        vu_seconds = self.vu_seconds
        for scenario, v in rec.get("vu_s", {}).items():
            vu_seconds[scenario] = vu_seconds.get(scenario, 0.0) + v
        gen = rec.get("gen") or {}
        if self._histograms:
            self.lag.add_encoded(gen.get("lag"))
        lag = gen.get("lag_max_ms") or 0.0
        cpu = gen.get("cpu") or 0.0
        self.lag_max_ms = max(self.lag_max_ms, lag)
        self.cpu_max = max(self.cpu_max, cpu)
        self.rss_max_mb = max(self.rss_max_mb, gen.get("rss_mb") or 0.0)
        saturated = gen.get("saturated")
        if saturated is None and self._lag_limit_ms is not None:
            saturated = lag > self._lag_limit_ms or cpu > (self._cpu_limit or 1e9)
        if saturated:
            self.saturated_windows += 1
        for name, value in (rec.get("sys") or {}).items():
            if value is None:
                self.sys_unknown[name] = self.sys_unknown.get(name, 0) + 1
                continue
            series = self.sys.setdefault(name, {})
            old = series.get(t)
            series[t] = value if old is None else max(old, value)

    def merge(self, other: Aggregate) -> None:
        """Add another aggregate (of other windows or other shards) into this one."""
        for key, o in other.http.items():
            agg = self.http.get(key)
            if agg is None:
                agg = self.http[key] = HttpAgg()
            agg.count += o.count
            agg.failed += o.failed
            if o.acc is not None:
                if agg.acc is None:
                    agg.acc = Accumulator()
                agg.acc.add(o.acc)
        for check, (passed, failed) in other.checks.items():
            slot = self.checks.setdefault(check, [0, 0])
            slot[0] += passed
            slot[1] += failed
        for scenario, o_ws in other.ws.items():
            mine = self.ws.get(scenario)
            if mine is None:
                mine = self.ws[scenario] = WsAgg()
            for count, value in o_ws.counts.items():
                mine.counts[count] += value
            mine.connect_acc.add(o_ws.connect_acc)
            for name, acc in o_ws.latency.items():
                mine.latency.setdefault(name, Accumulator()).add(acc)
        for store, o_store in ((self.vus_t, other.vus_t), (self.ws_open_t, other.ws_open_t)):
            for t, per in o_store.items():
                for scenario, (now, peak) in per.items():
                    self._gauge(store, t, scenario, now, peak)
        for attr in (*COUNTED, "vu_seconds"):
            mine_c, theirs = getattr(self, attr), getattr(other, attr)
            for scenario, n in theirs.items():
                mine_c[scenario] = mine_c.get(scenario, 0) + n
        for name, series in other.sys.items():
            target = self.sys.setdefault(name, {})
            for at, level in series.items():
                old = target.get(at)
                target[at] = level if old is None else max(old, level)
        for name, n in other.sys_unknown.items():
            self.sys_unknown[name] = self.sys_unknown.get(name, 0) + n
        self.lag.add(other.lag)
        self.lag_max_ms = max(self.lag_max_ms, other.lag_max_ms)
        self.cpu_max = max(self.cpu_max, other.cpu_max)
        self.rss_max_mb = max(self.rss_max_mb, other.rss_max_mb)
        self.windows += other.windows
        self.saturated_windows += other.saturated_windows
        for edge in (other.t_min, other.t_max):
            if edge is not None:
                self.t_min = edge if self.t_min is None else min(self.t_min, edge)
                self.t_max = edge if self.t_max is None else max(self.t_max, edge)

    @staticmethod
    def _gauge(
        store: dict[int, dict[str, list[int]]], t: int, scenario: str, now: int, peak: int
    ) -> None:
        per = store.get(t)
        if per is None:
            per = store[t] = {}
        slot = per.get(scenario)
        if slot is None:
            per[scenario] = [now, peak]
        else:
            slot[0] += now
            slot[1] += peak

    # --- reading ----------------------------------------------------------------------------

    @property
    def seconds(self) -> int:
        """Wall-clock seconds covered (first to last window)."""
        if self.t_min is None or self.t_max is None:
            return 0
        return self.t_max - self.t_min + 1

    def select_http(
        self, scenarios: Sequence[str] = (), names: Sequence[str] = ()
    ) -> Iterator[tuple[HttpKey, HttpAgg]]:
        for key, agg in self.http.items():
            if scenarios and key[0] not in scenarios:
                continue
            if names and not _name_matches(key[1], key[2], names):
                continue
            yield key, agg

    def http_figures(self, scenarios: Sequence[str] = (), names: Sequence[str] = ()) -> HttpFigures:
        fig = HttpFigures()
        for (_, _, _, cls), agg in self.select_http(scenarios, names):
            fig.requests += agg.count
            fig.failed += agg.failed
            fig.by_class[cls] = fig.by_class.get(cls, 0) + agg.count
            if agg.failed:
                fig.failed_by_class[cls] = fig.failed_by_class.get(cls, 0) + agg.failed
            if agg.acc is not None:
                fig.latency.add(agg.acc)
        return fig

    def request_names(self) -> list[str]:
        """``"METHOD name"`` of every request seen, in first-seen order."""
        seen: dict[str, None] = {}
        for _, method, name, _ in self.http:
            seen.setdefault(f"{method} {name}", None)
        return list(seen)

    def ws_figures(self, scenarios: Sequence[str] = (), names: Sequence[str] = ()) -> WsFigures:
        fig = WsFigures()
        for scenario, agg in self.ws.items():
            if scenarios and scenario not in scenarios:
                continue
            for key, value in agg.counts.items():
                fig.counts[key] += value
            fig.connect.add(agg.connect_acc)
            for name, acc in agg.latency.items():
                if not names or name in names:
                    fig.latency.add(acc)
        fig.open_max = self._gauge_max(self.ws_open_t, scenarios)
        return fig

    def ws_latency_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for agg in self.ws.values():
            for name in agg.latency:
                seen.setdefault(name, None)
        return list(seen)

    def vus_max(self, scenarios: Sequence[str] = ()) -> int:
        return self._gauge_max(self.vus_t, scenarios)

    @staticmethod
    def _gauge_max(store: dict[int, dict[str, list[int]]], scenarios: Sequence[str]) -> int:
        best = 0
        for per in store.values():
            total = sum(slot[1] for s, slot in per.items() if not scenarios or s in scenarios)
            best = max(best, total)
        return best

    def vus_series(self) -> list[tuple[int, int]]:
        """(second, active VUs at its end, all scenarios and shards) in time order."""
        return [(t, sum(s[0] for s in per.values())) for t, per in sorted(self.vus_t.items())]

    def count(self, store: dict[str, int], scenarios: Sequence[str] = ()) -> int:
        return sum(n for s, n in store.items() if not scenarios or s in scenarios)

    def checks_figures(self, scenarios: Sequence[str] = ()) -> tuple[int, int]:
        passed = failed = 0
        for (scenario, _), (p, f) in self.checks.items():
            if not scenarios or scenario in scenarios:
                passed += p
                failed += f
        return passed, failed

    def system_values(self, name: str) -> list[float]:
        series = self.sys.get(name, {})
        return [series[t] for t in sorted(series)]
