"""Benchmark target: a small aiohttp + uvloop HTTP server (pin it to its own core).

GET /api/v1/sessions/{id} answers a ~200-byte JSON session. The number of session requests
served so far is kept in an 8-byte counter in the file ``--counter`` (mmap'd; the bench reads
throughput from it, the same way for every client, even while this server is saturated).
Prints ``READY <port>`` when listening.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import mmap

import orjson
import uvloop
from aiohttp import web

COUNT: ctypes.c_uint64 | None = None
BODY = orjson.dumps(
    {
        "id": "0",
        "userId": "user-0001",
        "deviceId": "device-0001",
        "state": {"page": "/home", "scroll": 120, "theme": "dark"},
        "createdAt": "2026-11-27T00:00:00Z",
        "updatedAt": "2026-11-27T00:00:01Z",
        "version": 7,
    }
)


async def session(request: web.Request) -> web.Response:
    COUNT.value += 1  # type: ignore[union-attr]
    return web.Response(body=BODY, content_type="application/json")


async def main(port: int, counter: str) -> None:
    global COUNT
    with open(counter, "wb") as f:
        f.write(b"\0" * 8)
    with open(counter, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 8)
    COUNT = ctypes.c_uint64.from_buffer(mm)
    app = web.Application()
    app.router.add_get("/api/v1/sessions/{id}", session)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=75)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    real = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"READY {real}", flush=True)
    await asyncio.sleep(3600)  # the bench terminates us


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--counter", required=True)
    args = ap.parse_args()
    uvloop.run(main(args.port, args.counter))
