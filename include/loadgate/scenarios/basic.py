"""Generic scenarios that need no seeded users: for smoke runs, probes and benchmarks.

``get``: one GET of ``options.path`` (default ``/healthz``), named ``options.name`` (default the
path), expecting ``options.expected`` (default 200-399), then think time uniform
``options.think_time`` (default [0, 0]) in real seconds, whatever ``--time-scale`` is. With
``think_time: [0, 3]`` it is the seed pattern the engine's benchmarks use (one request, then
0-3 s): 1 request per iteration and 1.5 s idle, declared as its pacing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from loadgate.engine.durations import parse_duration
from loadgate.engine.vu import VU
from loadgate.scenarios import scenario


def _get_pacing(options: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """One request, then the think time: its mean and its standard deviation (uniform in
    [a, b]: (b - a) / √12), which a stage shorter than a few iterations needs planned."""
    low, high = (parse_duration(v) for v in options.get("think_time", (0, 0)))
    return 1.0, (low + high) / 2.0, 0.0, abs(high - low) / math.sqrt(12)


@scenario(pacing=_get_pacing)
async def get(vu: VU) -> None:
    # the options, read once per VU (a closed loop runs this tens of thousands of times a second)
    spec = vu.data.get("basic.get")
    if spec is None:
        opts = vu.options
        path = str(opts.get("path", "/healthz"))
        low, high = opts.get("think_time", (0, 0))
        spec = vu.data["basic.get"] = (
            path,
            str(opts.get("name", path)),
            opts.get("expected"),
            parse_duration(low),
            parse_duration(high),
        )
    path, name, expected, low, high = spec
    await vu.http.get(path, name=name, expected=expected)
    pause = low if low == high else vu.rng.uniform(low, high)
    if pause > 0:
        await vu.sleep(pause)
