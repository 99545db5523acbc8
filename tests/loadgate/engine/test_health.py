"""The generator's own CPU reading."""

from __future__ import annotations

import time

from loadgate.engine.health import MIN_CPU_SPAN_S, ProcessSampler


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_is_cores_over_the_window_and_a_sliver_repeats_the_last_reading() -> None:
    sampler = ProcessSampler()
    _spin(MIN_CPU_SPAN_S + 0.1)  # one core busy for the whole window
    cores, rss = sampler.sample()
    assert 0.3 < cores <= 1.3 and rss > 10  # one core, or less of the wall time when busy
    _spin(0.02)  # two clock ticks in a few milliseconds: must not read as several cores
    again, _ = sampler.sample()
    assert again == cores
    time.sleep(MIN_CPU_SPAN_S + 0.1)  # idle
    idle, _ = sampler.sample()
    assert idle < 0.3
    assert round(sampler.cpu_max, 4) == cores
