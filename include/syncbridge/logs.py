"""Structured JSON logs: one object per line (ts, level, msg, fields).

Request logs are on the hot path, so lines are serialised with orjson and written in batches:
a line is buffered and the buffer is flushed every 200 ms by the service, when it grows past
64 KiB, and at once for warnings and errors. Never pass secrets (passwords, tokens) as fields.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

import orjson

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_FLUSH_BYTES = 64 * 1024
_LINE_BREAKERS = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def iso_ts(t: float | None = None) -> str:
    """UTC timestamp with milliseconds, e.g. 2026-11-27T10:00:00.123Z."""
    if t is None:
        t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class JsonLog:
    """A small, fast structured logger writing JSON lines to a binary stream."""

    def __init__(self, stream: IO[bytes], level: str = "info", close_stream: bool = False):
        self._stream = stream
        self._close_stream = close_stream
        self._buf: list[bytes] = []
        self._size = 0
        self.level = _LEVELS.get(level, 20)

    @classmethod
    def open(cls, path: str | None, level: str = "info") -> JsonLog:
        if path:
            return cls(open(path, "ab"), level, close_stream=True)
        return cls(sys.stdout.buffer, level)

    @property
    def to_stdout(self) -> bool:
        return not self._close_stream

    def log(self, level: str, msg: str, **fields: Any) -> None:
        lvl = _LEVELS.get(level, 20)
        if lvl < self.level:
            return
        record = {"ts": iso_ts(), "level": level, "msg": msg}
        record.update(fields)
        line = orjson.dumps(record, default=str)
        if b"\xc2\x85" in line or b"\xe2\x80\xa8" in line or b"\xe2\x80\xa9" in line:
            # Valid JSON, but str.splitlines() would break the line there: escape them.
            for raw, esc in _LINE_BREAKERS:
                line = line.replace(raw, esc)
        line += b"\n"
        self._buf.append(line)
        self._size += len(line)
        if lvl >= 30 or self._size >= _FLUSH_BYTES:
            self.flush()

    def info(self, msg: str, **fields: Any) -> None:
        self.log("info", msg, **fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self.log("warning", msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log("error", msg, **fields)

    def flush(self) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):  # closed stream or full disk: logging must not kill requests
            pass

    def close(self) -> None:
        self.flush()
        if self._close_stream:
            self._stream.close()


class _StdlibBridge(logging.Handler):
    """Routes stdlib log records (aiohttp, asyncio) into the JSON log."""

    def __init__(self, log: JsonLog):
        super().__init__()
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                fields["exc"] = logging.Formatter().formatException(record.exc_info)
            self._log.log(record.levelname.lower(), record.getMessage(), **fields)
        except Exception:  # pragma: no cover - never raise from logging
            self.handleError(record)


def bridge_stdlib_logging(log: JsonLog) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(_StdlibBridge(log))
    root.setLevel(logging.WARNING)
