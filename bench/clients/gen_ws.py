"""WebSocket load generator for the client benchmark: our WebSocket or aiohttp's client.

N connections opened at R per second; each sends a heartbeat every 5 s (its own phase,
timestamped when sent; the server echoes the timestamp back), and the first 1,000 send a small
state update every 5 s. Prints ``READY`` when the ramp is done, then after ``--hold`` seconds one
JSON line (connections, failures, messages, heartbeat RTT p50/p99 and event-loop lag p99 during
the hold), then waits to be terminated (bounded).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Callable

import orjson
import uvloop

perf = time.perf_counter
PERIOD = 5.0
UPDATERS = 1000


class Stats:
    def __init__(self) -> None:
        self.connected = 0
        self.failed = 0
        self.closed = 0
        self.sent = 0
        self.received = 0
        self.holding = False
        self.rtts: list[float] = []
        self.lags: list[float] = []


def heartbeat_msg() -> bytes:
    return orjson.dumps({"type": "heartbeat", "timestamp": perf() * 1e3})


def update_msg(idx: int, n: int) -> bytes:
    return orjson.dumps(
        {
            "type": "state_update",
            "sessionId": f"session-{idx}",
            "delta": {"operations": [{"op": "add", "path": "/data/counter", "value": n}]},
            "timestamp": perf() * 1e3,
        }
    )


def on_text(st: Stats, msg: str | bytes) -> None:
    st.received += 1
    if msg[:24] == '{"type":"heartbeat_ack",':
        rtt = perf() * 1e3 - orjson.loads(msg)["timestamp"]
        if st.holding:
            st.rtts.append(rtt)


# --- the run's phases, shared with gen_ws_picows.py ----------------------------------------


def stop_event(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """Set on SIGTERM: the bench's request to exit."""
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    return stop


def start_lag_ticker(loop: asyncio.AbstractEventLoop, st: Stats) -> None:
    """Event-loop lag: a 100 ms ticker, its lateness recorded during the hold."""
    state = {"next": loop.time() + 0.1}

    def tick() -> None:
        now = loop.time()
        if st.holding:
            st.lags.append((now - state["next"]) * 1e3)
        state["next"] = now + 0.1
        loop.call_later(0.1, tick)

    loop.call_later(0.1, tick)


async def ramp(st: Stats, conns: int, rate: int, spawn: Callable[[int], None]) -> None:
    """Call ``spawn(i)`` for ``conns`` connections at ``rate`` a second (in 10 ms ticks), wait
    until each has connected or failed (bounded), then print ``READY connected failed``."""
    per_tick = max(1, rate // 100)
    deadline = time.monotonic() + conns / rate * 3 + 30  # bound on the ramp
    i = 0
    while i < conns and time.monotonic() < deadline:
        for _ in range(min(per_tick, conns - i)):
            spawn(i)
            i += 1
        await asyncio.sleep(0.01)
    while st.connected + st.failed < conns and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(f"READY {st.connected} {st.failed}", flush=True)


def pct(xs: list[float], p: float) -> float | None:
    return round(xs[min(len(xs) - 1, int(len(xs) * p))], 3) if xs else None


def summary(st: Stats) -> dict:
    """The result line's common fields: counts, heartbeat RTT and loop lag in the hold."""
    rtts, lags = sorted(st.rtts), sorted(st.lags)
    return {
        "connected": st.connected,
        "failed": st.failed,
        "closed": st.closed,
        "sent": st.sent,
        "received": st.received,
        "rtt_samples": len(rtts),
        "rtt_p50_ms": pct(rtts, 0.5),
        "rtt_p99_ms": pct(rtts, 0.99),
        "lag_p50_ms": pct(lags, 0.5),
        "lag_p99_ms": pct(lags, 0.99),
    }


async def report_and_wait(out: dict, stop: asyncio.Event) -> None:
    """Print the result as one JSON line, then wait (at most 60 s) to be terminated."""
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    sys.stdout.flush()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), 60)


def arg_parser() -> argparse.ArgumentParser:
    """The workload's options (``--client`` is added by gen_ws.py alone)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=30)
    return ap


# --- ours: callback mode, no task per connection -------------------------------------------


class OurClient:
    __slots__ = ("idx", "loop", "n", "st", "ws")

    def __init__(self, idx: int, st: Stats, loop: asyncio.AbstractEventLoop) -> None:
        self.idx = idx
        self.st = st
        self.loop = loop
        self.ws = None
        self.n = 0

    async def start(self, url: str) -> None:
        from loadgate.engine.ws import WebSocket, WsError

        try:
            self.ws = await WebSocket.connect(
                url, on_message=self.on_message, on_close=self.on_close, timeout=30
            )
        except WsError:
            self.st.failed += 1
            return
        self.st.connected += 1
        self.loop.call_later(PERIOD, self.heartbeat)
        if self.idx < UPDATERS:
            self.loop.call_later(PERIOD / 2, self.update)

    def on_message(self, msg: str | bytes) -> None:
        on_text(self.st, msg)

    def on_close(self, code: int | None) -> None:
        self.st.closed += 1

    def heartbeat(self) -> None:
        ws = self.ws
        if ws.closed:
            return
        ws.send_text(heartbeat_msg())
        self.st.sent += 1
        self.loop.call_later(PERIOD, self.heartbeat)

    def update(self) -> None:
        ws = self.ws
        if ws.closed:
            return
        self.n += 1
        ws.send_text(update_msg(self.idx, self.n))
        self.st.sent += 1
        self.loop.call_later(PERIOD, self.update)


# --- aiohttp: its natural shape, one task per connection ----------------------------------


async def aiohttp_client(idx: int, session, url: str, st: Stats) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    try:
        ws = await session.ws_connect(url, autoping=True, heartbeat=None, timeout=30)
    except (aiohttp.ClientError, TimeoutError):
        st.failed += 1
        return
    st.connected += 1
    next_hb = loop.time() + PERIOD
    next_up = loop.time() + PERIOD / 2 if idx < UPDATERS else float("inf")
    n = 0
    try:
        while True:
            wait = min(next_hb, next_up) - loop.time()
            if wait > 0:
                try:
                    msg = await ws.receive(timeout=wait)
                except TimeoutError:
                    msg = None
                if msg is not None:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        on_text(st, msg.data)
                    elif msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        st.closed += 1
                        return
                    continue
            now = loop.time()
            if now >= next_hb:
                await ws.send_str(heartbeat_msg().decode())
                st.sent += 1
                next_hb += PERIOD
            if now >= next_up:
                n += 1
                await ws.send_str(update_msg(idx, n).decode())
                st.sent += 1
                next_up += PERIOD
    except (aiohttp.ClientError, ConnectionError):
        st.closed += 1


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    st = Stats()
    stop = stop_event(loop)
    session = None
    if args.client == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    start_lag_ticker(loop, st)

    pending: set[asyncio.Task] = set()
    clients = []

    def spawn(i: int) -> None:
        if args.client == "ours":
            c = OurClient(i, st, loop)
            clients.append(c)
            t = asyncio.ensure_future(c.start(args.url))
            pending.add(t)
            t.add_done_callback(pending.discard)
        else:
            clients.append(asyncio.ensure_future(aiohttp_client(i, session, args.url, st)))

    await ramp(st, args.conns, args.rate, spawn)
    gc_pauses: list[float] = []
    gc_t0 = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_t0[0] = perf()
        elif st.holding:
            gc_pauses.append((perf() - gc_t0[0]) * 1e3)

    gc.callbacks.append(on_gc)
    if os.environ.get("LG_GC_FREEZE"):
        gc.freeze()  # what an engine may do after its ramp: long-lived objects out of GC's way
    st.holding = True
    await asyncio.sleep(args.hold)
    st.holding = False
    out = summary(st)
    out["gc_runs"] = len(gc_pauses)
    out["gc_max_ms"] = round(max(gc_pauses), 3) if gc_pauses else None
    await report_and_wait(out, stop)


if __name__ == "__main__":
    ap = arg_parser()
    ap.add_argument("--client", choices=["ours", "aiohttp"], required=True)
    uvloop.run(main(ap.parse_args()))
