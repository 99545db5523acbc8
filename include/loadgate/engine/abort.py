"""The stage's abort marker: how one shard's abort stops every shard of the stage.

The marker is ``ABORT`` in the abort directory, by default the parent of ``--out`` (the stage's
folder holding the shard folders), or ``--abort-dir``; either may be a store URL (``s3://…``).
It holds JSON: stage, shard, criterion, observed, at (epoch), at_s. It is created once, and the
first abort wins: locally by a hard link (never seen half written); on S3 by a conditional PUT
(``If-None-Match: *``); on a store without conditional writes by a look then a PUT, where two
shards aborting in the same instant may both write it (harmless: either marker stops every
shard, and each shard's own results say which criterion it breached). Every shard looks for it
once a second and stops with the abort exit code; a shard that starts when it is already there
stops before sending anything.

While the stage runs, :class:`AbortMarker` does the looking and the writing: on a local folder
in place (a file read is cheap), on a store from threads of its own, so the event loop never
waits on the network.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import orjson

from loadgate.storage import as_path, create_exclusive, is_remote

MARKER = "ABORT"
POLL_S = 1.0


def marker_path(abort_dir: Any) -> Any:
    return as_path(abort_dir) / MARKER


def write_marker(abort_dir: Any, info: dict[str, Any]) -> bool:
    """Create the marker; False when another shard created it first."""
    return create_exclusive(marker_path(abort_dir), orjson.dumps(info))


def read_marker(abort_dir: Any) -> dict[str, Any] | None:
    """The marker's content, ``{}`` when it exists but is not readable yet, None when absent.

    On a store, an error other than "not found" (the store unreachable) is raised: it says
    nothing about the marker.
    """
    path = marker_path(abort_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except Exception as exc:
        if is_remote(path):  # botocore's errors are no OSError: say what it was, as one
            raise OSError(f"{path}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(exc, OSError):
            raise
        return {}
    try:
        info = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


class AbortMarker:
    """The marker as a running stage uses it: :meth:`poll` and :meth:`write` never block the
    event loop on a network store."""

    def __init__(self, abort_dir: Any) -> None:
        self.dir = as_path(abort_dir)
        self.remote = is_remote(self.dir)
        self._seen: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._writers: list[threading.Thread] = []

    def start(self) -> None:
        """On a store: look for the marker once a second from a thread."""
        if self.remote:
            self._spawn(self._watch, "abort-watch")

    def _spawn(self, target: Any, name: str, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        return thread

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                seen = read_marker(self.dir)
            except Exception:
                seen = None  # unknown this time: look again
            if seen is not None:
                self._seen = seen
                return
            self._stop.wait(POLL_S)

    def poll(self) -> dict[str, Any] | None:
        """The marker if it is there (on a store: as last seen by the watcher), else None."""
        if self.remote:
            return self._seen
        return read_marker(self.dir)

    def write(self, info: dict[str, Any]) -> None:
        """Create the marker (on a store from a thread; :meth:`close` waits for it)."""
        if self.remote:
            self._writers.append(self._spawn(self._write, "abort-write", info))
        else:
            write_marker(self.dir, info)

    def _write(self, info: dict[str, Any]) -> None:
        for attempt in range(3):
            try:
                write_marker(self.dir, info)
                return
            except Exception as exc:  # the store does not answer: try again, then give up
                error = f"{type(exc).__name__}: {exc}"
                time.sleep(attempt + 1)
        print(f"loadgate: could not write the abort marker in {self.dir}: {error}", file=sys.stderr)

    def close(self) -> None:
        """Stop looking; wait for a marker being written (it must be there before we exit), not
        for a look in progress (against a store that is down, a look takes seconds)."""
        self._stop.set()
        for thread in self._writers:
            thread.join(timeout=30)
