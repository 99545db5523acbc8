"""The stage's abort marker: how one shard's abort stops every shard of the stage.

The marker is the file ``ABORT`` in the abort directory, by default the parent of ``--out``
(the stage's folder holding the shard folders), or ``--abort-dir``. It is created once
(``O_EXCL``: the first abort wins) and holds JSON: stage, shard, criterion, observed, at (epoch),
at_s. Every shard looks for it once a second and stops with the abort exit code; a shard that
starts when it is already there stops before sending anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

MARKER = "ABORT"


def marker_path(abort_dir: Path) -> Path:
    return abort_dir / MARKER


def write_marker(abort_dir: Path, info: dict[str, Any]) -> bool:
    """Create the marker; False when another shard created it first."""
    abort_dir.mkdir(parents=True, exist_ok=True)
    path = marker_path(abort_dir)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(info))
    return True


def read_marker(abort_dir: Path) -> dict[str, Any] | None:
    """The marker's content, ``{}`` when it exists but is not readable yet, None when absent."""
    path = marker_path(abort_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        info = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}
