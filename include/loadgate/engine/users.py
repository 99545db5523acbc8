"""The ``--users`` file: JSON Lines, one seeded user a line.

The file is local or an object-store URL (``s3://…/users.jsonl``, read into memory). Each line is
an object with at least ``email`` and ``password``; optional ``sessionId`` (the
user's own session, default ``session-<index>``), ``accessToken``, ``refreshToken``, ``index``.
VU ``g`` (global index) uses user ``g mod len(users)``. Credentials stay in memory: they are
never logged nor written to results.
"""

from __future__ import annotations

from typing import Any

import orjson

from loadgate.storage import Location, as_path


class UsersError(ValueError):
    pass


def load_users(path: Location) -> list[dict[str, Any]]:
    file = as_path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise UsersError(f"{file}: cannot read users file: {exc.strerror or exc}") from None
    users: list[dict[str, Any]] = []
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            user = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise UsersError(f"{file}:{lineno}: not a JSON object") from None
        if not isinstance(user, dict):
            raise UsersError(f"{file}:{lineno}: not a JSON object")
        missing = [k for k in ("email", "password") if not isinstance(user.get(k), str)]
        if missing:
            raise UsersError(f"{file}:{lineno}: missing {' and '.join(missing)}")
        index = user.get("index", len(users))
        user.setdefault("sessionId", f"session-{index}")
        users.append(user)
    if not users:
        raise UsersError(f"{file}: no users in the file")
    return users
