"""Seed the test users a plan needs: register concurrently, log in the ones that exist.

User ``i`` is ``loadtest{i}@…`` with a password derived from a seed secret, so a rerun (or the
next run against the same target) logs the same users in instead of failing on them. Each user
also gets its own session ``session-{i}``, which the API scenario reads. The users file is JSON
Lines, one user a line, in the format the engine's ``--users`` reads; it holds credentials, so it
is written with mode 0600 (on an object store: an object of the run root, as private as its
bucket) and never printed.

No request follows a redirect: a target answering 3xx would otherwise receive every user's
password wherever it points. The first redirect stops seeding with a :class:`SeedingError`
naming the status and the host it pointed at; what was seeded before is kept. Answers are read
up to ``MAX_ANSWER`` bytes, and an answer that is not what the API promises (a 201 without
tokens) counts as a failed user, not a crash.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from loadgate.probe import redirect_target
from loadgate.storage import Location, as_path, create_exclusive, write_atomic

log = logging.getLogger(__name__)

DEFAULT_EMAIL = "loadtest{i}@loadgate.test"
DEFAULT_SESSION = "session-{i}"
ATTEMPTS = 8
BACKOFF_S = 0.05
BACKOFF_MAX_S = 1.0
MAX_ANSWER = 64 * 1024  # an auth answer is a few hundred bytes


class SeedingError(RuntimeError):
    """Too many users could not be seeded; what was seeded is written all the same."""


class Redirected(Exception):
    """The target answered a seeding request with a redirect (never followed)."""

    def __init__(self, status: int, path: str, where: str) -> None:
        super().__init__(
            f"the target answered POST {path} with HTTP {status} redirecting to {where}; "
            "loadgate never follows a redirect (the users' passwords would go there)"
        )


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes."""
    if response.content_length is not None and response.content_length > limit:
        return None
    data = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def password_for(email: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), email.encode(), hashlib.sha256).digest()
    # letters, digits and a symbol: passes the usual password rules
    return base64.urlsafe_b64encode(digest[:18]).decode() + "-Lg1"


def load_or_create_secret(path: Location) -> str:
    """The seed secret kept beside the runs (a file or an object), made once (0600) when none
    is configured; when two runs make it at once, the first one's is kept by both."""
    target = as_path(path)
    if target.exists():
        return str(target.read_text().strip())
    value = secrets.token_urlsafe(32)
    if not create_exclusive(target, value.encode(), private=True):
        return str(target.read_text().strip())
    return value


@dataclass
class SeedResult:
    requested: int
    registered: int = 0
    existing: int = 0
    sessions_created: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ready(self) -> int:
        return self.registered + self.existing

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "ready": self.ready,
            "registered": self.registered,
            "existing": self.existing,
            "sessions_created": self.sessions_created,
            "failed": self.failed,
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 2),
        }


class _Seeder:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        base: str,
        secret: str,
        result: SeedResult,
        attempts: int = ATTEMPTS,
    ):
        self.http = http
        self.base = base.rstrip("/")
        self.secret = secret
        self.result = result
        self.attempts = attempts

    async def _post(self, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
        """POST with up to ``attempts`` tries on a 5xx or a lost connection, as any client
        seeding a live service would: a release that fails a request now and then must still
        be load-tested, so that its gate, not its seeding, judges it. Eight tries leave a
        release failing one request in five about one user in 200,000 unseeded."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        last = self.attempts - 1
        url = self.base + path
        for attempt in range(self.attempts):
            try:
                async with self.http.post(
                    url, data=orjson.dumps(body), headers=headers, allow_redirects=False
                ) as r:
                    status = r.status
                    if 300 <= status < 400 and status != 304:
                        raise Redirected(
                            status, path, redirect_target(url, r.headers.get("Location"))
                        )
                    raw = await _read_bounded(r, MAX_ANSWER)
            except (aiohttp.ClientConnectionError, TimeoutError):
                if attempt == last:
                    raise
                await asyncio.sleep(_backoff(attempt))
                continue
            if status < 500 or attempt == last:
                break
            await asyncio.sleep(_backoff(attempt))
        try:
            return status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return status, None

    @staticmethod
    def _tokens(body: Any) -> dict[str, str] | None:
        """The access and refresh tokens of an auth answer, or None if it has none."""
        if not isinstance(body, dict):
            return None
        access, refresh = body.get("accessToken"), body.get("refreshToken")
        if isinstance(access, str) and access and isinstance(refresh, str) and refresh:
            return {"accessToken": access, "refreshToken": refresh}
        return None

    async def seed_one(
        self, i: int, email_pattern: str, session_pattern: str
    ) -> dict[str, Any] | None:
        email = email_pattern.format(i=i)
        password = password_for(email, self.secret)
        status, body = await self._post(
            "/api/v1/auth/register",
            {"email": email, "password": password, "name": f"Load Test User {i}"},
        )
        if status == 409:
            status, body = await self._post(
                "/api/v1/auth/login", {"email": email, "password": password}
            )
            if status != 200:
                self._fail(f"login {status}")
                return None
            new = False
        elif status == 201:
            new = True
        else:
            self._fail(f"register {status}")
            return None
        tokens = self._tokens(body)
        if tokens is None:
            self._fail(f"{'register' if new else 'login'} {status} without tokens")
            return None
        session_id = session_pattern.format(i=i)
        status, _ = await self._post(
            "/api/v1/sessions",
            {"sessionId": session_id, "state": {"data": f"seed-{i}"}},
            token=tokens["accessToken"],
        )
        if status == 201:
            self.result.sessions_created += 1
        elif status != 409:
            self._fail(f"session {status}")
            return None
        if new:
            self.result.registered += 1
        else:
            self.result.existing += 1
        return {
            "index": i,
            "email": email,
            "password": password,
            "sessionId": session_id,
            "accessToken": tokens["accessToken"],
            "refreshToken": tokens["refreshToken"],
        }

    def _fail(self, kind: str) -> None:
        self.result.failed += 1
        self.result.errors[kind] = self.result.errors.get(kind, 0) + 1


def _backoff(attempt: int) -> float:
    return float(min(BACKOFF_S * 2**attempt, BACKOFF_MAX_S))


def write_users(path: Location, users: list[dict[str, Any]]) -> None:
    data = b"".join(orjson.dumps(user) + b"\n" for user in users)
    write_atomic(as_path(path), data, private=True)


def read_users(path: Location) -> list[dict[str, Any]]:
    target = as_path(path)
    if not target.exists():
        return []
    return [orjson.loads(line) for line in target.read_bytes().splitlines() if line.strip()]


async def seed_users(
    target: str,
    count: int,
    out: Location,
    *,
    secret: str,
    concurrency: int = 64,
    max_failure_rate: float = 0.01,
    email_pattern: str = DEFAULT_EMAIL,
    session_pattern: str = DEFAULT_SESSION,
    timeout_s: float = 30.0,
    attempts: int = ATTEMPTS,
    progress: Callable[[SeedResult], None] | None = None,
    progress_every_s: float = 5.0,
) -> SeedResult:
    """Seed users 0..count-1 into ``out``; users already in ``out`` are kept and not redone."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    started = time.monotonic()
    done = {u["index"]: u for u in read_users(out) if u.get("index") is not None}
    result = SeedResult(requested=count, existing=sum(1 for i in done if i < count))
    todo = [i for i in range(count) if i not in done]
    users = [done[i] for i in sorted(done) if i < count]
    if todo:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        connector = aiohttp.TCPConnector(limit=concurrency)
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers
        ) as http:
            seeder = _Seeder(http, target, secret, result, attempts)
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in todo:
                queue.put_nowait(i)

            redirected: list[Redirected] = []

            async def worker() -> None:
                while not queue.empty() and not redirected:
                    i = queue.get_nowait()
                    try:
                        user = await seeder.seed_one(i, email_pattern, session_pattern)
                    except (TimeoutError, aiohttp.ClientError) as exc:
                        seeder._fail(type(exc).__name__)
                        user = None
                    except Redirected as exc:  # every worker stops: nothing more is sent
                        redirected.append(exc)
                        seeder._fail("redirect")
                        user = None
                    if user is not None:
                        users.append(user)

            async def report() -> None:
                while True:
                    await asyncio.sleep(progress_every_s)
                    if progress:
                        progress(result)

            reporter = asyncio.create_task(report())
            try:
                await asyncio.gather(*(worker() for _ in range(min(concurrency, len(todo)))))
            finally:
                reporter.cancel()
                users.sort(key=lambda u: u["index"])
                write_users(out, users)  # what was seeded is kept, whatever happened
            if redirected:
                raise SeedingError(
                    f"{redirected[0]}: seeding stopped, {len(users)} users are ready in the "
                    "users file"
                )
    result.seconds = time.monotonic() - started
    if progress:
        progress(result)
    if result.failed > max_failure_rate * count:
        raise SeedingError(
            f"{result.failed} of {count} users could not be seeded ({result.errors}); "
            f"{result.ready} are ready in the users file"
        )
    return result
