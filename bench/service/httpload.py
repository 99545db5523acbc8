"""A lean closed-loop HTTP/1.1 load client for the service benchmark.

Raw asyncio.Protocol + httptools on uvloop, keep-alive, one request in flight per connection,
pre-encoded request bytes: several times cheaper per request than aiohttp's client, so on its
own core it out-runs one core of the service and the server is what gets measured.

    python bench/service/httpload.py --url http://127.0.0.1:8080/healthz \
        --connections 64 --duration 10 [--method POST --body '{...}'] [--header 'K: V']

Prints one JSON object: requests, requests_per_s, statuses, latency percentiles (ms), the
client's own CPU seconds. Bounded: stops at --duration or --max-requests, whichever is first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from urllib.parse import urlsplit

import httptools
import uvloop


class _Stats:
    def __init__(self, deadline: float, max_requests: int):
        self.deadline = deadline
        self.max_requests = max_requests
        self.sent = 0
        self.done = 0
        self.errors = 0
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []


class _Conn(asyncio.Protocol):
    def __init__(self, request: bytes, stats: _Stats, closed: asyncio.Future):
        self.request = request
        self.stats = stats
        self.closed = closed
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.t0 = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        st = self.stats
        if st.sent >= st.max_requests or time.perf_counter() >= st.deadline:
            self.transport.close()
            return
        st.sent += 1
        self.t0 = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.stats.errors += 1
            self.transport.close()

    def on_message_complete(self) -> None:
        st = self.stats
        st.done += 1
        st.latencies.append(time.perf_counter() - self.t0)
        code = self.parser.get_status_code()
        st.statuses[code] = st.statuses.get(code, 0) + 1
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[idx]


async def run(args: argparse.Namespace) -> dict:
    url = urlsplit(args.url)
    host, port = url.hostname, url.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("httpload: loopback targets only")
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    body = args.body.encode() if args.body else b""
    head = [f"{args.method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    head += args.header
    if body:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body

    loop = asyncio.get_running_loop()
    cpu0 = time.process_time()
    start = time.perf_counter()
    stats = _Stats(start + args.duration, args.max_requests)
    waiters = []
    for _ in range(args.connections):
        closed = loop.create_future()
        await loop.create_connection(lambda c=closed: _Conn(request, stats, c), host, port)
        waiters.append(closed)
    try:
        async with asyncio.timeout(args.duration + 30):
            await asyncio.gather(*waiters)
    except TimeoutError:
        pass
    elapsed = time.perf_counter() - start
    lat = sorted(stats.latencies)
    return {
        "url": args.url,
        "method": args.method,
        "connections": args.connections,
        "duration_s": round(elapsed, 3),
        "requests": stats.done,
        "requests_per_s": round(stats.done / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "errors": stats.errors,
        "latency_ms": {
            "p50": round(_percentile(lat, 0.50) * 1000, 3),
            "p95": round(_percentile(lat, 0.95) * 1000, 3),
            "p99": round(_percentile(lat, 0.99) * 1000, 3),
            "max": round(lat[-1] * 1000, 3) if lat else None,
        },
        "client_cpu_s": round(time.process_time() - cpu0, 3),
        "client_pid": os.getpid(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--method", default="GET")
    p.add_argument("--body", default="")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--max-requests", type=int, default=5_000_000)
    args = p.parse_args(argv)
    if not 0 < args.duration <= 120:
        raise SystemExit("httpload: --duration must be in (0, 120] seconds")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
