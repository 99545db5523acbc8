"""System metrics read straight from the target's own ``/metrics`` (the embedded default).

:meth:`ScrapeSource.sample` scrapes the exposition (at most once every ``min_interval_s``, as a
Prometheus server scrapes once an interval however many queries read it) and keeps a short
history, so rates, increases and changes over a window are computed here the way PromQL's
``rate``, ``increase`` and ``changes`` would compute them from a Prometheus server.

A target that does not answer is evidence, not an error: every metric reads ``None`` and the
built-in ``up`` reads 0. A restarted target shows as a change of ``process_start_time_seconds``
(``changes`` over the window), so a crash that was restarted is still seen as a crash.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from loadgate.plan.model import ScrapeSpec

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
Snapshot = dict[SeriesKey, float]

#: The name under which a source reports whether its last read of the target succeeded.
UP = "up"


def parse_exposition(text: str) -> Snapshot:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    out: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def _matching(snapshot: Snapshot, spec: ScrapeSpec) -> dict[SeriesKey, float]:
    wanted = spec.labels.items()
    return {
        key: value
        for key, value in snapshot.items()
        if key[0] == spec.metric and all(item in key[1] for item in wanted)
    }


class ScrapeSource:
    """A metrics source that scrapes ``url`` (the target's ``/metrics``) when sampled.

    ``specs`` maps metric names (as the plan's criteria use them) to the plan's scrape specs
    (or their dict form). ``fetch`` is injectable for callers that already hold the text.

    A sample within ``min_interval_s`` of the last scrape reads that scrape again. The stage's
    sampler asks once a second for each criterion window it has, back to back: scraped each
    time, two snapshots milliseconds apart made a rate of a counter that moves in 10 ms ticks
    (``process_cpu_seconds_total``): one tick over 20 ms read as half a core, and a stage's
    first CPU sample of a healthy target read 86% or 110% of its limit, enough for its p95.
    """

    def __init__(
        self,
        url: str,
        specs: Mapping[str, ScrapeSpec | Mapping[str, Any]],
        *,
        timeout: float = 2.0,
        history_s: float = 900.0,
        min_interval_s: float = 0.5,
        fetch: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.specs = {
            name: spec if isinstance(spec, ScrapeSpec) else ScrapeSpec.model_validate(spec)
            for name, spec in specs.items()
        }
        self.timeout = timeout
        self.history_s = history_s
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._fetch = fetch or self._http_fetch
        self._session = requests.Session() if fetch is None else None
        self._history: deque[tuple[float, Snapshot | None]] = deque()

    def _http_fetch(self) -> str:
        assert self._session is not None
        response = self._session.get(self.url, timeout=self.timeout, allow_redirects=False)
        if 300 <= response.status_code < 400:  # never followed: no scrape, the target is "down"
            raise ValueError(f"{self.url} answered HTTP {response.status_code}, not followed")
        response.raise_for_status()
        return response.text

    def scrape(self) -> Snapshot | None:
        """Read the target once and remember what it said (``None`` when it did not answer).

        A snapshot is stamped when the answer arrived, not when it was asked for: the target
        reads its counters as it answers, which on a busy target can be long after the request
        (stamped at the request, a window of a second read more CPU than was used)."""
        try:
            snapshot: Snapshot | None = parse_exposition(self._fetch())
        except (requests.RequestException, ValueError, OSError):
            snapshot = None
        now = self._clock()
        self._history.append((now, snapshot))
        while self._history and now - self._history[0][0] > self.history_s:
            self._history.popleft()
        return snapshot

    def sample(self, names: Sequence[str], window_s: float) -> dict[str, float | None]:
        if self._history and self._clock() - self._history[-1][0] < self.min_interval_s:
            latest = self._history[-1][1]  # scraped a moment ago (another window's sample)
        else:
            latest = self.scrape()
        out: dict[str, float | None] = {}
        for name in names:
            if name == UP:
                out[name] = 0.0 if latest is None else 1.0
            elif name not in self.specs or latest is None:
                out[name] = None
            else:
                out[name] = self._evaluate(self.specs[name], latest, window_s)
        return out

    def _evaluate(self, spec: ScrapeSpec, latest: Snapshot, window_s: float) -> float | None:
        if spec.fn == "gauge":
            series = _matching(latest, spec)
            value: float | None = sum(series.values()) if series else None
        else:
            value = self._over_window(spec, window_s)
        if value is None or spec.divide_by is None:
            return value
        divisor = sum(_matching(latest, ScrapeSpec(metric=spec.divide_by)).values())
        return value / divisor if divisor else None

    def _over_window(self, spec: ScrapeSpec, window_s: float) -> float | None:
        """rate, increase or changes per series over the window, summed; resets as in PromQL."""
        now = self._history[-1][0]
        points = [
            (t, _matching(snap, spec))
            for t, snap in self._history
            if snap is not None and now - t <= window_s + 1e-9
        ]
        if len(points) < 2:
            return None
        elapsed = points[-1][0] - points[0][0]
        total = 0.0
        for key in set().union(*(series.keys() for _, series in points)):
            if spec.fn == "changes":
                values = [series[key] for _, series in points if key in series]
                total += sum(1 for a, b in itertools.pairwise(values) if a != b)
                continue
            values = [series.get(key, 0.0) for _, series in points]
            increase = 0.0
            for a, b in itertools.pairwise(values):
                increase += b - a if b >= a else b  # a drop is a counter reset
            total += increase
        if spec.fn == "rate":
            return total / elapsed if elapsed > 0 else None
        return total
