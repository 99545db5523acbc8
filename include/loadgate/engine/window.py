"""The live one-second window: what the VUs record while the load runs, and its record form.

The hot path (:meth:`Recorder.http`) is a dict lookup, two additions and one histogram record.
At each wall-clock second the runner calls :meth:`Recorder.roll`, which closes the window and
returns it; :func:`window_record` turns a closed window into the JSON record written to
``windows.jsonl`` (see :mod:`loadgate.engine.results` for the format).
"""

from __future__ import annotations

import time
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgate.engine.histogram import encode, new_histogram, record_seconds

_perf = time.perf_counter
TRANSPORT_ERRORS = ("connect", "timeout", "closed", "protocol")
ERROR_KINDS = ("connect", "timeout", "closed", "protocol", "4xx", "5xx")
_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}

HttpKey = tuple[str, str, str, str]  # scenario, method, name, status class or error kind


def status_class(status: int) -> str:
    return _CLASS.get(status // 100, "other")


class HttpStat:
    __slots__ = ("count", "failed", "hist")

    def __init__(self) -> None:
        self.count = 0
        self.failed = 0
        self.hist: HdrHistogram | None = None


class WsStat:
    """One scenario's WebSocket activity in one window."""

    __slots__ = (
        "closed",
        "closed_unexpected",
        "connect_failed",
        "connect_hist",
        "connects",
        "error_replies",
        "latency",
        "msgs_in",
        "msgs_out",
        "send_errors",
    )

    def __init__(self) -> None:
        self.connects = 0
        self.connect_failed = 0
        self.closed = 0
        self.closed_unexpected = 0
        self.msgs_in = 0
        self.msgs_out = 0
        self.error_replies = 0
        self.send_errors = 0
        self.connect_hist: HdrHistogram | None = None
        self.latency: dict[str, HdrHistogram] = {}

    @property
    def errors(self) -> int:
        return self.connect_failed + self.closed_unexpected + self.error_replies + self.send_errors


class Window:
    """Counts of one second; gauges (VUs, open connections) are filled in when it closes."""

    __slots__ = (
        "checks",
        "dropped",
        "http",
        "http_cancelled",
        "interrupted",
        "iteration_errors",
        "iterations",
        "lag_hist",
        "lag_max_s",
        "t",
        "vu_s",
        "vus",
        "ws",
        "ws_open",
    )

    def __init__(self, t: int) -> None:
        self.t = t
        self.http: dict[HttpKey, HttpStat] = {}
        self.checks: dict[tuple[str, str], list[int]] = {}
        self.ws: dict[str, WsStat] = {}
        self.iterations: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.interrupted: dict[str, int] = {}
        self.iteration_errors: dict[str, int] = {}
        self.lag_hist: HdrHistogram | None = None
        self.lag_max_s = 0.0
        self.vus: dict[str, list[int]] = {}  # scenario -> [at close, max in window]
        self.vu_s: dict[str, float] = {}  # scenario -> VU-seconds active during the window
        self.http_cancelled: dict[str, int] = {}  # requests sent, stopped before an answer
        self.ws_open: dict[str, list[int]] = {}

    def release(self) -> None:
        """Free the window's histograms now (the window is unusable after this). An
        HdrHistogram and its encoder reference each other, so each histogram (~150 KB) would
        otherwise wait for a full garbage collection: a second's window holds a few, and at
        10,000 VUs full collections are rare (see ``runner.GC_THRESHOLDS``)."""
        hists: list[HdrHistogram | None] = [s.hist for s in self.http.values()]
        for ws in self.ws.values():
            hists.append(ws.connect_hist)
            hists.extend(ws.latency.values())
        hists.append(self.lag_hist)
        for hist in hists:
            if hist is not None:
                hist.encoder = None  # breaks the cycle; the counts stay with the histogram


def _bump(counter: dict[str, int], key: str, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


class Recorder:
    """Everything VUs and executors record goes through here, into the current window."""

    def __init__(self, t: int) -> None:
        self.window = Window(t)
        self._vus: dict[str, int] = {}
        self._vus_since: dict[str, float] = {}  # when each scenario's VU count last changed
        self._ws_open: dict[str, int] = {}

    # --- HTTP -----------------------------------------------------------------------------

    def http(
        self,
        scenario: str,
        method: str,
        name: str,
        status: int,
        duration_s: float | None,
        failed: bool,
        error: str | None = None,
    ) -> None:
        """One request: ``status`` 0 with ``error`` set (a transport error kind) when there was
        no response; ``duration_s`` is recorded for responses only."""
        key = (scenario, method, name, error if error else status_class(status))
        stat = self.window.http.get(key)
        if stat is None:
            stat = self.window.http[key] = HttpStat()
        stat.count += 1
        if failed:
            stat.failed += 1
        if duration_s is not None and not error:
            hist = stat.hist
            if hist is None:
                hist = stat.hist = new_histogram()
            record_seconds(hist, duration_s)

    def http_cancelled(self, scenario: str) -> None:
        """A request stopped in flight (the VU cancelled before any answer or transport error)."""
        _bump(self.window.http_cancelled, scenario)

    def check(self, scenario: str, name: str, ok: bool) -> None:
        counts = self.window.checks.get((scenario, name))
        if counts is None:
            counts = self.window.checks[(scenario, name)] = [0, 0]
        counts[0 if ok else 1] += 1

    # --- WebSocket --------------------------------------------------------------------------

    def _ws(self, scenario: str) -> WsStat:
        stat = self.window.ws.get(scenario)
        if stat is None:
            stat = self.window.ws[scenario] = WsStat()
        return stat

    def ws_connected(self, scenario: str, connect_s: float) -> None:
        stat = self._ws(scenario)
        stat.connects += 1
        if stat.connect_hist is None:
            stat.connect_hist = new_histogram()
        record_seconds(stat.connect_hist, connect_s)
        self._gauge(self._ws_open, self.window.ws_open, scenario, 1)

    def ws_connect_failed(self, scenario: str) -> None:
        self._ws(scenario).connect_failed += 1

    def ws_closed(self, scenario: str, unexpected: bool) -> None:
        stat = self._ws(scenario)
        stat.closed += 1
        if unexpected:
            stat.closed_unexpected += 1
        self._gauge(self._ws_open, self.window.ws_open, scenario, -1)

    def ws_message_in(self, scenario: str) -> None:
        self._ws(scenario).msgs_in += 1

    def ws_message_out(self, scenario: str) -> None:
        self._ws(scenario).msgs_out += 1

    def ws_error_reply(self, scenario: str) -> None:
        self._ws(scenario).error_replies += 1

    def ws_send_error(self, scenario: str) -> None:
        self._ws(scenario).send_errors += 1

    def ws_latency(self, scenario: str, name: str, seconds: float) -> None:
        stat = self._ws(scenario)
        hist = stat.latency.get(name)
        if hist is None:
            hist = stat.latency[name] = new_histogram()
        record_seconds(hist, seconds)

    # --- VUs and iterations -----------------------------------------------------------------

    def vu_started(self, scenario: str) -> None:
        self._vu_time(scenario, _perf())
        self._gauge(self._vus, self.window.vus, scenario, 1)

    def vu_stopped(self, scenario: str) -> None:
        self._vu_time(scenario, _perf())
        self._gauge(self._vus, self.window.vus, scenario, -1)

    def _vu_time(self, scenario: str, now: float) -> None:
        """Add the VU-seconds since the scenario's VU count last changed to the window (the
        exact integral of active VUs over time, which a planned rate is computed from)."""
        since = self._vus_since.get(scenario)
        self._vus_since[scenario] = now
        if since is not None:
            active = self._vus.get(scenario, 0)
            if active > 0:
                vu_s = self.window.vu_s
                vu_s[scenario] = vu_s.get(scenario, 0.0) + active * (now - since)

    def _gauge(
        self, live: dict[str, int], window: dict[str, list[int]], scenario: str, delta: int
    ) -> None:
        value = live.get(scenario, 0) + delta
        live[scenario] = value
        slot = window.get(scenario)
        if slot is None:
            window[scenario] = [value, value]
        elif value > slot[1]:
            slot[1] = value

    def vus(self, scenario: str) -> int:
        return self._vus.get(scenario, 0)

    def iteration(self, scenario: str) -> None:
        _bump(self.window.iterations, scenario)

    def dropped(self, scenario: str, n: int = 1) -> None:
        _bump(self.window.dropped, scenario, n)

    def interrupted(self, scenario: str) -> None:
        _bump(self.window.interrupted, scenario)

    def iteration_error(self, scenario: str) -> None:
        _bump(self.window.iteration_errors, scenario)

    def loop_lag(self, seconds: float) -> None:
        win = self.window
        if win.lag_hist is None:
            win.lag_hist = new_histogram()
        record_seconds(win.lag_hist, max(seconds, 1e-6))
        if seconds > win.lag_max_s:
            win.lag_max_s = seconds

    # --- windows ----------------------------------------------------------------------------

    def roll(self, next_t: int) -> Window:
        """Close the current window (gauges as they are now) and open the one for ``next_t``."""
        closed = self.window
        now = _perf()
        for scenario in self._vus_since:
            self._vu_time(scenario, now)
        for scenario, value in self._vus.items():
            slot = closed.vus.setdefault(scenario, [value, value])
            slot[0] = value
            slot[1] = max(slot[1], value)
        for scenario, value in self._ws_open.items():
            slot = closed.ws_open.setdefault(scenario, [value, value])
            slot[0] = value
            slot[1] = max(slot[1], value)
        self.window = Window(next_t)
        return closed


def window_record(
    win: Window,
    *,
    at: float,
    gen: dict[str, Any],
    sys: dict[str, float | None],
) -> dict[str, Any]:
    """The JSON record of a closed window (see :mod:`loadgate.engine.results`)."""
    errors: dict[str, int] = {}
    http = []
    for (scenario, method, name, cls), stat in win.http.items():
        http.append(
            [
                scenario,
                method,
                name,
                cls,
                stat.count,
                stat.failed,
                encode(stat.hist) if stat.hist is not None else None,
            ]
        )
        if cls in TRANSPORT_ERRORS:
            _bump(errors, cls, stat.count)
        elif stat.failed and cls in ("4xx", "5xx"):
            _bump(errors, cls, stat.failed)
    ws: dict[str, Any] = {}
    for scenario, st in win.ws.items():
        ws[scenario] = {
            "connects": st.connects,
            "connect_failed": st.connect_failed,
            "closed": st.closed,
            "closed_unexpected": st.closed_unexpected,
            "msgs_in": st.msgs_in,
            "msgs_out": st.msgs_out,
            "error_replies": st.error_replies,
            "send_errors": st.send_errors,
            "connect_hist": encode(st.connect_hist) if st.connect_hist is not None else None,
            "latency": {name: encode(h) for name, h in st.latency.items()},
        }
    for scenario, slot in win.ws_open.items():
        entry = ws.setdefault(scenario, {})
        entry["open"], entry["open_max"] = slot
    gen = dict(gen)
    gen["lag_max_ms"] = round(win.lag_max_s * 1000.0, 3)
    gen["lag"] = encode(win.lag_hist) if win.lag_hist is not None else None
    return {
        "t": win.t,
        "at": round(at, 3),
        "http": http,
        "errors": errors,
        "checks": [[s, n, c[0], c[1]] for (s, n), c in win.checks.items()],
        "ws": ws,
        "vus": win.vus,
        "vu_s": {scenario: round(v, 4) for scenario, v in win.vu_s.items()},
        "http_cancelled": win.http_cancelled,
        "iterations": win.iterations,
        "dropped": win.dropped,
        "interrupted": win.interrupted,
        "iteration_errors": win.iteration_errors,
        "gen": gen,
        "sys": sys,
    }
