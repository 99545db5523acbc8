"""Benchmark target: an aiohttp + uvloop WebSocket server (its own process and core).

``heartbeat`` messages are answered with ``heartbeat_ack`` carrying the client's timestamp;
``state_update`` messages with a small ``state_ack``; anything else is ignored. Prints
``READY <port>`` when listening; ``/__stats`` returns connection and message counts.

With 10,000 connections this process holds about a million objects, and a full garbage
collection over them pauses it for 100+ ms, which would show up as the clients' heartbeat p99.
``gc.freeze()`` every second moves the long-lived objects out of the collector's way, so the
round trips measure the clients and the network path rather than the target's collector.
"""

from __future__ import annotations

import argparse
import asyncio
import gc

import orjson
import uvloop
from aiohttp import WSMsgType, web

STATS = {"open": 0, "peak": 0, "messages": 0}
STATE_ACK = orjson.dumps({"type": "state_ack"}).decode()


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    STATS["open"] += 1
    STATS["peak"] = max(STATS["peak"], STATS["open"])
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            STATS["messages"] += 1
            data = orjson.loads(msg.data)
            kind = data.get("type")
            if kind == "heartbeat":
                await ws.send_str(
                    orjson.dumps({"type": "heartbeat_ack", "timestamp": data["timestamp"]}).decode()
                )
            elif kind == "state_update":
                await ws.send_str(STATE_ACK)
    finally:
        STATS["open"] -= 1
    return ws


async def stats(request: web.Request) -> web.Response:
    return web.json_response(STATS)


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/__stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    real = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"READY {real}", flush=True)
    for _ in range(3600):
        await asyncio.sleep(1)
        gc.freeze()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    uvloop.run(main(ap.parse_args().port))
