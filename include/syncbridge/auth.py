"""Passwords (scrypt) and tokens (JWT HS256).

Password hashing runs on a thread pool (hashlib.scrypt releases the GIL), so a login never
blocks the event loop; its cost is ``--kdf-cost`` = log2(N) with r=8, p=1. The stored hash
carries its own parameters, so changing the cost later still verifies older hashes.

Access tokens are short-lived and stateless. Refresh tokens carry a ``jti`` recorded in the
database; refreshing marks it used and issues a new one (rotation), so a refresh token works
exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import jwt

DEFAULT_KDF_COST = 14  # N = 16384, r = 8, p = 1: scrypt's classic interactive-login setting
_R = 8
_P = 1
_DKLEN = 32
_ALGORITHMS = ["HS256"]


class AuthError(Exception):
    """A missing, malformed, expired or revoked credential."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    n = 1 << log_n
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * r * n + 2**20, dklen=_DKLEN
    )


def hash_password_sync(password: str, log_n: int) -> str:
    salt = os.urandom(16)
    digest = _scrypt(password, salt, log_n, _R, _P)
    return f"scrypt${log_n}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password_sync(password: str, stored: str) -> bool:
    try:
        scheme, log_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = _scrypt(password, _unb64(salt), int(log_n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, actual)


class Auth:
    def __init__(
        self,
        secret: str,
        kdf_cost: int = DEFAULT_KDF_COST,
        access_ttl: float = 900,
        refresh_ttl: float = 7 * 86400,
        kdf_threads: int | None = None,
    ):
        if not 1 <= kdf_cost <= 20:
            raise ValueError("kdf cost (log2 N) must be between 1 and 20")
        self._key = secret.encode()
        self.kdf_cost = kdf_cost
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self._kdf = ThreadPoolExecutor(
            max_workers=kdf_threads or max(2, len(os.sched_getaffinity(0))),
            thread_name_prefix="kdf",
        )
        # A hash to verify against when the email is unknown, so both cases cost the same.
        self._dummy_hash = hash_password_sync(secrets.token_urlsafe(16), kdf_cost)
        # token -> (user_id, exp): a verified access token is not re-verified until it expires.
        self._verified: dict[str, tuple[int, float]] = {}

    def close(self) -> None:
        self._kdf.shutdown(wait=False, cancel_futures=True)

    async def hash_password(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._kdf, hash_password_sync, password, self.kdf_cost)

    async def verify_password(self, password: str, stored: str | None) -> bool:
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(
            self._kdf, verify_password_sync, password, stored or self._dummy_hash
        )
        return ok and stored is not None

    def issue_access(self, user_id: int) -> str:
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "typ": "access",
            "iat": now,
            "exp": now + int(self.access_ttl),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm="HS256")

    def new_refresh_id(self) -> tuple[str, float]:
        """(jti, expires_at) for a refresh token about to be issued."""
        return uuid.uuid4().hex, float(int(time.time()) + int(self.refresh_ttl))

    def sign_refresh(self, user_id: int, jti: str, exp: float) -> str:
        claims = {
            "sub": str(user_id),
            "typ": "refresh",
            "iat": int(time.time()),
            "exp": int(exp),
            "jti": jti,
        }
        return jwt.encode(claims, self._key, algorithm="HS256")

    def issue_refresh(self, user_id: int) -> tuple[str, str, float]:
        """(token, jti, expires_at)."""
        jti, exp = self.new_refresh_id()
        return self.sign_refresh(user_id, jti, exp), jti, exp

    def _decode(self, token: str, typ: str) -> dict:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=_ALGORITHMS,
                options={"require": ["exp", "sub", "typ"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError:
            raise AuthError("invalid token") from None
        if claims.get("typ") != typ:
            raise AuthError("invalid token")
        try:
            claims["uid"] = int(claims["sub"])
        except (TypeError, ValueError):
            raise AuthError("invalid token") from None
        return claims

    def verify_access(self, token: str) -> int:
        """The user id of a valid access token; AuthError otherwise."""
        hit = self._verified.get(token)
        if hit is not None:
            if hit[1] > time.time():
                return hit[0]
            del self._verified[token]
            raise AuthError("token expired")
        claims = self._decode(token, "access")
        if len(self._verified) >= 50_000:
            self._verified.clear()
        self._verified[token] = (claims["uid"], float(claims["exp"]))
        return claims["uid"]

    def verify_refresh(self, token: str) -> tuple[int, str]:
        """(user_id, jti) of a well-formed, unexpired refresh token; AuthError otherwise."""
        claims = self._decode(token, "refresh")
        jti = claims.get("jti")
        if not isinstance(jti, str):
            raise AuthError("invalid token")
        return claims["uid"], jti
