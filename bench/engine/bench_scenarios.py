"""Bench scenarios for ``bench/engine/plan.yaml`` (``exec: bench_scenarios:ws_hold``).

``ws_hold`` is the seed's WebSocket pattern shaped like ``bench/clients/gen_ws.js`` (the Node
``ws`` peer), against the bench target ``bench/clients/target_ws.py``, which needs no auth: open
one connection and hold it until asked to stop; a heartbeat every ``heartbeat_interval``
(timestamped just before it is written; the echoed timestamp gives the round trip, recorded as
``heartbeat``), and for the first ``state_update_connections`` VUs a state update every
``state_update_interval``, offset by half an interval. Written the way
``loadgate_syncbridge.scenarios.websocket`` is (callback mode: ``on_message``, the sends from
``vu.every``, the VU waiting in ``vu.hold()``), so the engine's cost per connection is what the
real scenario pays, minus its login and auth message.

compare.py puts this folder on ``PYTHONPATH`` and allows the package
(``LOADGATE_SCENARIO_PACKAGES``) so the plan's ``exec`` resolves.
"""

from __future__ import annotations

import time
from typing import Any

from loadgate.engine.durations import parse_duration
from loadgate.engine.vu import VU
from loadgate.scenarios import scenario

_perf = time.perf_counter


@scenario()
async def ws_hold(vu: VU) -> None:
    opts = vu.options
    updater = vu.id < int(opts.get("state_update_connections", 1000))  # as gen_ws.js
    ws = await vu.ws.connect(str(opts.get("path", "/ws")))
    if ws is None:
        return
    counter = 0

    def on_message(msg: Any) -> None:
        if isinstance(msg, dict) and msg.get("type") == "heartbeat_ack":
            stamp = msg.get("timestamp")
            if isinstance(stamp, float):
                ws.latency("heartbeat", max(0.0, _perf() - stamp))

    def heartbeat() -> None:
        if not ws.closed:
            ws.send_json({"type": "heartbeat", "timestamp": _perf()})

    def update() -> None:
        nonlocal counter
        if not ws.closed:
            counter += 1
            ws.send_json(
                {
                    "type": "state_update",
                    "sessionId": f"session-{vu.id}",
                    "delta": {
                        "operations": [{"op": "add", "path": "/data/counter", "value": counter}]
                    },
                    "timestamp": _perf(),
                }
            )

    ws.on_message = on_message
    vu.every(parse_duration(opts.get("heartbeat_interval", 5.0)), heartbeat)
    if updater:
        every = parse_duration(opts.get("state_update_interval", 5.0))
        vu.every(every, update, first=every / 2)
    try:
        await vu.hold()
    finally:
        await ws.close()
