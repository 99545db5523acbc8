"""The calls loadgate makes to a target besides the load: health checks, the checklist's reads,
the rollback's requests.

None of them follows a redirect: a target (or whatever answers in its place) that says 3xx gets
its answer recorded as evidence (the status and the host it pointed at), and no request goes
there, so no token or password is ever sent to a host nobody allowlisted. A body is read up to a
limit within the request's timeout; a target's bad answer (a redirect, a body too large, not
JSON, not a JSON object) is a :class:`BadAnswer` whose message says what it was: evidence for
the caller, never a crash of the gate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
import requests
import urllib3

MAX_BODY = 64 * 1024  # a health or admin answer is a few hundred bytes
CHUNK = 16 * 1024


class BadAnswer(ValueError):
    """The target answered, but not with what was asked; the message is the evidence."""


def redirect_target(url: str, location: str | None) -> str:
    """Where a redirect pointed, as ``scheme://host[:port]`` only (a Location's path or query
    may carry tokens; its credentials are never shown)."""
    if not location:
        return "no Location"
    try:
        parts = urlsplit(urljoin(url, location.strip()))
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "an invalid Location"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme or '?'}://{host}" + (f":{port}" if port else "")


@dataclass(frozen=True)
class Answer:
    url: str
    status: int
    body: bytes
    location: str | None = None  # a 3xx's Location header (not followed)

    @property
    def redirect(self) -> str | None:
        """``"HTTP 307 redirect to http://host:port (not followed)"`` for a 3xx, else None."""
        if not 300 <= self.status < 400 or self.status == 304:
            return None
        where = redirect_target(self.url, self.location)
        return f"HTTP {self.status} redirect to {where} (not followed)"

    def json_object(self, what: str) -> dict[str, Any]:
        """The body as a JSON object, or a BadAnswer saying what ``what`` was instead."""
        if self.redirect:
            raise BadAnswer(f"{what}: {self.redirect}")
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise BadAnswer(f"{what} body is not JSON ({len(self.body)} bytes)") from None
        if not isinstance(value, dict):
            raise BadAnswer(f"{what} body is a JSON {type(value).__name__}, not an object")
        return value


def _read(response: requests.Response, max_bytes: int, deadline: float, what: str) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BadAnswer(f"{what} body is larger than {max_bytes} bytes ({declared} declared)")
    data = bytearray()
    while True:
        try:  # read1: what has arrived, so a target dripping bytes meets the deadline
            chunk = response.raw.read1(CHUNK, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise requests.ConnectionError(f"{what}: reading the body failed: {exc}") from None
        if not chunk:
            break
        data += chunk
        if len(data) > max_bytes:
            raise BadAnswer(f"{what} body is larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise BadAnswer(f"{what} body was not complete within the request's timeout")
    return bytes(data)


def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    timeout: float = 5.0,
    max_bytes: int = MAX_BODY,
    what: str | None = None,
) -> Answer:
    """One request that never follows a redirect; its body read up to ``max_bytes`` within
    ``timeout`` seconds. Raises ``requests.RequestException`` when no answer came and
    BadAnswer for a body too large or too slow; a 3xx is an :class:`Answer` (see
    :attr:`Answer.redirect`)."""
    what = what or f"{method} {urlsplit(url).path or '/'}"
    deadline = time.monotonic() + timeout
    with requests.request(
        method,
        url,
        headers=dict(headers or {}),
        json=json,
        timeout=timeout,
        allow_redirects=False,
        stream=True,
    ) as response:
        body = _read(response, max_bytes, deadline, what)
        return Answer(url, response.status_code, body, response.headers.get("Location"))


def get(url: str, **kwargs: Any) -> Answer:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> Answer:
    return request("POST", url, **kwargs)
