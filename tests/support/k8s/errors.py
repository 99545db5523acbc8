"""Failures answered as ``Status`` objects, and the API server's time formats."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, ClassVar


class ApiError(Exception):
    """A failure answered as a ``Status`` object."""

    REASONS: ClassVar[dict[int, str]] = {
        400: "BadRequest",
        401: "Unauthorized",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "AlreadyExists",
        415: "UnsupportedMediaType",
        422: "Invalid",
        500: "InternalError",
    }

    def __init__(self, code: int, message: str, *, reason: str | None = None, **details: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def unsupported(what: str) -> ApiError:
    """A request this test server does not implement: refused, never silently ignored."""
    return ApiError(422, f"{what} is not supported by this test server")


def rfc3339(ts: float | None = None) -> str:
    """Seconds precision, as the API server writes ``metav1.Time``."""
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def rfc3339_nano(ts_ns: int) -> str:
    """The kubelet's log timestamp: RFC 3339 with nanoseconds."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"
