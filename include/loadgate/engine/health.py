"""The generator's own health: event-loop lag, CPU and memory, so it can say when its numbers
cannot be trusted (a saturated generator makes the target look slow)."""

from __future__ import annotations

import asyncio
import time

import psutil

from loadgate.engine.window import Recorder

LAG_PROBE_S = 0.05
MIN_CPU_SPAN_S = 0.5


async def watch_loop_lag(recorder: Recorder, interval: float = LAG_PROBE_S) -> None:
    """Record how late a timer fires, ``1/interval`` times a second, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + interval
        await asyncio.sleep(interval)
        recorder.loop_lag(max(0.0, loop.time() - expected))


class ProcessSampler:
    """CPU (cores used, over the window) and resident memory of this process."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._last_cpu = self._cpu_s()
        self._last_wall = time.monotonic()
        self._last_cores = 0.0
        self.cpu_max = 0.0
        self.rss_max_mb = 0.0

    def _cpu_s(self) -> float:
        t = self._proc.cpu_times()
        return float(t.user + t.system)

    def sample(self) -> tuple[float, float]:
        """(cpu in cores since the last call, rss in MB).

        CPU times advance in clock ticks (10 ms): over a sliver of a second (the last, partial
        window of a stage) one tick would read as many cores, so a call less than
        ``MIN_CPU_SPAN_S`` after the last one repeats the last reading instead."""
        cpu_s, wall = self._cpu_s(), time.monotonic()
        elapsed = wall - self._last_wall
        if elapsed >= MIN_CPU_SPAN_S:
            self._last_cores = (cpu_s - self._last_cpu) / elapsed
            self._last_cpu, self._last_wall = cpu_s, wall
        cpu = self._last_cores
        rss = self._proc.memory_info().rss / 1e6
        self.cpu_max = max(self.cpu_max, cpu)
        self.rss_max_mb = max(self.rss_max_mb, rss)
        return round(cpu, 4), round(rss, 1)
