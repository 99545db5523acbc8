"""HTTP load generator for the client benchmark: our HttpConnection or aiohttp's ClientSession.

Patterns: ``closed`` (each VU requests back to back) and ``seed`` (the seed's API pattern:
a VU sleeps uniform 0–3 s, then loops: one GET, sleep uniform 0–3 s). Runs until SIGTERM or
``--max-seconds``, then prints one JSON line: requests, errors, latency p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time

import orjson
import uvloop

PATH = "/api/v1/sessions/{}"
RESERVOIR = 20_000
_seen = [0]


def sample(lat: list[float], value: float) -> None:
    """Reservoir sampling: a bounded, uniform sample of latencies (same for both clients)."""
    _seen[0] += 1
    if len(lat) < RESERVOIR:
        lat.append(value)
    else:
        j = random.randrange(_seen[0])
        if j < RESERVOIR:
            lat[j] = value


async def vu_ours(i: int, url: str, pattern: str, stop: asyncio.Event, st: dict) -> None:
    from loadgate.engine.http import HttpConnection, HttpError

    conn = HttpConnection(url)
    path = PATH.format(i)
    lat = st["lat"]
    seed = pattern == "seed"
    rnd = random.random
    if seed:
        await asyncio.sleep(rnd() * 3)
    while not stop.is_set():
        try:
            r = await conn.request("GET", path, timeout=30)
            if r.status == 200:
                st["ok"] += 1
                sample(lat, r.duration_s)
            else:
                st["bad_status"] += 1
        except HttpError as exc:
            st["err_" + exc.kind] = st.get("err_" + exc.kind, 0) + 1
            await asyncio.sleep(0.1)
        if seed:
            await asyncio.sleep(rnd() * 3)
    conn.close()


async def vu_aiohttp(i: int, session, url: str, pattern: str, stop: asyncio.Event, st: dict):
    import aiohttp

    full = url + PATH.format(i)
    lat = st["lat"]
    seed = pattern == "seed"
    rnd = random.random
    perf = time.perf_counter
    timeout = aiohttp.ClientTimeout(total=30)
    if seed:
        await asyncio.sleep(rnd() * 3)
    while not stop.is_set():
        try:
            t0 = perf()
            async with session.get(full, timeout=timeout) as resp:
                await resp.read()
                if resp.status == 200:
                    st["ok"] += 1
                    sample(lat, perf() - t0)
                else:
                    st["bad_status"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            key = "err_" + type(exc).__name__
            st[key] = st.get(key, 0) + 1
            await asyncio.sleep(0.1)
        if seed:
            await asyncio.sleep(rnd() * 3)


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.call_later(args.max_seconds, stop.set)
    st: dict = {"ok": 0, "bad_status": 0, "lat": []}
    session = None
    if args.client == "ours":
        tasks = [
            asyncio.ensure_future(vu_ours(i, args.url, args.pattern, stop, st))
            for i in range(args.vus)
        ]
    else:
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))
        tasks = [
            asyncio.ensure_future(vu_aiohttp(i, session, args.url, args.pattern, stop, st))
            for i in range(args.vus)
        ]
    print("STARTED", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if session is not None:
        await session.close()
    lat = sorted(st.pop("lat"))
    if lat:
        st["p50_ms"] = round(lat[len(lat) // 2] * 1e3, 3)
        st["p99_ms"] = round(lat[int(len(lat) * 0.99)] * 1e3, 3)
    sys.stdout.write(orjson.dumps(st).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["ours", "aiohttp"], required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--vus", type=int, default=64)
    ap.add_argument("--pattern", choices=["closed", "seed"], default="closed")
    ap.add_argument("--max-seconds", type=float, default=120)
    uvloop.run(main(ap.parse_args()))
