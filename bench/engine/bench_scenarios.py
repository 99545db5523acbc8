"""Bench scenarios for ``bench/engine/plan.yaml`` (``exec: bench_scenarios:ws_hold``).

``ws_hold`` is the seed's WebSocket pattern shaped like ``bench/clients/gen_ws.js`` (the Node
``ws`` peer), against the bench target ``bench/clients/target_ws.py``, which needs no auth: open
one connection and hold it until asked to stop; a heartbeat every ``heartbeat_interval``
(timestamped just before it is written; the echoed timestamp gives the round trip, recorded as
``heartbeat``), and for the first ``state_update_connections`` VUs a state update every
``state_update_interval``, offset by half an interval. Written the way
``loadgate.scenarios.syncbridge.websocket`` is (callback mode, interruptible sleeps), so the
engine's cost per connection is what the real scenario pays, minus its login and auth message.

compare.py puts this folder on ``PYTHONPATH`` so the plan's ``exec`` resolves.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from loadgate.engine.vu import VU
from loadgate.plan.durations import parse_duration
from loadgate.scenarios import scenario

_perf = time.perf_counter


@scenario()
async def ws_hold(vu: VU) -> None:
    opts = vu.options
    hb_every = parse_duration(opts.get("heartbeat_interval", 5.0))
    up_every = parse_duration(opts.get("state_update_interval", 5.0))
    updater = vu.id < int(opts.get("state_update_connections", 1000))  # as gen_ws.js
    ws = await vu.ws.connect(str(opts.get("path", "/ws")))
    if ws is None:
        return

    def on_message(msg: Any) -> None:
        if isinstance(msg, dict) and msg.get("type") == "heartbeat_ack":
            stamp = msg.get("timestamp")
            if isinstance(stamp, float):
                ws.latency("heartbeat", max(0.0, _perf() - stamp))

    ws.on_message = on_message
    scale = vu.time_scale
    hb_every *= scale
    up_every *= scale
    now = time.monotonic()
    next_hb = now + hb_every
    next_up = now + up_every / 2 if updater else float("inf")
    counter = 0
    try:
        while not vu.stopping and not ws.closed:
            wait = min(next_hb, next_up) - time.monotonic()
            if wait > 0 and not await vu.sleep(wait / scale, interruptible=True):
                break
            if ws.closed:
                break
            now = time.monotonic()
            if now >= next_hb:
                ws.send_json({"type": "heartbeat", "timestamp": _perf()})
                next_hb = now + hb_every
            if now >= next_up:
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
                next_up = now + up_every
    finally:
        await ws.close()


@scenario()
async def ws_hold_callbacks(vu: VU) -> None:
    """``ws_hold`` in callback mode: the sends run from loop timers, the VU's task only waits
    for the stop (an alternative shape for scenarios that hold many connections)."""
    opts = vu.options
    hb_every = parse_duration(opts.get("heartbeat_interval", 5.0)) * vu.time_scale
    up_every = parse_duration(opts.get("state_update_interval", 5.0)) * vu.time_scale
    updater = vu.id < int(opts.get("state_update_connections", 1000))
    ws = await vu.ws.connect(str(opts.get("path", "/ws")))
    if ws is None:
        return
    loop = asyncio.get_running_loop()
    counter = 0

    def on_message(msg: Any) -> None:
        if isinstance(msg, dict) and msg.get("type") == "heartbeat_ack":
            stamp = msg.get("timestamp")
            if isinstance(stamp, float):
                ws.latency("heartbeat", max(0.0, _perf() - stamp))

    def heartbeat() -> None:
        if not ws.closed:
            ws.send_json({"type": "heartbeat", "timestamp": _perf()})
            timers[0] = loop.call_later(hb_every, heartbeat)

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
            timers[1] = loop.call_later(up_every, update)

    ws.on_message = on_message
    timers = [loop.call_later(hb_every, heartbeat), None]
    if updater:
        timers[1] = loop.call_later(up_every / 2, update)
    try:
        while not vu.stopping and not ws.closed:
            await vu.sleep(3600, interruptible=True)
    finally:
        for t in timers:
            if t is not None:
                t.cancel()
        await ws.close()
