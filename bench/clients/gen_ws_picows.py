"""picows peer for the WebSocket benchmark (runs in bench/clients/.peers, never a loadgate
dependency): the same workload as gen_ws.py, in picows' callback style, 2 KiB read buffer
(its default 16 KiB costs ~2x the memory, per the prototype notes)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
from pathlib import Path

import uvloop
from picows import WSListener, WSMsgType, WSTransport, ws_connect

# the workload's helpers (message shapes, RTT accounting, ramp, lag ticker, result line) are
# shared with gen_ws.py
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
    stop = gen_ws.stop_event(loop)

    async def start(i: int) -> None:
        try:
            await ws_connect(
                lambda: Client(i, st, loop), args.url, read_buffer_init_size=2048,
                websocket_handshake_timeout=30,
            )  # fmt: skip
            st.connected += 1
        except Exception:
            st.failed += 1

    gen_ws.start_lag_ticker(loop, st)
    tasks = set()

    def spawn(i: int) -> None:
        t = asyncio.ensure_future(start(i))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    await gen_ws.ramp(st, args.conns, args.rate, spawn)
    st.holding = True
    await asyncio.sleep(args.hold)
    st.holding = False
    await gen_ws.report_and_wait(gen_ws.summary(st), stop)


if __name__ == "__main__":
    uvloop.run(main(gen_ws.arg_parser().parse_args()))
