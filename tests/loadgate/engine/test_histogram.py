"""The fast accumulator agrees with HdrHistogram itself."""

from __future__ import annotations

import pickle
import random

import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import example, given
from hypothesis import strategies as st

from loadgate.engine.histogram import Accumulator, encode, new_histogram, record_seconds


def _hist(values):
    h = new_histogram()
    for v in values:
        record_seconds(h, v)
    return h


def test_accumulator_equals_hdrhistogram_add() -> None:
    rng = random.Random(3)
    parts = [[rng.lognormvariate(-4 + i, 1) for _ in range(800)] for i in range(4)]
    ref = new_histogram()
    acc = Accumulator()
    for i, values in enumerate(parts):
        h = _hist(values)
        ref.add(h)
        if i % 2:
            acc.add_encoded(encode(h))
        else:
            acc.add_histogram(h)
    assert acc.total == ref.get_total_count() == 3200
    for p in (0.1, 1, 50, 90, 95, 99, 99.9, 100):
        assert acc.percentiles_us([p])[p] == ref.get_value_at_percentile(p)
    assert acc.max_ms() == pytest.approx(ref.get_max_value() / 1000)
    assert abs(acc.mean_ms() * 1000 - ref.get_mean_value()) < 1e-6 * ref.get_mean_value() + 1
    assert acc.to_histogram().get_value_at_percentile(95) == ref.get_value_at_percentile(95)
    clone = pickle.loads(pickle.dumps(acc))
    assert clone.percentiles_us([50, 99]) == acc.percentiles_us([50, 99])


def test_another_layout_takes_the_slow_path() -> None:
    other = HdrHistogram(1, 3_600_000_000, 2)
    for v in (100, 2000, 30000):
        other.record_value(v)
    acc = Accumulator()
    acc.add_encoded(other.encode())
    assert acc.total == 3
    assert 29_000 < acc.percentiles_us([100])[100] < 31_000


def test_clamping_and_empty() -> None:
    acc = Accumulator()
    assert acc.percentiles_us([50]) == {50: 0} and acc.mean_ms() == 0.0
    acc.add_encoded(None)
    acc.add_encoded(encode(_hist([1e-9, 10_000.0])))  # below 1 µs and above the range
    assert acc.total == 2
    assert acc.min_ms() == 0.001
    assert acc.max_ms() >= 119_000


@example([v + d for v in (1 << k for k in range(1, 27)) for d in (-1, 0, 1)] + [120_000_000])
@given(st.lists(st.integers(min_value=-5, max_value=200_000_000), min_size=1, max_size=60))
def test_record_seconds_is_hdrh_record_value(values_us: list[int]) -> None:
    """The inlined recording gives exactly the histogram hdrh's record_value gives."""
    ours = new_histogram()
    ref = new_histogram()
    for us in values_us:
        record_seconds(ours, us / 1e6)
        ref.record_value(min(max(us, 1), 120_000_000))
    assert list(ours.counts) == list(ref.counts)
    assert (ours.total_count, ours.min_value, ours.max_value) == (
        ref.total_count,
        ref.min_value,
        ref.max_value,
    )
    assert encode(ours) == encode(ref)
