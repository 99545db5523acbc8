"""The DAG run's end: ``finalize`` fails it for the verdicts a deploy pipeline must not take as a
pass, and the profile decides whether an invalid stage is one of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgate import pipeline
from loadgate.config.profiles import load_profiles
from loadgate.config.run import resolve_trigger
from loadgate.run import folder
from loadgate.run.records import StageGate
from tests.support.helpers import REFERENCE_PLAN

airflow = pytest.importorskip("airflow")
PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def _record(tmp_path, verdict: str, *, invalid_fails_run: bool = True) -> dict:
    profiles = load_profiles(
        {
            "t": {
                "plan": REFERENCE_PLAN,
                "artifacts_root": str(tmp_path / "artifacts"),
                "default_target": "http://127.0.0.1:9",
                "limits": {"invalid_fails_run": invalid_fails_run},
            }
        }
    )
    config = resolve_trigger(
        {"profile": "t", "stages": ["api"], "scale": 0.001, "time_scale": 0.01},
        profiles=profiles,
    )
    record = pipeline.prepare(config, "r1")
    run = folder.Run(record)
    run.artifacts.write_json("checklist.json", [])
    gate = StageGate(
        stage="api",
        attempt=1,
        attempts=[],
        verdict=verdict,
        reasons=["why"],
        criteria=[],
        summary=None,
    )
    run.artifacts.write_json("gates/api.json", gate.model_dump(mode="json"))
    return record.model_dump(mode="json")  # as the tasks pass it by XCom


@pytest.mark.parametrize(
    ("verdict", "invalid_fails_run", "fails"),
    [
        ("pass", True, False),
        ("investigate", True, False),
        ("rollback", True, True),
        ("error", False, True),
        ("invalid", True, True),
        ("invalid", False, False),  # the profile lets an invalid stage pass
    ],
)
def test_finalize_fails_the_run_as_the_verdict_and_profile_say(
    tmp_path, monkeypatch, verdict, invalid_fails_run, fails
) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))  # as Airflow puts its plugins folder
    from airflow.sdk.exceptions import AirflowFailException
    from loadgate_airflow import tasks

    record = _record(tmp_path, verdict, invalid_fails_run=invalid_fails_run)
    if fails:
        with pytest.raises(AirflowFailException, match=f"release verdict: {verdict}"):
            tasks.finalize.function(record)
    else:
        assert tasks.finalize.function(record) == verdict


def test_the_rollback_tasks_take_the_webhook_from_the_profile_the_record_holds_its_host(
    tmp_path, monkeypatch
) -> None:
    """run.json and XCom hold a webhook as scheme://host; the checklist and rollback tasks read
    the whole URL from the profile again, and no other task reads the profiles."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    from loadgate_airflow import settings, tasks

    url = "https://deploy.example.com/hooks/s3cr3t-path?token=abc"
    profiles = load_profiles(
        {
            "t": {
                "plan": REFERENCE_PLAN,
                "artifacts_root": str(tmp_path / "artifacts"),
                "default_target": "http://127.0.0.1:9",
                "rollback": {"type": "webhook", "url": url},
            }
        }
    )
    config = resolve_trigger({"profile": "t", "stages": ["api"]}, profiles=profiles)
    record = pipeline.prepare(config, "r1").model_dump(mode="json")
    assert (
        "s3cr3t" not in str(record)
        and "s3cr3t" not in (tmp_path / "artifacts").joinpath("r1", "run.json").read_text()
    )
    calls = []
    monkeypatch.setattr(settings, "profiles", lambda: calls.append(1) or profiles)
    assert str(tasks._run(record).config.rollback.url) == "https://deploy.example.com/"
    assert not calls  # a task that does not roll back never reads the profiles
    assert str(tasks._run(record, rollback_action=True).config.rollback.url) == url
