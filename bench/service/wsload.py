"""Open N WebSocket connections to the service, authenticate them, hold them, measure.

    python bench/service/wsload.py --url http://127.0.0.1:8080 --token ACCESS \
        --connections 10000 --hold 10 [--ramp-concurrency 200]

Each connection authenticates as its own device, then the client sends one heartbeat on every
connection and times the acks, holds the connections for --hold seconds (writing "held" to
stdout so a driver can measure the server meanwhile), and closes them. Prints one JSON object.
Bounded: at most 20,000 connections and 120 s of holding.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp
import uvloop


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args: argparse.Namespace) -> dict:
    ws_url = args.url.replace("http://", "ws://").rstrip("/") + "/ws"
    if not ws_url.startswith(("ws://127.0.0.1:", "ws://localhost:", "ws://[::1]:")):
        raise SystemExit("wsload: loopback targets only")
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, connect=30)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    failures: dict[str, int] = {}
    sem = asyncio.Semaphore(args.ramp_concurrency)

    async def open_one(i: int, session: aiohttp.ClientSession) -> None:
        async with sem:
            try:
                ws = await session.ws_connect(ws_url, compress=0, autoping=True, heartbeat=None)
                await ws.send_json({"type": "auth", "token": args.token, "deviceId": f"dev-{i}"})
                reply = await ws.receive_json(timeout=30)
                if reply.get("type") != "auth_ok":
                    raise RuntimeError(f"auth failed: {reply}")
                sockets.append(ws)
            except Exception as exc:
                key = type(exc).__name__
                failures[key] = failures.get(key, 0) + 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(open_one(i, session) for i in range(args.connections)))
        ramp_s = time.perf_counter() - t0

        # one heartbeat per connection, all at once, and the time to each ack
        rtts: list[float] = []

        async def beat(ws: aiohttp.ClientWebSocketResponse) -> None:
            sent = time.perf_counter()
            await ws.send_json({"type": "heartbeat", "timestamp": int(time.time() * 1000)})
            msg = await ws.receive_json(timeout=30)
            if msg.get("type") == "heartbeat_ack":
                rtts.append(time.perf_counter() - sent)

        t1 = time.perf_counter()
        await asyncio.gather(*(beat(ws) for ws in sockets), return_exceptions=True)
        beat_s = time.perf_counter() - t1

        print(json.dumps({"held": len(sockets)}), flush=True)
        await asyncio.sleep(args.hold)
        open_at_end = sum(1 for ws in sockets if not ws.closed)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    return {
        "connections_requested": args.connections,
        "connections_open": len(sockets),
        "open_after_hold": open_at_end,
        "failures": failures,
        "ramp_s": round(ramp_s, 2),
        "heartbeat_round_s": round(beat_s, 3),
        "heartbeat_acks": len(rtts),
        "heartbeat_rtt_ms": {
            "p50": round(_pct(rtts, 0.5) * 1000, 1) if rtts else None,
            "p99": round(_pct(rtts, 0.99) * 1000, 1) if rtts else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--hold", type=float, default=10.0)
    p.add_argument("--ramp-concurrency", type=int, default=200)
    args = p.parse_args(argv)
    if not 0 < args.connections <= 20_000 or not 0 <= args.hold <= 120:
        raise SystemExit("wsload: at most 20,000 connections and 120 s of holding")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
