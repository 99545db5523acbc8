"""Request validation: every bad input becomes an ApiError with a 4xx status and a message."""

from __future__ import annotations

import re
from typing import Any

MAX_SESSION_ID = 128
MAX_DEVICE_ID = 128
MAX_EMAIL = 254
MAX_NAME = 200
MIN_PASSWORD = 8
MAX_PASSWORD = 256
MAX_TOKEN = 4096

# Client-chosen session ids: URL-path-safe, bounded.
_SESSION_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:@~-]{{0,{MAX_SESSION_ID - 1}}}")


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


def valid_session_id(value: Any) -> bool:
    return isinstance(value, str) and _SESSION_ID.fullmatch(value) is not None


def session_id_field(data: dict, name: str = "sessionId") -> str:
    value = data.get(name)
    if not valid_session_id(value):
        raise ApiError(
            400,
            f"{name} must be 1-{MAX_SESSION_ID} characters of letters, digits and ._:@~- "
            "starting with a letter or digit",
        )
    return value


def str_field(
    data: dict,
    name: str,
    *,
    max_len: int,
    min_len: int = 1,
    required: bool = True,
    default: str = "",
) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    if not min_len <= len(value) <= max_len:
        raise ApiError(400, f"{name} must be {min_len}-{max_len} characters")
    return value


def email_field(data: dict) -> str:
    email = str_field(data, "email", max_len=MAX_EMAIL, min_len=3).strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or not domain or any(c.isspace() for c in email):
        raise ApiError(400, "email must be a valid email address")
    return email


def object_field(data: dict, name: str, *, required: bool) -> dict:
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"{name} must be a JSON object")
    return value
