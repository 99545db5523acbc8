"""Artifacts, markers and the users file on a local folder and on S3 (a real S3 API on
loopback: moto's server mode)."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from upath import UPath

from loadgate.engine.abort import AbortMarker, read_marker, write_marker
from loadgate.engine.users import load_users
from loadgate.run.artifacts import RunArtifacts
from loadgate.run.seeding import load_or_create_secret, read_users, write_users
from loadgate.storage import as_path, create_exclusive, is_remote, remove_tree, write_atomic

RUN_ID = "manual__2026-05-01T10:00:00+00:00"


@pytest.mark.parametrize(
    ("location", "remote"),
    [
        ("s3://bucket/prefix", True),
        ("gs://bucket/x", True),
        ("artifacts", False),
        ("/abs/path", False),
        ("file:///tmp/x", False),
        (Path("s3:/bucket"), False),
        (UPath("s3://bucket/x"), True),
        (UPath("/tmp/x"), False),
    ],
)
def test_is_remote(location, remote) -> None:
    assert is_remote(location) is remote
    if not str(location).startswith("gs:"):  # (no gcsfs here)
        assert isinstance(as_path(location), UPath if remote else Path)


def test_run_artifacts_write_read_append_on_s3(s3) -> None:
    art = RunArtifacts(s3.url("runs"), RUN_ID)
    folder = "manual__2026-05-01T10-00-00-00-00~d741a5800a8d"  # readable, plus the id's hash
    assert not art.is_local and str(art.root) == s3.url("runs", folder)
    art.write_json("run.json", {"a": 1})
    assert art.read_json("run.json") == {"a": 1}
    assert art.read_json("missing.json", "default") == "default"
    for i in range(3):
        art.append_jsonl("timeline.jsonl", {"i": i})
    assert [r["i"] for r in art.read_jsonl("timeline.jsonl")] == [0, 1, 2]
    art.write_text("users.jsonl", '{"email": "u@x", "password": "p"}\n', private=True)
    assert art.ensure("logs", "pods").exists() or True  # a prefix: nothing to create
    prefix = f"runs/{folder}/"
    assert s3.keys(prefix) == [prefix + k for k in ("run.json", "timeline.jsonl", "users.jsonl")]
    assert s3.get(prefix + "timeline.jsonl").count(b"\n") == 3
    # a second reader (another task, another process) sees the objects: no stale listing
    other = RunArtifacts(s3.url("runs"), RUN_ID)
    assert sorted(p.name for p in other.root.iterdir()) == [
        "run.json",
        "timeline.jsonl",
        "users.jsonl",
    ]


def test_private_files_are_0600_locally(tmp_path: Path) -> None:
    art = RunArtifacts(tmp_path, RUN_ID)
    written = art.write_text("users.jsonl", "secret\n", private=True)
    assert stat.S_IMODE(Path(written).stat().st_mode) == 0o600
    write_atomic(tmp_path / "public.json", b"{}")
    assert stat.S_IMODE((tmp_path / "public.json").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


@pytest.mark.parametrize("where", ["local", "s3"])
def test_first_writer_wins_even_when_racing(where, tmp_path: Path, request) -> None:
    base = request.getfixturevalue("s3").url("stage") if where == "s3" else tmp_path / "stage"
    target = as_path(base) / "ABORT"
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        if create_exclusive(target, b'{"shard": "%d/8"}' % i):
            wins.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert read_marker(base) == {"shard": f"{wins[0]}/8"}
    assert not write_marker(base, {"shard": "late"})


def test_abort_marker_on_s3_polls_and_writes_from_threads(s3) -> None:
    stage = s3.url("runs", "r", "stages", "api")
    watcher, writer = AbortMarker(stage), AbortMarker(stage)
    watcher.start()
    assert watcher.remote and watcher.poll() is None
    writer.write({"criterion": "error-rate-rollback", "shard": "0/2"})
    writer.close()  # waits for the write
    assert s3.keys("runs/r/stages/api/") == ["runs/r/stages/api/ABORT"]
    for _ in range(50):
        if watcher.poll() is not None:
            break
        threading.Event().wait(0.1)
    assert watcher.poll() == {"criterion": "error-rate-rollback", "shard": "0/2"}
    watcher.close()


def test_a_store_that_does_not_answer_is_not_a_marker(s3_server, monkeypatch, tmp_path) -> None:
    for name, value in s3_server.env(str(tmp_path)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(OSError):
        read_marker(UPath("s3://no-such-bucket-here/stage", skip_instance_cache=True))


def test_users_file_and_seed_secret_on_s3(s3) -> None:
    users = as_path(s3.url("run", "users.jsonl"))
    write_users(users, [{"email": "a@x", "password": "p1", "index": 0}])
    assert read_users(users) == [{"email": "a@x", "password": "p1", "index": 0}]
    loaded = load_users(s3.url("run", "users.jsonl"))  # as the engine's --users reads it
    assert loaded == [{"email": "a@x", "password": "p1", "index": 0, "sessionId": "session-0"}]
    secret = load_or_create_secret(s3.url(".seed-secret"))
    assert load_or_create_secret(s3.url(".seed-secret")) == secret
    assert s3.get(".seed-secret").decode() == secret


def test_remove_tree(tmp_path: Path, s3) -> None:
    for base in (as_path(tmp_path / "stage"), as_path(s3.url("stage"))):
        write_atomic(base / "shard-0" / "meta.json", b"{}")
        write_atomic(base / "ABORT", b"{}")
        remove_tree(base)
        assert not base.exists()
        remove_tree(base)  # absent is fine
