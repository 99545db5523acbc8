"""The metrics-source interface: how the engine and the gates read system metrics.

A source answers ``sample(names, window_s)`` with a value per name: a gauge's current value, or
a rate / increase / changes over the last ``window_s`` seconds, as the plan's
``system_metrics`` define them. ``None`` means unknown (the target or Prometheus unreachable,
the series absent, not enough history). ``sample`` must be quick and must never raise because
the target is down: an unreachable target is evidence that a criterion may act on (the built-in
name ``up`` reads 0 then), not an error.

The engine calls ``sample`` once a second from a thread of its own, so a slow source delays
only the samples, never the load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class MetricsSource(Protocol):
    def sample(self, names: Sequence[str], window_s: float) -> dict[str, float | None]: ...


class NullSource:
    """No system metrics: every name is unknown (criteria on them read 'unknown')."""

    def sample(self, names: Sequence[str], window_s: float) -> dict[str, float | None]:
        return dict.fromkeys(names)


class StaticSource:
    """Fixed values, or a function of the time since creation, for tests.

    ``values`` maps a name to a number, ``None``, or a callable ``f(elapsed_s) -> value``.
    ``calls`` records every (names, window_s) asked.
    """

    def __init__(
        self,
        values: Mapping[str, float | Callable[[float], float | None] | None],
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.values = dict(values)
        self._clock = clock or time.monotonic
        self._t0 = self._clock()
        self.calls: list[tuple[tuple[str, ...], float]] = []

    def sample(self, names: Sequence[str], window_s: float) -> dict[str, float | None]:
        self.calls.append((tuple(names), window_s))
        elapsed = self._clock() - self._t0
        out: dict[str, float | None] = {}
        for name in names:
            value = self.values.get(name)
            out[name] = value(elapsed) if callable(value) else value
        return out
