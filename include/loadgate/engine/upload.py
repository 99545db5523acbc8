"""Shipping a shard's results to an object store while the stage runs.

The engine writes a store ``--out`` exactly as a local one, into a scratch folder
(``$LOADGATE_RESULTS_DIR``, a pod's emptyDir, or the system's temporary folder), and this writer
ships it from a thread of its own, so the event loop never waits on the network:

- ``meta.json`` as soon as it is written (at the start and at the end);
- every ``upload_every_s`` seconds, the windows closed since the last upload as the next
  numbered segment, ``windows/000001.jsonl``, ``windows/000002.jsonl``, … (whole lines only;
  a failed upload is retried under the same number, so no window is shipped twice or skipped);
- at :meth:`UploadingResultsWriter.close` (completed, aborted, SIGTERM, engine error), the last
  segment and then the last ``meta.json``: a reader that sees the end in ``meta.json`` has every
  window.

A killed generator loses the windows since the last upload. When the store has refused the
uploads for ``MAX_FAILING_S`` seconds, ``append_window`` raises and the engine stops the stage
with an error rather than load on with results nobody can read. The scratch folder is removed
once everything is shipped, and kept (its path printed) when the final upload fails.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from loadgate.engine.results import META, SEGMENTS, WINDOWS, ResultsError, ResultsWriter
from loadgate.storage import as_path, is_remote

UPLOAD_EVERY_S = 5.0
MAX_FAILING_S = 60.0
FINAL_UPLOAD_S = 20.0


class UploadingResultsWriter(ResultsWriter):
    """A :class:`ResultsWriter` into a scratch folder, shipped to ``dest`` (a store UPath)."""

    def __init__(
        self, dest: Any, *, scratch: Path | None = None, upload_every_s: float | None = None
    ) -> None:
        self.dest = dest
        self.upload_every_s = upload_every_s or UPLOAD_EVERY_S
        self._own_scratch = scratch is None
        if scratch is None:
            base = os.environ.get("LOADGATE_RESULTS_DIR") or None
            if base:
                Path(base).mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix="loadgate-results-", dir=base))
        self.scratch = scratch
        super().__init__(scratch)
        self.segments = 0
        self.error: str | None = None
        self._shipped = 0  # bytes of the scratch windows.jsonl already in segments
        self._meta_pending = False
        self._failing_since: float | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._final_deadline = float("inf")
        self._shipped_all = False
        self._thread = threading.Thread(target=self._loop, name="results-upload", daemon=True)
        self._thread.start()

    # --- the event loop's side: local writes only -------------------------------------------

    def write_meta(self, meta: dict[str, Any]) -> None:
        super().write_meta(meta)
        self._meta_pending = True
        self._wake.set()

    def append_window(self, record: dict[str, Any]) -> None:
        super().append_window(record)
        since = self._failing_since
        if since is not None and time.monotonic() - since > MAX_FAILING_S:
            raise ResultsError(
                f"cannot upload results to {self.dest} for {MAX_FAILING_S:g} s: {self.error}"
            )

    # --- the uploader's side ----------------------------------------------------------------

    def ship(self) -> None:
        """Upload what is new: the windows since the last segment, then meta.json if rewritten."""
        with self._lock:
            with open(self.scratch / WINDOWS, "rb") as handle:
                handle.seek(self._shipped)
                data = handle.read()
            data = data[: data.rfind(b"\n") + 1]  # whole lines: the last may be half written
            if data:
                (self.dest / SEGMENTS / f"{self.segments + 1:06d}.jsonl").write_bytes(data)
                self.segments += 1
                self._shipped += len(data)
            if self._meta_pending:
                self._meta_pending = False  # before the read: a rewrite after it sets it again
                try:
                    (self.dest / META).write_bytes((self.scratch / META).read_bytes())
                except BaseException:
                    self._meta_pending = True
                    raise

    def _attempt(self) -> bool:
        try:
            self.ship()
        except Exception as exc:  # the store is unreachable or refuses: retried next time
            self.error = f"{type(exc).__name__}: {exc}"
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            return False
        self.error, self._failing_since = None, None
        return True

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait(self.upload_every_s)
            self._wake.clear()
            if not self._stopping:
                self._attempt()
        # the final upload: retried until it goes through or the deadline close() set passes
        # (a store that is down costs several seconds an attempt: its client retries too)
        attempt = 0
        while not self._attempt():
            attempt += 1
            if time.monotonic() + attempt >= self._final_deadline:
                return
            time.sleep(attempt)
        self._shipped_all = True

    def close(self) -> None:
        """The final upload (the last windows, then the last meta.json): blocks until it is
        done or ``FINAL_UPLOAD_S`` have passed; ``error`` is set when it did not go through."""
        if self._windows.closed:
            return
        super().close()
        # at most FINAL_UPLOAD_S, in-flight attempt included: inside a pod's usual 30 s
        # termination grace; a thread still trying then is left behind (a daemon)
        self._final_deadline = time.monotonic() + FINAL_UPLOAD_S
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=FINAL_UPLOAD_S + 1)
        if not self._shipped_all:
            self.error = self.error or f"the final upload did not end in {FINAL_UPLOAD_S:g} s"
            print(
                f"loadgate: could not upload the results to {self.dest} ({self.error}); "
                f"they are in {self.scratch}",
                file=sys.stderr,
            )
            return
        if self._own_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


def open_results(out: Any, upload_every_s: float | None = None) -> ResultsWriter:
    """The writer of ``--out``: a local folder, or a store URL (written locally, then shipped)."""
    if is_remote(out):
        return UploadingResultsWriter(as_path(out), upload_every_s=upload_every_s)
    return ResultsWriter(Path(out))
