"""Run parameters: validated with clear errors before anything is sent."""

from __future__ import annotations

import pytest

from loadgate.config.run import RunConfigError, build_run_config, resolve_trigger
from tests.support.helpers import reference_run


def test_defaults_and_stage_order() -> None:
    config = build_run_config(
        reference_run(target_url="http://127.0.0.1:8080/", stages=["session", "api"])
    )
    assert config.target_url == "http://127.0.0.1:8080"
    assert config.stages == ["api", "session"]
    assert config.plan_path().name == "harmonyflow-10k.yaml"
    assert config.rollback is None  # no default action: the checklist fails without one


def test_deploy_event_fills_release_and_target() -> None:
    from loadgate.config.profiles import load_profiles

    profiles = load_profiles(
        {"shop": {"plan": "harmonyflow-10k", "allowlist": ["api.example.com"]}}
    )
    extra = {"release": "v42", "target_url": "https://api.example.com"}
    config = resolve_trigger(
        {"profile": "shop", "target_url": "", "release": ""}, profiles=profiles, asset_extra=extra
    )
    assert (config.release, config.target_url) == ("v42", "https://api.example.com")
    # what the trigger says wins over the event
    config = resolve_trigger(
        {"profile": "shop", "target_url": "http://127.0.0.1:1", "release": "v1"},
        profiles=profiles,
        asset_extra=extra,
    )
    assert config.release == "v1"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"target_url": "http://127.0.0.1:1", "scale": 0}, "scale"),
        ({"target_url": "http://127.0.0.1:1", "stages": []}, "stages"),
        ({"target_url": "http://127.0.0.1:1", "stages": ["soak"]}, "stages"),
        ({"target_url": "http://127.0.0.1:1", "backend": "ssh"}, "backend"),
        ({"target_url": "http://127.0.0.1:1", "plan": "no-such-plan"}, "known plans"),
        ({"target_url": "http://127.0.0.1:1", "rollback": {"type": "command"}}, "rollback"),
        ({"target_url": "http://127.0.0.1:1", "surprise": 1}, "surprise"),
        ({"target_url": "https://prod.example.com"}, "not on the allowlist"),
        ({"target_url": "not a url"}, "target URL"),
    ],
)
def test_bad_parameters_are_refused_clearly(params, message) -> None:
    with pytest.raises(RunConfigError, match=message):
        build_run_config(reference_run(**params), allowlist=[])


def test_a_stage_the_plan_does_not_have_is_named_with_the_plans_stages() -> None:
    with pytest.raises(RunConfigError) as caught:
        build_run_config(reference_run(target_url="http://127.0.0.1:1", stages=["api", "soak"]))
    assert str(caught.value) == (
        "invalid run parameters: stages: 'soak' not in plan 'harmonyflow-10k' "
        "(its stages: api, websocket, session)"
    )


def test_a_run_config_names_its_profile_and_plan() -> None:
    with pytest.raises(RunConfigError, match="profile: Field required; plan: Field required"):
        build_run_config({"target_url": "http://127.0.0.1:1"})
