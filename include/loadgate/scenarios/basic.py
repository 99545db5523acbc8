"""Generic scenarios that need no seeded users: for smoke runs, probes and benchmarks.

``get``: one GET of ``options.path`` (default ``/healthz``), named ``options.name`` (default the
path), expecting ``options.expected`` (default 200-399), then think time uniform
``options.think_time`` (default [0, 0]). With ``think_time: [0, 3]`` it is the seed pattern the
engine's benchmarks use (one request, then 0-3 s).
"""

from __future__ import annotations

from loadgate.engine.vu import VU
from loadgate.plan.durations import parse_duration
from loadgate.scenarios import scenario


@scenario()
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
