"""The reference service keeps its secrets to its owner: the database (its JWT signing key,
the password hashes) is 0600 in a 0700 folder it creates, and the admin token never rides on
the command line, where any user of the machine reads it (``ps``, /proc/<pid>/cmdline)."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from syncbridge.launcher import start_syncbridge as start
from tests.syncbridge.sbtestlib import Api

pytestmark = pytest.mark.timeout(60)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30):
    """``syncbridge serve`` that is expected to stop at once (a refused configuration)."""
    return subprocess.run(
        [sys.executable, "-m", "syncbridge", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
    )


def test_database_and_its_folder_are_private(tmp_path) -> None:
    before = mode(tmp_path)
    old = os.umask(0o022)  # the usual umask: files 0644 and folders 0755 unless asked
    try:
        svc = start(tmp_path / "work", db_path=tmp_path / "data" / "deeper" / "sb.db")
    finally:
        os.umask(old)
    try:
        api = Api(svc.url)
        api.register()  # something written: the WAL file exists
        db = svc.db_path
        assert mode(db) == 0o600
        assert mode(db.parent) == 0o700 and mode(db.parent.parent) == 0o700
        for suffix in ("-wal", "-shm"):
            extra = db.with_name(db.name + suffix)
            assert extra.exists(), suffix
            assert mode(extra) == 0o600, suffix
        with sqlite3.connect(db) as conn:  # the signing key is in there
            assert conn.execute("SELECT value FROM meta WHERE key='jwt_secret'").fetchone()
    finally:
        svc.stop()
    # the folder the database's folders were created in is left as it was
    assert mode(tmp_path) == before


def test_an_existing_world_readable_database_is_made_private(tmp_path) -> None:
    db = tmp_path / "sb.db"
    svc = start(tmp_path / "first", db_path=db)
    svc.stop()
    db.chmod(0o644)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    svc = start(shared, db_path=db)
    try:
        assert mode(db) == 0o600
        assert mode(shared) == 0o755  # an existing folder (maybe shared) is not changed
    finally:
        svc.stop()


def test_admin_token_on_the_command_line_is_refused(tmp_path) -> None:
    token = "cmdline-admin-token-123"
    proc = serve(tmp_path, "--db", f"sqlite:///{tmp_path}/x.db", "--admin-token", token)
    assert proc.returncode != 0
    assert "--admin-token is refused" in proc.stderr
    assert "SYNCBRIDGE_ADMIN_TOKEN" in proc.stderr and "--admin-token-file" in proc.stderr
    assert token not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.db").exists()  # refused before anything was created


def test_admin_token_from_a_file(tmp_path) -> None:
    token = "file-admin-token-456"
    token_file = tmp_path / "admin-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    svc = start(tmp_path, admin_token="", extra_args=["--admin-token-file", str(token_file)])
    try:
        api = Api(svc.url)
        assert api.get("/admin/faults", token=token).status_code == 200
        assert api.get("/admin/faults", token="wrong").status_code == 401
        cmdline = Path(f"/proc/{svc.proc.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline
    finally:
        svc.stop()


@pytest.mark.parametrize(("content", "message"), [(None, "No such file"), ("\n", "is empty")])
def test_a_missing_or_empty_token_file_is_a_clear_error(tmp_path, content, message) -> None:
    token_file = tmp_path / "admin-token"
    if content is not None:
        token_file.write_text(content)
    proc = serve(
        tmp_path, "--db", f"sqlite:///{tmp_path}/x.db", "--admin-token-file", str(token_file)
    )
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_the_launcher_passes_the_admin_token_outside_the_command_line(tmp_path) -> None:
    token = "launcher-admin-token-789"
    svc = start(tmp_path, admin_token=token)
    try:
        assert Api(svc.url).get("/admin/faults", token=token).status_code == 200
        assert token.encode() not in Path(f"/proc/{svc.proc.pid}/cmdline").read_bytes()
        assert all(token not in arg for arg in svc.args)
    finally:
        svc.stop()
