"""picows peer for the WebSocket benchmark (runs in bench/clients/.peers, never a loadgate
dependency): the same workload as gen_ws.py, in picows' callback style, 2 KiB read buffer
(its default 16 KiB costs ~2x the memory, per the prototype notes)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import signal
import sys
import time
from pathlib import Path

import orjson
import uvloop
from picows import WSListener, WSMsgType, WSTransport, ws_connect

# the workload's helpers (message shapes, RTT accounting) are shared with gen_ws.py
_spec = importlib.util.spec_from_file_location("gen_ws", Path(__file__).with_name("gen_ws.py"))
gen_ws = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(gen_ws)  # type: ignore[union-attr]

PERIOD, UPDATERS = gen_ws.PERIOD, gen_ws.UPDATERS


class Client(WSListener):
    def __init__(self, idx: int, st: gen_ws.Stats, loop: asyncio.AbstractEventLoop) -> None:
        self.idx, self.st, self.loop, self.n = idx, st, loop, 0
        self.t: WSTransport | None = None
        self.open = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.t = transport
        self.open = True
        self.loop.call_later(PERIOD, self.heartbeat)
        if self.idx < UPDATERS:
            self.loop.call_later(PERIOD / 2, self.update)

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            gen_ws.on_text(self.st, frame.get_payload_as_utf8_text())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.open = False
        self.st.closed += 1

    def heartbeat(self) -> None:
        if self.open:
            self.t.send(WSMsgType.TEXT, gen_ws.heartbeat_msg())
            self.st.sent += 1
            self.loop.call_later(PERIOD, self.heartbeat)

    def update(self) -> None:
        if self.open:
            self.n += 1
            self.t.send(WSMsgType.TEXT, gen_ws.update_msg(self.idx, self.n))
            self.st.sent += 1
            self.loop.call_later(PERIOD, self.update)


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    st = gen_ws.Stats()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def start(i: int) -> None:
        try:
            await ws_connect(
                lambda: Client(i, st, loop), args.url, read_buffer_init_size=2048,
                websocket_handshake_timeout=30,
            )  # fmt: skip
            st.connected += 1
        except Exception:
            st.failed += 1

    state = {"next": loop.time() + 0.1}

    def tick() -> None:
        now = loop.time()
        if st.holding:
            st.lags.append((now - state["next"]) * 1e3)
        state["next"] = now + 0.1
        loop.call_later(0.1, tick)

    loop.call_later(0.1, tick)
    tasks = set()
    per_tick = max(1, args.rate // 100)
    deadline = time.monotonic() + args.conns / args.rate * 3 + 30
    i = 0
    while i < args.conns and time.monotonic() < deadline:
        for _ in range(min(per_tick, args.conns - i)):
            t = asyncio.ensure_future(start(i))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(0.01)
    while st.connected + st.failed < args.conns and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(f"READY {st.connected} {st.failed}", flush=True)
    st.holding = True
    await asyncio.sleep(args.hold)
    st.holding = False
    rtts, lags = sorted(st.rtts), sorted(st.lags)

    def pct(xs: list[float], p: float) -> float | None:
        return round(xs[min(len(xs) - 1, int(len(xs) * p))], 3) if xs else None

    out = {
        "connected": st.connected, "failed": st.failed, "closed": st.closed, "sent": st.sent,
        "received": st.received, "rtt_samples": len(rtts), "rtt_p50_ms": pct(rtts, 0.5),
        "rtt_p99_ms": pct(rtts, 0.99), "lag_p50_ms": pct(lags, 0.5), "lag_p99_ms": pct(lags, 0.99),
    }  # fmt: skip
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    sys.stdout.flush()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), 60)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=30)
    uvloop.run(main(ap.parse_args()))
