"""HDR latency histograms: recording, the wire encoding, and a fast accumulator for merging.

Values are microseconds with 3 significant digits from 1 µs to 120 s (larger values are
clamped to the top). Windows carry histograms in HdrHistogram's standard compressed, base64
encoding (readable by any HdrHistogram library). Merging decodes a blob straight into a reusable
counts buffer with hdrhistogram's C helpers and adds it with one C call: about 10 µs a blob
instead of ~60 µs through ``HdrHistogram.decode``, which is what makes merging 20 shards of 45
minutes of windows take seconds. Percentiles are read from the merged counts only.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import zlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import accumulate

from hdrh.codec import PayloadHeader, ext_header_size, payload_header_size
from hdrh.histogram import HdrHistogram
from pyhdrh import add_array
from pyhdrh import decode as _decode_varints

LOWEST_US = 1
HIGHEST_US = 120_000_000
SIGNIFICANT = 3

_REF = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)
COUNTS_LEN: int = _REF.counts_len
_HIGHEST_INDEX = COUNTS_LEN - 1
_CountsArray = ctypes.c_ulonglong * COUNTS_LEN
_a2b = binascii.a2b_base64
_decompress = zlib.decompress


def _layout_bytes() -> bytes:
    """Bytes 12-40 of our payload header: significant figures, lowest and highest value, and
    the conversion ratio. A blob with the same bytes decodes straight into our counts."""
    hist = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)
    hist.record_value(1)
    data = zlib.decompress(base64.b64decode(hist.encode())[ext_header_size:])
    header = PayloadHeader.from_buffer_copy(data)
    assert header.lowest_trackable_value == LOWEST_US
    assert header.highest_trackable_value == HIGHEST_US
    return data[_LAYOUT_SLICE]


_LAYOUT_AT = 12
_LAYOUT_SLICE = slice(_LAYOUT_AT, payload_header_size)
_LAYOUT = _layout_bytes()
_EXT = ext_header_size
_PAYLOAD_AT = payload_header_size
_memset = ctypes.memset


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


# The counts index of a value, as HdrHistogram computes it for our layout (unit magnitude 0,
# 2,048 sub-buckets): bucket = bit length of (value | mask) - 11, index = (bucket + 1) * 1024 +
# (value >> bucket) - 1024. Checked against hdrh's record_value in the tests.
_SUB_MASK = _REF.sub_bucket_mask
_HALF_MAG = _REF.sub_bucket_half_count_magnitude
_HALF = _REF.sub_bucket_half_count
_BUCKET_SHIFT = _HALF_MAG + 1
assert _REF.unit_magnitude == 0 and _SUB_MASK == 2 * _HALF - 1


def record_seconds(hist: HdrHistogram, seconds: float) -> None:
    """Record a duration given in seconds (clamped to the histogram's range).

    The same as ``hist.record_value(us)``, inlined: hdrh's ``record_value`` goes through five
    Python calls a value, which was a few per cent of the engine's CPU under load."""
    us = int(seconds * 1e6 + 0.5)
    if us < LOWEST_US:
        us = LOWEST_US
    elif us > HIGHEST_US:
        us = HIGHEST_US
    bucket = (us | _SUB_MASK).bit_length() - _BUCKET_SHIFT
    hist.counts[((bucket + 1) << _HALF_MAG) + (us >> bucket) - _HALF] += 1
    hist.total_count += 1
    if us < hist.min_value:
        hist.min_value = us
    if us > hist.max_value:
        hist.max_value = us


def encode(hist: HdrHistogram) -> str:
    """The standard compressed base64 encoding, as text."""
    return str(hist.encode().decode("ascii"))


def value_at_index(index: int) -> int:
    """The highest value (µs) equivalent to counts index ``index``."""
    return int(_REF.get_highest_equivalent_value(_REF.get_value_from_index(index)))


def _median_at_index(index: int) -> float:
    low = int(_REF.get_value_from_index(index))
    high = int(_REF.get_highest_equivalent_value(low))
    return (low + high + 1) / 2.0


class Accumulator:
    """The sum of any number of histograms, added from encoded blobs or live histograms."""

    __slots__ = ("_addr", "_counts", "_max_index", "_min_index", "_tmp", "_tmp_addr", "total")

    def __init__(self) -> None:
        self._counts = _CountsArray()
        self._addr = ctypes.addressof(self._counts)
        self._tmp: ctypes.Array[ctypes.c_ulonglong] | None = None
        self._tmp_addr = 0
        self._min_index = COUNTS_LEN
        self._max_index = -1
        self.total = 0

    def _note(self, lo: int, hi: int, total: int) -> None:
        if total:
            self.total += total
            if lo < self._min_index:
                self._min_index = lo
            if hi > self._max_index:
                self._max_index = hi

    def add_encoded(self, blob: str | bytes | None) -> None:
        """Add an encoded histogram (None and empty are no-ops). The hot path of merging."""
        if not blob:
            return
        data = _decompress(_a2b(blob)[_EXT:])
        if not data.startswith(_LAYOUT, _LAYOUT_AT):
            self.add_histogram(HdrHistogram.decode(blob))  # another layout: the slow path
            return
        tmp_addr = self._tmp_addr
        if not tmp_addr:
            self._tmp = _CountsArray()
            tmp_addr = self._tmp_addr = ctypes.addressof(self._tmp)
        result = _decode_varints(data, _PAYLOAD_AT, tmp_addr, COUNTS_LEN, 8)
        total = result["total"]
        if not total:
            return
        lo = result["min_nonzero_index"]
        hi = result["max_nonzero_index"]
        offset = lo * 8
        span = hi - lo + 1
        add_array(self._addr + offset, tmp_addr + offset, span, 8)
        _memset(tmp_addr + offset, 0, span * 8)
        self.total += total
        if lo < self._min_index:
            self._min_index = lo
        if hi > self._max_index:
            self._max_index = hi

    def add_histogram(self, hist: HdrHistogram) -> None:
        """Add a live histogram of any layout."""
        if not hist.total_count:
            return
        if hist.counts_len == COUNTS_LEN and hist.unit_magnitude == _REF.unit_magnitude:
            hi = min(hist.get_counts_array_index(hist.max_value), _HIGHEST_INDEX)
            lo = min(hist.get_counts_array_index(hist.min_value), hi) if hist.min_value else 0
            self._add_counts(ctypes.addressof(hist.counts), lo, hi, hist.total_count)
            return
        for item in hist.get_recorded_iterator():
            value = min(max(int(item.value_iterated_to), LOWEST_US), HIGHEST_US)
            index = _REF.get_counts_array_index(value)
            self._counts[index] += item.count_at_value_iterated_to
            self._note(index, index, item.count_at_value_iterated_to)

    def add(self, other: Accumulator) -> None:
        if not other.total:
            return
        self._add_counts(
            ctypes.addressof(other._counts), other._min_index, other._max_index, other.total
        )

    def _add_counts(self, counts_addr: int, lo: int, hi: int, total: int) -> None:
        """Add another int64 counts array of the same layout, indexes ``lo..hi``, in C."""
        offset = lo * 8
        add_array(ctypes.addressof(self._counts) + offset, counts_addr + offset, hi - lo + 1, 8)
        self._note(lo, hi, total)

    def __getstate__(self) -> tuple[int, int, int, bytes]:
        """Pickled compactly (only the non-zero range), for merging in worker processes."""
        if not self.total:
            return (COUNTS_LEN, -1, 0, b"")
        lo, hi = self._min_index, self._max_index
        raw = ctypes.string_at(ctypes.addressof(self._counts) + lo * 8, (hi - lo + 1) * 8)
        return (lo, hi, self.total, raw)

    def __setstate__(self, state: tuple[int, int, int, bytes]) -> None:
        lo, hi, total, raw = state
        self._counts = _CountsArray()
        self._addr = ctypes.addressof(self._counts)
        self._tmp = None
        self._tmp_addr = 0
        self._min_index, self._max_index, self.total = lo, hi, total
        if raw:
            ctypes.memmove(ctypes.addressof(self._counts) + lo * 8, raw, len(raw))

    # --- reading --------------------------------------------------------------------------

    def _slice(self) -> list[int]:
        return self._counts[self._min_index : self._max_index + 1]

    def percentiles_us(self, percentiles: Sequence[float]) -> dict[float, int]:
        """Values (µs) at the given percentiles (0–100), HdrHistogram's definition."""
        if not self.total:
            return {p: 0 for p in percentiles}
        cumulative = list(accumulate(self._slice()))
        out: dict[float, int] = {}
        for p in percentiles:
            target = max(int(min(p, 100.0) * self.total / 100 + 0.5), 1)
            pos = bisect_left(cumulative, target)
            out[p] = value_at_index(self._min_index + min(pos, len(cumulative) - 1))
        return out

    def percentile_ms(self, p: float) -> float:
        return self.percentiles_us([p])[p] / 1000.0

    def mean_ms(self) -> float:
        if not self.total:
            return 0.0
        acc = 0.0
        for offset, count in enumerate(self._slice()):
            if count:
                acc += count * _median_at_index(self._min_index + offset)
        return acc / self.total / 1000.0

    def max_ms(self) -> float:
        return value_at_index(self._max_index) / 1000.0 if self.total else 0.0

    def min_ms(self) -> float:
        return _REF.get_value_from_index(self._min_index) / 1000.0 if self.total else 0.0

    def to_histogram(self) -> HdrHistogram:
        """A real HdrHistogram with these counts (for export or HdrHistogram's own queries)."""
        hist = new_histogram()
        if self.total:
            ctypes.memmove(hist.counts, self._counts, ctypes.sizeof(self._counts))
            hist.set_internal_tacking_values(self._min_index, self._max_index, self.total)
        return hist

    def encode(self) -> str:
        return encode(self.to_histogram())

    def stats_ms(self, percentiles: Iterable[float] = (50, 90, 95, 99)) -> dict[str, float]:
        """count, avg, min, max and the given percentiles in milliseconds."""
        ps = list(percentiles)
        values = self.percentiles_us(ps)
        out: dict[str, float] = {
            "count": self.total,
            "avg_ms": round(self.mean_ms(), 3),
            "min_ms": round(self.min_ms(), 3),
            "max_ms": round(self.max_ms(), 3),
        }
        for p in ps:
            key = f"p{p:g}".replace(".", "_") + "_ms"
            out[key] = round(values[p] / 1000.0, 3)
        return out
