"""The generator's own CPU reading."""

from __future__ import annotations

import time

from loadgate.engine.health import MIN_CPU_SPAN_S, ProcessSampler


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_is_cores_over_the_window_and_a_sliver_repeats_the_last_reading() -> None:
    wall0, cpu0 = time.monotonic(), time.process_time()
    sampler = ProcessSampler()
    _spin(MIN_CPU_SPAN_S + 0.1)  # one core busy for the whole window (less when others run)
    cores, rss = sampler.sample()
    # the CPU this process got over the wall time it took: one core on a quiet machine, a
    # share of one on a busy one; never more than one (a tick's rounding aside)
    got = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    assert abs(cores - got) < 0.1 + 0.1 * got and cores <= 1.1 and rss > 10, (cores, got)
    _spin(0.02)  # two clock ticks in a few milliseconds: must not read as several cores
    again, _ = sampler.sample()
    assert again == cores
    time.sleep(MIN_CPU_SPAN_S + 0.1)  # idle
    idle, _ = sampler.sample()
    assert idle < 0.3
    assert round(sampler.cpu_max, 4) == cores
