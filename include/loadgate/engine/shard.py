"""Shares of a load between shards, and the arithmetic of ``--scale``.

A total ``T`` is split between ``N`` shards by largest remainder: every shard gets ``T // N`` and
``T % N`` of them one more. All remainders are equal, so ties are broken by a rotation (one per
scenario, so that small scenarios do not all land on shard 0). The split is the same as dealing
global indices round-robin: shard of *rank* ``r`` holds the global indices ``r, r+N, r+2N, …``
below ``T``. So a shard's local VU ``k`` is global VU ``k*N + r``; whatever the target, the VUs
running across all shards are exactly the global indices ``0 … T-1``, and each ramp target's
shares add up exactly to it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``: ``--shard 0/2`` and ``--shard 1/2``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("the shard count must be at least 1")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard index {self.index} is out of range: shards are numbered 0 to "
                f"{self.count - 1} (--shard I/N with 0 <= I < N)"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = _SHARD_RE.match(text)
        if not match:
            raise ValueError(f"--shard must be I/N (e.g. 0/2), got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def rank(self, rotate: int = 0) -> int:
        """This shard's place in the round-robin deal of a scenario rotated by ``rotate``."""
        return (self.index - rotate) % self.count

    def share(self, total: int, rotate: int = 0) -> int:
        """This shard's share of an integer total (VUs, connections, a ramp target)."""
        base, extra = divmod(total, self.count)
        return base + (1 if self.rank(rotate) < extra else 0)

    def global_index(self, local: int, rotate: int = 0) -> int:
        """The global index of this shard's ``local``-th VU (see the module docstring)."""
        return local * self.count + self.rank(rotate)


def scale_count(total: int, scale: float) -> int:
    """``total`` scaled, rounded half up; a non-zero total never scales to zero VUs."""
    if total <= 0 or scale <= 0:
        return 0
    return max(1, math.floor(total * scale + 0.5))
