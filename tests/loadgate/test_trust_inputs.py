"""Inputs that decide where things are written or how long things wait get a clear answer
before anything happens: one run folder per run id; every numeric option of the ``loadgate``
command checked by argparse before a file is created or a request sent."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgate.cli import build_parser, main
from loadgate.run.artifacts import MAX_SLUG, RunArtifacts, safe_name
from tests.support.helpers import run_stage_args

from .conftest import PLAN_FILE  # type: ignore[misc]

# --- run folders ----------------------------------------------------------------------------


def test_two_run_ids_never_share_a_folder(tmp_path) -> None:
    a = RunArtifacts(tmp_path, "manual__2026-01-01T00:00:00+00:00")
    b = RunArtifacts(tmp_path, "manual__2026-01-01T00-00-00-00-00")
    assert a.root != b.root
    a.write_json("run.json", {"run": "a"})
    assert b.read_json("run.json") is None
    # readable names: a safe id is its own folder, an Airflow id its slug plus a short hash
    assert b.root.name == "manual__2026-01-01T00-00-00-00-00"
    assert re.fullmatch(r"manual__2026-01-01T00-00-00-00-00~[0-9a-f]{12}", a.root.name)


@pytest.mark.parametrize("run_id", ["r1", "scheduled__2026-01-01", "a.b=c_d-e"])
def test_a_safe_run_id_keeps_its_name(run_id: str) -> None:
    assert safe_name(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", "..", "::", "-."])
def test_an_id_without_a_name_is_refused(run_id: str) -> None:
    with pytest.raises(ValueError, match="empty folder name"):
        safe_name(run_id)


def _name_or_none(run_id: str) -> str | None:
    try:
        return safe_name(run_id)
    except ValueError:
        return None


IDS = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="abc:+-._~T0", max_size=20),
    st.from_regex(r"manual__20\d\d-0\d-0\dT0\d[:-]00[:-]00[+-]00[:-]00", fullmatch=True),
)


@settings(max_examples=500, deadline=None)
@given(a=IDS, b=IDS)
def test_folder_names_are_unique_per_run_id_and_safe(a: str, b: str) -> None:
    x, y = _name_or_none(a), _name_or_none(b)
    for name in (x, y):
        if name is not None:
            assert re.fullmatch(r"[A-Za-z0-9._=~-]+", name) and name not in (".", "..")
            assert name[0] not in "-." and len(name) <= MAX_SLUG + 13
    if a != b and x is not None:
        assert x != y


# --- numeric options of the loadgate command --------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that accepts connections and tells whether one came."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


BAD_OPTIONS = [
    ("seed", "--concurrency", "0", "from 1 to 10,000"),
    ("seed", "--concurrency", "-3", "from 1 to 10,000"),
    ("seed", "--concurrency", "20000", "from 1 to 10,000"),
    ("seed", "--concurrency", "nan", "not a whole number"),
    ("seed", "--count", "0", "from 1 to 1,000,000"),
    ("seed", "--count", "1.5", "not a whole number"),
    ("seed", "--count", "10000000", "from 1 to 1,000,000"),
    ("run-stage", "--term-grace", "nan", "finite"),
    ("run-stage", "--term-grace", "inf", "finite"),
    ("run-stage", "--term-grace", "-1", "0 to 3600 seconds"),
    ("run-stage", "--term-grace", "1e9", "0 to 3600 seconds"),
    ("run-stage", "--request-timeout", "0", "more than 0 to 3600 seconds"),
    ("run-stage", "--request-timeout", "NaN", "finite"),
    ("run-stage", "--upload-every", "-inf", "finite"),
    ("run-stage", "--upload-every", "0", "more than 0 to 3600 seconds"),
    ("run-stage", "--scale", "nan", "finite"),
    ("run-stage", "--scale", "0", "positive"),
    ("run-stage", "--time-scale", "inf", "finite"),
    ("run-stage", "--time-scale", "-1", "positive"),
    ("run-stage", "--shard", "2/2", "out of range"),
    ("run-stage", "--shard", "0/0", "at least 1"),
    ("history", "--limit", "0", "from 1 to"),
    ("history", "--limit", "x", "not a whole number"),
]


def _argv(command: str, option: str, value: str, target: str, out: Path) -> list[str]:
    if command == "seed":
        base = ["seed", "--target", target, "--count", "3", "--out", str(out / "u.jsonl")]
    elif command == "run-stage":  # a dry run: were the number taken, still nothing is sent
        base = run_stage_args(PLAN_FILE, "api", target, out / "shard-0", dry_run=True)
    else:
        base = ["history", "some-key", "--root", str(out)]
    return [*base, f"{option}={value}"]


@pytest.mark.timeout(60)  # were a number taken, seeding would wait on the silent listener
@pytest.mark.parametrize(("command", "option", "value", "problem"), BAD_OPTIONS)
def test_a_bad_number_is_an_argparse_error_before_anything_happens(
    command: str, option: str, value: str, problem: str, listener, tmp_path, capsys
) -> None:
    target = f"http://127.0.0.1:{listener.getsockname()[1]}"
    with pytest.raises(SystemExit) as exit_:
        main(_argv(command, option, value, target, tmp_path))
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"argument {option}" in err and problem in err, err
    assert list(tmp_path.iterdir()) == []  # nothing created
    assert _connections(listener) == 0  # nothing sent


def test_seed_with_no_concurrency_says_so_and_leaves_nothing(listener, tmp_path) -> None:
    target = f"http://127.0.0.1:{listener.getsockname()[1]}"
    proc = subprocess.run(
        [sys.executable, "-m", "loadgate", *_argv("seed", "--concurrency", "0", target, tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "argument --concurrency: must be a whole number from 1 to 10,000" in proc.stderr
    assert list(tmp_path.iterdir()) == [] and _connections(listener) == 0


@pytest.mark.parametrize(
    ("option", "value", "attr", "parsed"),
    [
        ("--term-grace", "0", "term_grace", 0.0),
        ("--term-grace", "3600", "term_grace", 3600.0),
        ("--request-timeout", "0.5", "request_timeout", 0.5),
        ("--upload-every", "2", "upload_every", 2.0),
        ("--scale", "0.001", "scale", 0.001),
    ],
)
def test_numbers_in_range_are_taken(option: str, value: str, attr: str, parsed: float) -> None:
    args = build_parser().parse_args(
        [*run_stage_args(PLAN_FILE, "api", "http://127.0.0.1:9", Path("o")), option, value]
    )
    assert getattr(args, attr) == parsed
    seed = build_parser().parse_args(
        [
            *("seed", "--target", "http://127.0.0.1:9", "--out", "u"),
            *("--count", "1000000", "--concurrency", "10000"),
        ]
    )
    assert (seed.count, seed.concurrency) == (1_000_000, 10_000)
