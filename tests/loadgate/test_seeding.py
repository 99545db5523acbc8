"""Seeding registers users concurrently, logs existing ones in, and keeps credentials private."""

from __future__ import annotations

import asyncio
import stat

import pytest
import requests

from loadgate.run.seeding import (
    SeedingError,
    load_or_create_secret,
    password_for,
    read_users,
    seed_users,
)


def _register_count(url: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("syncbridge_http_requests_total{") and "/api/v1/auth/" in line:
            labels, value = line.rsplit(" ", 1)
            counts[labels] = counts.get(labels, 0) + float(value)
    return counts


def test_seeds_users_with_sessions_then_reruns_fast(start_syncbridge, tmp_path) -> None:
    svc = start_syncbridge(tmp_path / "svc")
    out = tmp_path / "run" / "users.jsonl"
    reports = []
    result = asyncio.run(
        seed_users(svc.url, 40, out, secret="s3cret", concurrency=8, progress=reports.append)
    )
    assert (result.registered, result.sessions_created, result.failed) == (40, 40, 0)
    assert reports and reports[-1].ready == 40
    users = read_users(out)
    assert [u["index"] for u in users] == list(range(40))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # each user reaches its own seeded session with its token
    u = users[7]
    r = requests.get(
        f"{svc.url}/api/v1/sessions/{u['sessionId']}",
        headers={"Authorization": f"Bearer {u['accessToken']}"},
        timeout=5,
    )
    assert r.status_code == 200
    # a rerun into the same file sends nothing
    before = _register_count(svc.url)
    again = asyncio.run(seed_users(svc.url, 40, out, secret="s3cret"))
    assert again.ready == 40 and again.registered == 0
    assert _register_count(svc.url) == before


def test_existing_users_log_in_instead(start_syncbridge, tmp_path) -> None:
    svc = start_syncbridge(tmp_path / "svc")
    asyncio.run(seed_users(svc.url, 10, tmp_path / "a.jsonl", secret="k"))
    # a new run (new users file) against the same target: same users, logged in
    result = asyncio.run(seed_users(svc.url, 12, tmp_path / "b.jsonl", secret="k"))
    assert (result.existing, result.registered, result.failed) == (10, 2, 0)
    assert len(read_users(tmp_path / "b.jsonl")) == 12


def test_wrong_secret_fails_clearly_and_keeps_what_was_seeded(start_syncbridge, tmp_path) -> None:
    svc = start_syncbridge(tmp_path / "svc")
    asyncio.run(seed_users(svc.url, 5, tmp_path / "a.jsonl", secret="k1"))
    with pytest.raises(SeedingError, match="could not be seeded"):
        asyncio.run(seed_users(svc.url, 8, tmp_path / "b.jsonl", secret="k2"))
    kept = read_users(tmp_path / "b.jsonl")
    assert [u["index"] for u in kept] == [5, 6, 7]


@pytest.mark.slow
def test_unreachable_target_is_an_error(tmp_path) -> None:
    with pytest.raises(SeedingError, match="3 of 3"):
        asyncio.run(seed_users("http://127.0.0.1:9", 3, tmp_path / "u.jsonl", secret="k"))


def test_passwords_are_stable_and_secret_is_private(tmp_path) -> None:
    assert password_for("a@x", "k") == password_for("a@x", "k") != password_for("a@x", "k2")
    path = tmp_path / ".seed-secret"
    first = load_or_create_secret(path)
    assert load_or_create_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_bad_counts_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="count must be at least 1"):
        asyncio.run(seed_users("http://127.0.0.1:9", 0, tmp_path / "u.jsonl", secret="k"))


def test_seed_command(start_syncbridge, tmp_path) -> None:
    import json
    import subprocess
    import sys

    svc = start_syncbridge(tmp_path / "svc")
    out = tmp_path / "users.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "loadgate",
        "seed",
        "--target",
        svc.url,
        "--count",
        "5",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ready"] == 5
    users = read_users(out)
    assert len(users) == 5
    assert not any(u["password"] in proc.stdout + proc.stderr for u in users)
    bad = subprocess.run(
        [*cmd[:5], "https://example.org", *cmd[6:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "not on the allowlist" in bad.stderr


def test_transient_errors_are_retried(start_syncbridge, tmp_path) -> None:
    svc = start_syncbridge(tmp_path / "svc", faults={"error_rate": 0.2})
    # 12 tries: a request failing all of them is 0.2**12 (never, in practice); with one try
    # (below) some of the ~60 requests fail all but certainly (1 - 0.8**60)
    result = asyncio.run(seed_users(svc.url, 30, tmp_path / "u.jsonl", secret="k", attempts=12))
    assert result.failed == 0 and result.ready == 30
    assert result.registered + result.existing == 30


def test_without_retries_a_faulty_service_fails_seeding_and_keeps_the_rest(
    start_syncbridge, tmp_path
) -> None:
    svc = start_syncbridge(tmp_path / "svc", faults={"error_rate": 0.2})
    out = tmp_path / "u.jsonl"
    with pytest.raises(SeedingError, match="could not be seeded") as info:
        asyncio.run(seed_users(svc.url, 30, out, secret="k", attempts=1))
    kept = read_users(out)
    assert 0 < len(kept) < 30
    assert f"{len(kept)} are ready in the users file" in str(info.value)


def test_attempts_must_be_positive(tmp_path) -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        asyncio.run(
            seed_users("http://127.0.0.1:9", 3, tmp_path / "u.jsonl", secret="k", attempts=0)
        )
