"""The run folder read into what a person watches (loadgate.run.watch, loadgate.run.live), against
a real run folder: the DAG's steps without Airflow, two stages of two shards each against the
real reference service, followed live while the first stage runs."""

from __future__ import annotations

import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from loadgate import pipeline
from loadgate.backends.local import run_stage_local
from loadgate.config.run import build_run_config
from loadgate.engine.results import META, WINDOWS
from loadgate.notify import Notifier
from loadgate.run import folder, gate
from loadgate.run.live import Interval, StageTail, intervals
from loadgate.run.records import Checklist, Report
from loadgate.run.watch import (
    RunWatch,
    abort_line,
    find_run,
    interval_line,
    seeding_line,
)
from syncbridge.launcher import start_syncbridge
from tests.support.helpers import reference_run

pytestmark = pytest.mark.slow
PROGRESS = re.compile(r"^  (\S+)\s+(\d+) s │ VUs\s+(\d+)/(\d+) │")


@dataclass
class Watched:
    root: Path
    live: list[str]  # what a watcher printed, polling while the run went on
    during_api: list[str]  # of which: printed while the api stage's load still ran


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Watched:
    """A gated run of the api and websocket stages (2 shards each, 20 users, the schedule at
    0.006), with a :class:`RunWatch` polling its folder from the start."""
    tmp = tmp_path_factory.mktemp("watch")
    svc = start_syncbridge(tmp / "svc")
    try:
        config = build_run_config(
            {
                **reference_run(),
                "target_url": svc.url,
                "release": "v1",
                "scale": 0.002,
                "time_scale": 0.006,
                "stages": ["api", "websocket"],
                "shards": 2,
                "artifacts_root": str(tmp / "artifacts"),
                "target_log": str(svc.log_path),
                "rollback": {"type": "command", "command": ["true"]},
            },
            allowlist=[],
        )
        run = folder.Run(pipeline.prepare(config, "manual__2026-01-01T00:00:00+00:00"))
        watch = RunWatch(Path(str(run.artifacts.root)))
        live = watch.poll()
        pipeline.run_checklist(run, notifier=Notifier(run.artifacts, None), rollback_secret=None)
        live += watch.poll()
        pipeline.seed(run, secret="watch-test")
        live += watch.poll()
        load = threading.Thread(target=run_stage_local, args=(run, "api", lambda line: None))
        load.start()
        during: list[str] = []
        while load.is_alive():
            during += watch.poll()
            time.sleep(0.2)
        load.join()
        live += during
        for stage in ("api", "websocket"):
            if stage != "api":
                run_stage_local(run, stage, lambda line: None)
            live += watch.poll()
            gate.decide(run, stage)
            live += watch.poll()
        pipeline.make_report(run)
        live += watch.poll()
        live += watch.poll(final=True)
        return Watched(Path(str(run.artifacts.root)), live, during)
    finally:
        svc.stop()


def progress(lines: list[str], stage: str) -> list[tuple[int, int, int]]:
    """(second, VUs, peak) of each progress line of ``stage``."""
    out = []
    for line in lines:
        m = PROGRESS.match(line)
        if m and m.group(1) == stage:
            out.append((int(m.group(2)), int(m.group(3)), int(m.group(4))))
    return out


def test_a_stage_is_reported_while_its_load_runs(watched: Watched) -> None:
    assert "stage api: load started, 2 shard(s), up to 20 users" in watched.during_api
    during = progress(watched.during_api, "api")
    assert len(during) >= 2, watched.during_api  # the stage runs ~16 s: a line each 5 s
    seconds = [s for s, _, _ in during]  # every 5 s of the stage, the last as long as it ran
    assert seconds[:-1] == list(range(5, 5 * len(during) - 4, 5))
    assert 0 < seconds[-1] - seconds[-2] <= 5
    assert not any(line.startswith("gate api") for line in watched.during_api)


def test_each_line_once_in_the_run_order_and_a_replay_says_the_same(watched: Watched) -> None:
    assert len(set(watched.live)) == len(watched.live) - watched.live.count("")
    heads = [
        next(i for i, line in enumerate(watched.live) if line.startswith(head))
        for head in (
            "run manual__",
            "pre-test checklist:",
            "seeding users:",
            "stage api: load started",
            "gate api:",
            "stage websocket: load started",
            "gate websocket:",
            "verdict:",
            "report:",
        )
    ]
    assert heads == sorted(heads)
    # a finished run folder read in one look: the same story as followed live
    replay = RunWatch(watched.root)
    assert replay.poll() + replay.poll(final=True) == watched.live
    assert replay.poll() == [] and replay.poll(final=True) == []


def test_the_lines_say_what_the_records_hold(watched: Watched) -> None:
    text = "\n".join(watched.live)
    checklist = Checklist.model_validate_json((watched.root / "checklist.json").read_bytes())
    for item in checklist.root:
        assert re.search(rf"^  (ok  |warn|FAIL)  {re.escape(item.item)}", text, re.M), item
    assert "checklist: passed" in text
    assert "seeding users: 20 / 20 ready in" in text
    report = Report.model_validate_json((watched.root / "report.json").read_bytes())
    for stage in ("api", "websocket"):
        decided = folder.Run(orjson.loads((watched.root / "run.json").read_bytes())).gate(stage)
        assert decided is not None and decided.summary is not None
        assert f"gate {stage}: {decided.verdict.upper()}" in text
        lines = progress(watched.live, stage)
        assert lines and all(vus <= peak == 20 for _, vus, peak in lines)
        assert max(vus for _, vus, _ in lines) > 0
        assert lines[-1][0] == pytest.approx(decided.summary.duration_s, abs=2)
    assert f"verdict: {report.verdict.upper()} (release v1)" in text
    assert f"report: {watched.root / 'report.html'}" in text
    ws = [line for line in watched.live if line.startswith("  websocket")]
    assert any(re.search(r"│ [1-9]\d* connections │ .* msg/s │ RTT p95 \d", line) for line in ws)


def test_the_intervals_count_every_request_of_the_stage_once(watched: Watched) -> None:
    decided = folder.Run(orjson.loads((watched.root / "run.json").read_bytes())).gate("api")
    assert decided is not None and decided.summary is not None
    tail = StageTail(watched.root / "stages" / "api", shards=2)
    found = tail.poll()
    assert tail.done and found
    assert sum(i.requests for i in found) == decided.summary.requests
    assert sum(i.failed for i in found) == decided.summary.failed
    assert [i.start_s for i in found] == list(range(0, 5 * len(found), 5))
    assert all(i.p95_ms is not None and i.p95_ms > 0 for i in found if i.requests)


def copy_shard(source: Path, target: Path, lines: int | None) -> None:
    """A shard folder as it was while running: its first ``lines`` windows, no end yet."""
    target.mkdir(parents=True, exist_ok=True)
    meta = orjson.loads((source / META).read_bytes())
    windows = (source / WINDOWS).read_bytes().splitlines(keepends=True)
    if lines is not None:
        meta["ended_at"] = None
        windows = windows[:lines]
    (target / META).write_bytes(orjson.dumps(meta))
    (target / WINDOWS).write_bytes(b"".join(windows))


def seconds_of(shard: Path) -> list[int]:
    """The seconds a shard folder's whole windows cover (a partial last line is not one)."""
    lines = (shard / WINDOWS).read_bytes().split(b"\n")[:-1]
    return [int(orjson.loads(line)["t"]) for line in lines]


def complete_ends(live: Path, first_t: int, after: int = 0, every: int = 5) -> list[int]:
    """The ends (seconds from the stage's first) of the intervals every running shard has
    written whole, after ``after``: what the tail may report (shards on this machine start a
    second or so apart, so this is read from what they wrote, not assumed)."""
    running = [
        d
        for d in sorted(live.glob("shard-*"))
        if not orjson.loads((d / META).read_bytes()).get("ended_at")
    ]
    horizon = min(max(seconds_of(d)) for d in running)
    whole = (horizon + 1 - first_t) // every
    return [every * (k + 1) for k in range(whole) if every * (k + 1) > after]


def test_a_second_is_reported_once_every_shard_has_written_it(watched, tmp_path) -> None:
    stage = watched.root / "stages" / "api"
    whole = StageTail(stage, shards=2).poll()
    live = tmp_path / "api"
    # shard 1 has not started yet: nothing can be said
    copy_shard(stage / "shard-0", live / "shard-0", 9)
    tail = StageTail(live, shards=2)
    assert tail.poll() == []
    # shard 1 is 3 windows behind shard 0: only what both have written
    copy_shard(stage / "shard-1", live / "shard-1", 6)
    first_t = min(seconds_of(live / "shard-0") + seconds_of(live / "shard-1"))
    first = tail.poll()
    expected = complete_ends(live, first_t)
    assert expected and [i.end_s for i in first] == expected
    assert tail.poll() == []  # nothing new
    # a partial line (a window being written) waits for its end
    full = (stage / "shard-1" / WINDOWS).read_bytes().splitlines(keepends=True)
    with (live / "shard-1" / WINDOWS).open("ab") as f:
        f.write(b"".join(full[6:12]) + full[12][:40])
    # (shard 1 may have started seconds after shard 0: these windows can complete an interval)
    partial = tail.poll()
    assert [i.end_s for i in partial] == complete_ends(live, first_t, after=expected[-1])
    reported = max([expected[-1], *complete_ends(live, first_t)])
    copy_shard(stage / "shard-0", live / "shard-0", None)  # shard 0 ended
    second = tail.poll()
    assert [i.end_s for i in second] == complete_ends(live, first_t, after=reported)
    shutil.copy(stage / "shard-1" / WINDOWS, live / "shard-1" / WINDOWS)
    shutil.copy(stage / "shard-1" / META, live / "shard-1" / META)
    rest = tail.poll()
    assert tail.done
    assert first + partial + second + rest == whole


def test_a_stage_that_ends_early_reports_what_it_has(watched, tmp_path) -> None:
    stage = watched.root / "stages" / "api"
    live = tmp_path / "api"
    copy_shard(stage / "shard-0", live / "shard-0", 7)
    copy_shard(stage / "shard-1", live / "shard-1", 7)
    first_t = min(seconds_of(live / "shard-0") + seconds_of(live / "shard-1"))
    last_t = max(seconds_of(live / "shard-0") + seconds_of(live / "shard-1"))
    tail = StageTail(live, shards=2)
    ends = complete_ends(live, first_t)
    assert [i.end_s for i in tail.poll()] == ends
    last = tail.poll(ended=True)  # e.g. its gate decided: the shards were stopped
    assert last and tail.done
    assert last[0].start_s == (ends[-1] if ends else 0) and last[-1].end_s == last_t + 1 - first_t
    records = {
        name: [orjson.loads(x) for x in (live / name / WINDOWS).read_bytes().splitlines()]
        for name in ("shard-0", "shard-1")
    }
    assert intervals(records, first_t, last_t + 1, 5)[-1].requests == last[-1].requests


def test_find_run_finds_the_run_of_the_target_and_no_earlier_one(watched) -> None:
    artifacts = watched.root.parent
    url = orjson.loads((watched.root / "run.json").read_bytes())["config"]["target_url"]
    assert find_run(artifacts, url, set()) == watched.root
    assert find_run(artifacts, url, {watched.root.name}) is None
    assert find_run(artifacts, "http://127.0.0.1:9", set()) is None
    assert find_run(artifacts / "none", url, set()) is None


def test_seeding_progress_holds_counts_only(watched) -> None:
    counts = orjson.loads((watched.root / "seeding.progress.json").read_bytes())
    assert counts == {"requested": 20, "ready": 20, "failed": 0}
    assert seeding_line(counts) == "seeding users: 20 / 20 ready"


def test_lines_of_one_figure_each() -> None:
    figures = Interval(
        start_s=10,
        end_s=15,
        vus=12,
        requests=50,
        failed=5,
        p95_ms=123.4,
        ws_open=0,
        ws_messages=0,
        ws_errors=0,
        rtt_p95_ms=None,
    )
    assert interval_line("api", figures, peak=20, http=True, ws=False) == (
        "  api          15 s │ VUs   12/20 │   10.0 req/s │ p95  123 ms │ errors 5 (10.0%)"
    )
    ws = Interval(15, 20, 30, 0, 0, None, 30, 40, 1, 4.25)
    assert interval_line("websocket", ws, peak=30, http=True, ws=True) == (
        "  websocket    20 s │ VUs   30/30 │ 30 connections │ 8.0 msg/s │ RTT p95 4.2 ms │ errors 1"
    )
    marker = {"criterion": "error-rate-rollback", "observed": 0.2, "at_s": 24.6, "shard": "1/2"}
    assert abort_line("api", marker) == (
        "  api: stopped at 25 s by error-rate-rollback (observed 0.2) on shard 1/2: "
        "every shard stops"
    )
