"""SQLite storage (WAL) behind a bounded connection pool.

Every storage call checks a connection out of the pool (waiting in a FIFO queue when all are in
use, up to ``acquire_timeout``), runs a plain function with it on a dedicated worker thread (one
per connection, so queries never block the event loop) and returns the connection. The pool's
size and the number of connections in use are Prometheus gauges; failed acquisitions count as
storage connection errors.

Sessions are namespaced per user: the primary key is (user_id, session_id), so one user can
neither reach nor detect another user's sessions.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import jsonpatch
import orjson

from .logs import iso_ts

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    jti TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS refresh_tokens_expiry ON refresh_tokens (expires_at);
CREATE TABLE IF NOT EXISTS sessions (
    user_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    state BLOB NOT NULL,
    version INTEGER NOT NULL,
    active_device_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (user_id, session_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    state BLOB NOT NULL,
    metadata BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS releases (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    release TEXT NOT NULL,
    faults TEXT NOT NULL,
    deployed_at TEXT NOT NULL,
    rolled_back_at TEXT
);
CREATE INDEX IF NOT EXISTS snapshots_session ON snapshots (user_id, session_id);
CREATE TABLE IF NOT EXISTS devices (
    user_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (user_id, session_id, device_id)
) WITHOUT ROWID;
"""


PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_database(path: str) -> None:
    """Create the database file ``path`` (and the folders it needs) readable by its owner only:
    missing folders 0700, the file 0600; an existing file is set to 0600. An existing folder is
    left as it is (it may be shared, like the working directory)."""
    missing = []
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            continue
        os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is masked by the umask: the mode is exact
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE)
    except FileExistsError:
        os.chmod(path, PRIVATE_FILE)
    else:
        os.close(fd)


class StorageError(Exception):
    """Storage is unreachable (lost connection, pool exhausted, locked database...)."""


def parse_db_url(url: str) -> str:
    """``sqlite:///relative/or/absolute/path`` (or a bare path) -> a filesystem path."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path.startswith("/") or path == ":memory:":
            return path
        # sqlite:////abs -> "/abs"; sqlite:///rel -> "rel" (SQLAlchemy's convention)
        return path
    if "://" in url:
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH")
    return url


class Pool:
    def __init__(
        self,
        path: str,
        size: int,
        metrics,
        faults,
        acquire_timeout: float = 5.0,
    ):
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.path = path
        self.size = size
        self._metrics = metrics
        self._faults = faults  # FaultController: storage_failure_rate is read per acquisition
        self._acquire_timeout = acquire_timeout
        self._free: collections.deque[sqlite3.Connection] = collections.deque()
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._in_use = 0
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="db")
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        if self.path == ":memory:":
            conn = sqlite3.connect(
                "file:syncbridge-memory?mode=memory&cache=shared",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def open(self) -> None:
        """Open every connection and create the schema (synchronous: call before serving).

        The database holds the JWT signing key and the users' password hashes: it is the
        owner's alone (0600, its WAL and shared-memory files too; a folder it creates 0700)."""
        if self.path not in (":memory:", ""):
            private_database(self.path)
        for _ in range(self.size):
            self._free.append(self._connect())
        self._free[0].executescript(SCHEMA)
        if self.path not in (":memory:", ""):
            for suffix in ("-wal", "-shm"):  # SQLite gives them the database's mode; make sure
                if os.path.exists(self.path + suffix):
                    os.chmod(self.path + suffix, PRIVATE_FILE)
        self._metrics.db_pool_size.set(self.size)
        self._metrics.db_pool_in_use.set(0)

    def close(self) -> None:
        self._closed = True
        while self._free:
            self._free.popleft().close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def in_use(self) -> int:
        return self._in_use

    async def _acquire(self, exempt: bool = False) -> sqlite3.Connection:
        rate = self._faults.current.storage_failure_rate
        if rate and not exempt and random.random() < rate:
            self._metrics.db_connection_errors.inc()
            raise StorageError("storage connection lost")
        if self._free:
            conn = self._free.popleft()
            self._in_use += 1
            self._metrics.db_pool_in_use.set(self._in_use)
            return conn
        if self._closed:
            raise StorageError("storage is closed")
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(self._acquire_timeout):
                return await fut  # handed over by _release: already counted in use
        except (TimeoutError, asyncio.CancelledError) as exc:
            if fut.done() and not fut.cancelled():  # handed over just as we gave up
                self._release(fut.result())
            if isinstance(exc, TimeoutError):
                self._metrics.db_connection_errors.inc()
                raise StorageError("timed out waiting for a storage connection") from None
            raise

    def _release(self, conn: sqlite3.Connection) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(conn)  # stays checked out, now by the waiter
                return
        self._free.append(conn)
        self._in_use -= 1
        self._metrics.db_pool_in_use.set(self._in_use)

    async def check(self) -> None:
        """Readiness: a connection answers and the database file is still there."""
        await self.run(ping)
        if self.path != ":memory:" and not os.path.exists(self.path):
            self._metrics.db_connection_errors.inc()
            raise StorageError(f"database file {self.path} is missing")

    async def run(self, fn: Callable[..., T], *args: Any, exempt: bool = False) -> T:
        """Run ``fn(conn, *args)`` on a pool thread. ``exempt``: not subject to storage faults
        (the admin API: a rollback must work while the release is broken)."""
        conn = await self._acquire(exempt)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn, *args)
        except sqlite3.OperationalError as exc:  # locked, I/O error, disk full...
            self._metrics.db_connection_errors.inc()
            raise StorageError(f"storage error: {exc}") from exc
        finally:
            self._release(conn)


# ---------------------------------------------------------------------------------------------
# Queries: plain functions run on a pool thread with a checked-out connection.


def load_or_create_secret(conn: sqlite3.Connection) -> str:
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='jwt_secret'").fetchone()
        if row is None:
            secret = secrets.token_urlsafe(48)
            conn.execute("INSERT INTO meta (key, value) VALUES ('jwt_secret', ?)", (secret,))
        else:
            secret = row[0]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return secret


def _release_rows(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT release, faults, deployed_at FROM releases WHERE rolled_back_at IS NULL"
        " ORDER BY seq"
    ).fetchall()
    return [{"release": r, "faults": orjson.loads(f), "deployedAt": d} for r, f, d in rows]


def record_deploy(
    conn: sqlite3.Connection, release: str, faults: dict, previous: str | None
) -> list[dict[str, Any]]:
    """Record that ``release`` now runs (a restart of the current release only updates its
    faults); with an empty history, ``previous`` is recorded first. Returns the history."""
    now = iso_ts()
    conn.execute("BEGIN IMMEDIATE")
    try:
        history = _release_rows(conn)
        if not history and previous and previous != release:
            conn.execute(
                "INSERT INTO releases (release, faults, deployed_at) VALUES (?, '{}', ?)",
                (previous, now),
            )
        if history and history[-1]["release"] == release:
            conn.execute(
                "UPDATE releases SET faults=? WHERE seq=(SELECT MAX(seq) FROM releases"
                " WHERE rolled_back_at IS NULL)",
                (orjson.dumps(faults).decode(),),
            )
        else:
            conn.execute(
                "INSERT INTO releases (release, faults, deployed_at) VALUES (?, ?, ?)",
                (release, orjson.dumps(faults).decode(), now),
            )
        history = _release_rows(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return history


def release_history(conn: sqlite3.Connection) -> tuple[list[dict], list[dict]]:
    """(history of deployed releases, the current one last; rolled-back releases)."""
    rolled = conn.execute(
        "SELECT release, deployed_at, rolled_back_at FROM releases"
        " WHERE rolled_back_at IS NOT NULL ORDER BY seq"
    ).fetchall()
    return _release_rows(conn), [
        {"release": r, "deployedAt": d, "rolledBackAt": b} for r, d, b in rolled
    ]


def rollback_release(conn: sqlite3.Connection) -> tuple[dict, dict] | None:
    """Mark the current release rolled back; (restored, rolled back) or None if no previous."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        history = _release_rows(conn)
        if len(history) < 2:
            conn.execute("ROLLBACK")
            return None
        conn.execute(
            "UPDATE releases SET rolled_back_at=? WHERE seq=(SELECT MAX(seq) FROM releases"
            " WHERE rolled_back_at IS NULL)",
            (iso_ts(),),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return history[-2], history[-1]


def ping(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1").fetchone()[0] == 1


def user_exists(conn: sqlite3.Connection, email: str) -> bool:
    return conn.execute("SELECT 1 FROM users WHERE email=?", (email,)).fetchone() is not None


def create_user(
    conn: sqlite3.Connection,
    email: str,
    name: str,
    password_hash: str,
    refresh_jti: str,
    refresh_exp: float,
) -> dict | None:
    """Insert a user and their first refresh token; None when the email exists."""
    now = iso_ts()
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "INSERT INTO users (email, name, password_hash, created_at) VALUES (?, ?, ?, ?)",
            (email, name, password_hash, now),
        )
        user_id = cur.lastrowid
        conn.execute(
            "INSERT INTO refresh_tokens (jti, user_id, expires_at) VALUES (?, ?, ?)",
            (refresh_jti, user_id, refresh_exp),
        )
        conn.execute("COMMIT")
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK")
        return None
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return {"id": user_id, "email": email, "name": name, "createdAt": now}


def get_user_by_email(conn: sqlite3.Connection, email: str) -> tuple | None:
    return conn.execute(
        "SELECT id, email, name, password_hash, created_at FROM users WHERE email=?", (email,)
    ).fetchone()


def add_refresh_token(conn: sqlite3.Connection, jti: str, user_id: int, exp: float) -> None:
    conn.execute(
        "INSERT INTO refresh_tokens (jti, user_id, expires_at) VALUES (?, ?, ?)",
        (jti, user_id, exp),
    )


def rotate_refresh_token(
    conn: sqlite3.Connection, old_jti: str, user_id: int, new_jti: str, new_exp: float
) -> bool:
    """Mark the old refresh token used and store the new one; False if it was not valid."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "UPDATE refresh_tokens SET used=1 WHERE jti=? AND user_id=? AND used=0"
            " AND expires_at>?",
            (old_jti, user_id, time.time()),
        )
        if cur.rowcount != 1:
            conn.execute("ROLLBACK")
            return False
        conn.execute(
            "INSERT INTO refresh_tokens (jti, user_id, expires_at) VALUES (?, ?, ?)",
            (new_jti, user_id, new_exp),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def purge_expired_refresh_tokens(conn: sqlite3.Connection) -> int:
    return conn.execute(
        "DELETE FROM refresh_tokens WHERE expires_at<?", (time.time() - 60,)
    ).rowcount


def create_session(
    conn: sqlite3.Connection, user_id: int, session_id: str, state: bytes
) -> str | None:
    """Insert a session at version 1; returns createdAt, or None when the id exists."""
    now = iso_ts()
    try:
        conn.execute(
            "INSERT INTO sessions (user_id, session_id, state, version, created_at, updated_at)"
            " VALUES (?, ?, ?, 1, ?, ?)",
            (user_id, session_id, state, now, now),
        )
    except sqlite3.IntegrityError:
        return None
    return now


def get_session(conn: sqlite3.Connection, user_id: int, session_id: str) -> tuple | None:
    """(state bytes, version, active_device_id, updated_at) or None."""
    return conn.execute(
        "SELECT state, version, active_device_id, updated_at FROM sessions"
        " WHERE user_id=? AND session_id=?",
        (user_id, session_id),
    ).fetchone()


def session_exists(conn: sqlite3.Connection, user_id: int, session_id: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM sessions WHERE user_id=? AND session_id=?", (user_id, session_id)
        ).fetchone()
        is not None
    )


def replace_state(
    conn: sqlite3.Connection, user_id: int, session_id: str, state: bytes
) -> tuple[int, str] | None:
    """Replace the state, version + 1; (version, updatedAt) or None when not found."""
    now = iso_ts()
    row = conn.execute(
        "UPDATE sessions SET state=?, version=version+1, updated_at=?"
        " WHERE user_id=? AND session_id=? RETURNING version",
        (state, now, user_id, session_id),
    ).fetchone()
    return None if row is None else (row[0], now)


def create_snapshot(
    conn: sqlite3.Connection,
    user_id: int,
    session_id: str,
    state: bytes,
    metadata: bytes,
) -> tuple[str, int, str] | None:
    """Store a snapshot at the session's current version; (id, version, createdAt) or None."""
    row = conn.execute(
        "SELECT version FROM sessions WHERE user_id=? AND session_id=?", (user_id, session_id)
    ).fetchone()
    if row is None:
        return None
    snapshot_id = str(uuid.uuid4())
    now = iso_ts()
    conn.execute(
        "INSERT INTO snapshots (id, user_id, session_id, version, state, metadata, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (snapshot_id, user_id, session_id, row[0], state, metadata, now),
    )
    return snapshot_id, row[0], now


def list_devices(
    conn: sqlite3.Connection, user_id: int, session_id: str
) -> tuple[str | None, list[tuple[str, str]]] | None:
    """(active_device_id, [(device_id, last_seen)]) or None when the session is not found."""
    row = conn.execute(
        "SELECT active_device_id FROM sessions WHERE user_id=? AND session_id=?",
        (user_id, session_id),
    ).fetchone()
    if row is None:
        return None
    devices = conn.execute(
        "SELECT device_id, last_seen FROM devices WHERE user_id=? AND session_id=?"
        " ORDER BY device_id",
        (user_id, session_id),
    ).fetchall()
    return row[0], devices


_UPSERT_DEVICE = (
    "INSERT INTO devices (user_id, session_id, device_id, last_seen) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (user_id, session_id, device_id) DO UPDATE SET last_seen=excluded.last_seen"
)


def join_device(conn: sqlite3.Connection, user_id: int, session_id: str, device_id: str) -> bool:
    """Add the device to the session's device list; False when the session is not found."""
    if not session_exists(conn, user_id, session_id):
        return False
    conn.execute(_UPSERT_DEVICE, (user_id, session_id, device_id, iso_ts()))
    return True


def handoff(
    conn: sqlite3.Connection, user_id: int, session_id: str, from_device: str, to_device: str
) -> tuple[str, str | None]:
    """('ok'|'not_found'|'conflict', active device after the call)."""
    now = iso_ts()
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT active_device_id FROM sessions WHERE user_id=? AND session_id=?",
            (user_id, session_id),
        ).fetchone()
        if row is None:
            conn.execute("ROLLBACK")
            return "not_found", None
        active = row[0]
        if active is not None and active != from_device:
            conn.execute("ROLLBACK")
            return "conflict", active
        conn.execute(
            "UPDATE sessions SET active_device_id=?, updated_at=? WHERE user_id=? AND session_id=?",
            (to_device, now, user_id, session_id),
        )
        conn.executemany(
            _UPSERT_DEVICE,
            [(user_id, session_id, d, now) for d in dict.fromkeys((from_device, to_device))],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return "ok", to_device


MAX_PATCH_OPERATIONS = 100


def patch_state(state: bytes, operations: Any, max_state_bytes: int) -> bytes:
    """Apply a JSON Patch (RFC 6902) to a stored state; raise ValueError and friends if bad.

    Operations are applied one by one so that 'copy' cannot blow the document up
    exponentially before the size check sees it.
    """
    if not isinstance(operations, list):
        raise ValueError("operations must be a list")
    if len(operations) > MAX_PATCH_OPERATIONS:
        raise ValueError(f"at most {MAX_PATCH_OPERATIONS} operations per update")
    doc = orjson.loads(state)
    for op in operations:
        doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
        is_copy = isinstance(op, dict) and op.get("op") == "copy"
        if is_copy and len(orjson.dumps(doc)) > max_state_bytes:
            raise ValueError("state too large")
    if not isinstance(doc, dict):
        raise ValueError("the state must remain a JSON object")
    new_state = orjson.dumps(doc)
    if len(new_state) > max_state_bytes:
        raise ValueError("state too large")
    return new_state


def apply_delta(
    conn: sqlite3.Connection,
    user_id: int,
    session_id: str,
    device_id: str,
    operations: list,
    expected_version: int,
    max_state_bytes: int,
) -> tuple[str, Any]:
    """Apply a JSON Patch atomically if the version matches.

    Returns ('ok', new_version), ('conflict', current_version), ('not_found', None) or
    ('invalid_patch', reason). Optimistic: the patch is computed outside any lock and the write
    only succeeds if the version is still the expected one.
    """
    row = conn.execute(
        "SELECT state, version FROM sessions WHERE user_id=? AND session_id=?",
        (user_id, session_id),
    ).fetchone()
    if row is None:
        return "not_found", None
    if row[1] != expected_version:
        return "conflict", row[1]
    try:
        new_state = patch_state(row[0], operations, max_state_bytes)
    except Exception as exc:  # JsonPatchException, JsonPointerException, TypeError, ...
        return "invalid_patch", str(exc)[:200] or type(exc).__name__
    now = iso_ts()
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "UPDATE sessions SET state=?, version=version+1, updated_at=?"
            " WHERE user_id=? AND session_id=? AND version=?",
            (new_state, now, user_id, session_id, expected_version),
        )
        if cur.rowcount != 1:
            conn.execute("ROLLBACK")
            current = conn.execute(
                "SELECT version FROM sessions WHERE user_id=? AND session_id=?",
                (user_id, session_id),
            ).fetchone()
            if current is None:
                return "not_found", None
            return "conflict", current[0]
        conn.execute(_UPSERT_DEVICE, (user_id, session_id, device_id, now))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return "ok", expected_version + 1
