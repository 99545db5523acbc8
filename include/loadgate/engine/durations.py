"""Durations as plans write them: ``"2m"``, ``"30s"``, ``"10ms"``, ``"1h30m"``, or plain seconds."""

from __future__ import annotations

import functools
import math
import re

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from a duration string or number; raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '2m', '30s', '10ms'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError("a duration is a number of seconds or a string like '2m', '30s', '10ms'")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    return seconds


@functools.lru_cache(maxsize=256)
def _parse_text(value: str) -> float:
    """A duration string in seconds; cached, as scenarios parse their options once per VU."""
    text = value.strip().replace(" ", "")
    if not text:
        raise ValueError("empty duration")
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"{value!r} is not a duration (use e.g. '2m', '30s', '10ms', '1h30m')")
    return total


def format_duration(seconds: float) -> str:
    """A compact human form: ``44m0s``, ``1.5s``, ``10ms``."""
    if seconds < 1:
        return f"{seconds * 1000:.3g}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s"
