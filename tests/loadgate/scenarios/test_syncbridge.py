"""The seed's scenarios, from the real plan at a tiny scale, against the reference service."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from loadgate.engine.results import read_shard
from tests.support.helpers import run_stage_args

from ..conftest import (  # type: ignore[misc]
    PLAN_FILE,
    _post,
    api_counts,
    load_counts,
    loadgate,
    run_plan_stage,
    service_by_class,
    summarize_json,
    summary_counts,
    write_plan,
)

pytestmark = pytest.mark.slow


def _run(seeded, tmp_path, stage: str, scale: str, time_scale: str, options=None):
    """The real plan's ``stage`` (its scenarios' ``options`` updated, if given)."""
    before = api_counts(seeded.url)
    out = tmp_path / stage / "shard-0"
    if options is None:
        proc = run_plan_stage(seeded, stage, out, scale, time_scale, timeout=90, quiet=True)
    else:
        data = yaml.safe_load(PLAN_FILE.read_text())
        for scen in data["stages"][stage]["scenarios"].values():
            scen["options"] = {**scen.get("options", {}), **options}
        plan = write_plan(tmp_path, data)
        args = run_stage_args(plan, stage, seeded.url, out, users=seeded.users_file, quiet=True)
        proc = loadgate(*args, "--scale", scale, "--time-scale", time_scale, timeout=90)
    assert proc.returncode == 0, proc.stderr
    return summarize_json(out), load_counts(before, api_counts(seeded.url)), out


def test_websocket_stage(seeded, tmp_path) -> None:
    """10 connections (one every 0.1 s at this scale) held with heartbeats; the first one
    (1,000 of 10,000, scaled) sends state updates whose versions come from the acks. The
    time scale shortens the 15-minute hold to 5.4 s but never the plan's 30 s and 5 s
    intervals, so the test asks for a heartbeat and an update every 0.5 s."""
    pacing = {"heartbeat_interval": "0.5s", "state_update_interval": "0.5s"}
    summary, sent, out = _run(seeded, tmp_path, "websocket", "0.001", "0.006", pacing)
    ws = summary["ws"]
    assert ws["connects"] == 10 and ws["connect_failed"] == 0 and ws["max_connections"] == 10
    assert ws["errors"] == 0 and ws["closed_unexpected"] == 0
    assert ws["latency"]["heartbeat"]["count"] > 0
    assert ws["latency"]["state_ack"]["count"] > 0
    assert ws["messages_sent"] == ws["messages_received"]  # auth, heartbeats, updates: answered
    assert ws["rtt_p95_ms"] == ws["latency"]["heartbeat"]["p95_ms"]
    assert summary["checks"]["failed"] == 0
    assert sent[("GET", "/ws", "101")] == 10
    # the connection curve: all 10 open once the 0.6 s ramp is over, until the 6 s hold ends
    shard = read_shard(out)
    start = shard.meta["started_at"]
    held = [
        w["ws"]["ws_connections"]["open"]
        for w in shard.windows
        if 1.0 < w["t"] + 1 - start < 5.8 and "ws_connections" in w["ws"]
    ]
    assert len(held) >= 3 and set(held) == {10}
    assert summary_counts(summary) == service_by_class(
        {k: v for k, v in sent.items() if k[1] != "/ws"}
    )


def test_session_stage(seeded, tmp_path) -> None:
    """Session state (own sessions, 10 updates each, a snapshot) and handoff from 2 minutes."""
    summary, sent, out = _run(seeded, tmp_path, "session", "0.002", "0.006")
    assert summary["failed"] == 0 and summary["checks"]["failed"] == 0
    assert summary_counts(summary) == service_by_class(sent)
    by = summary["by_name"]
    # an iteration lasts 5 s and more at the plan's pacing (10 updates 0.5 s apart), so in the
    # 5.4 s played most VUs end one whole (a create, 10 updates, a snapshot) and a second one
    # is cut short by the graceful stop (0.18 s) before its snapshot
    creates = by["POST /api/v1/sessions"]["requests"]
    snapshots = by["POST /api/v1/sessions/{id}/snapshot"]["requests"]
    assert 0 < snapshots <= creates
    assert by["PUT /api/v1/sessions/{id}"]["requests"] >= 10 * snapshots
    assert by["POST /api/v1/sessions/{id}/handoff"]["requests"] > 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["scenarios"]["handoff"]["start_s"] == 0.72  # 2 minutes × 0.006
    assert summary["max_vus"] == 12  # 10 session-state VUs + 2 handoff VUs


def test_a_second_execution_with_the_same_users_file_is_not_failed_by_spent_refresh_tokens(
    seeded, tmp_path
) -> None:
    """The service rotates refresh tokens (one use each): the second execution of the API
    stage with the same users file (a re-run, a rerun from the UI) finds the file's refresh
    tokens spent. That 401 is the test's own state, not the release's failure: every VU
    refreshes on every iteration here, and neither execution has a failed request."""
    mix = {"mix": {"login": 0, "get_session": 0, "snapshot": 0, "devices": 0, "refresh": 1}}
    users = [json.loads(line) for line in seeded.users_file.read_text().splitlines()]
    for user in users:  # the users file as seeding writes it: with each user's tokens
        tokens = _post(
            f"{seeded.url}/api/v1/auth/login",
            {"email": user["email"], "password": user["password"]},
        )
        user.update(accessToken=tokens["accessToken"], refreshToken=tokens["refreshToken"])
    with_tokens = tmp_path / "users-with-tokens.jsonl"
    with_tokens.write_text("".join(json.dumps(u) + "\n" for u in users))
    seeded = dataclasses.replace(seeded, users_file=with_tokens)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, sent_first, _ = _run(seeded, tmp_path / "one", "api", "0.001", "0.003", mix)
    second, sent_second, _ = _run(seeded, tmp_path / "two", "api", "0.001", "0.003", mix)
    refresh = ("POST", "/api/v1/auth/refresh")
    assert first["failed"] == 0 and second["failed"] == 0, (first["by_name"], second["by_name"])
    login_ok = ("POST", "/api/v1/auth/login", "200")
    assert sent_first.get((*refresh, "401"), 0) == 0 and login_ok not in sent_first
    # each of the 10 VUs met its spent file token once, logged in and refreshed its own
    assert sent_second.get((*refresh, "401"), 0) == 10
    assert sent_second.get(login_ok, 0) == 10
    assert sent_second.get((*refresh, "200"), 0) > 10
