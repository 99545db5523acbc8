"""The rollback actions' registry: one module an action, found by type; no default action."""

from __future__ import annotations

import json

import pytest
from pydantic import TypeAdapter, ValidationError

import loadgate_syncbridge.rollback
from loadgate import actions
from loadgate.actions import CORE, RollbackAction, command, kubernetes, parse_action, webhook
from loadgate.config.profiles import ProfileError, load_profiles
from loadgate.config.run import RunConfig
from loadgate.extensions import ACTIONS, declared
from loadgate.run import checklist as cl

KNOWN = "known types: command, kubernetes, syncbridge, webhook"
SHOP_RUN = {
    "profile": "shop",
    "plan": "harmonyflow-10k",
    "stages": ["api"],
    "target_url": "http://127.0.0.1:9",
}


def test_an_unknown_type_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=KNOWN):
        parse_action({"type": "ssh", "host": "x"})
    with pytest.raises(ValidationError, match=KNOWN):
        TypeAdapter(RollbackAction).validate_python({"type": "ssh"})
    with pytest.raises(ProfileError, match=f"profiles.shop.rollback: .*{KNOWN}"):
        load_profiles({"shop": {"plan": "harmonyflow-10k", "rollback": {"type": "ssh"}}})
    with pytest.raises(ValueError, match=f"needs a 'type' \\({KNOWN}"):
        parse_action({"command": ["true"]})


@pytest.mark.parametrize(
    ("module", "data", "message"),
    [
        (command, {"type": "command"}, "needs 'command'"),
        (command, {"type": "command", "command": ["x"], "url": "https://h/"}, "url"),
        (command, {"type": "webhook", "command": ["x"]}, "type"),
        (command, {"type": "command", "command": ["x"], "timeout_s": 0}, "timeout_s"),
        (webhook, {"type": "webhook"}, "needs 'url'"),
        (webhook, {"type": "webhook", "url": "not a url"}, "url"),
        (kubernetes, {"type": "kubernetes", "namespace": "x"}, "'namespace' and 'deployment'"),
        (kubernetes, {"type": "kubernetes", "command": ["x"]}, "command"),
    ],
)
def test_an_action_module_validates_its_own_settings(module, data, message) -> None:
    with pytest.raises(ValidationError, match=message):
        module.Config.model_validate(data)
    with pytest.raises(ValidationError, match=message):
        TypeAdapter(RollbackAction).validate_python(data)


def test_a_mapping_is_validated_by_its_type_s_config() -> None:
    found = parse_action({"type": "command", "command": ["true"], "timeout_s": 5})
    assert isinstance(found, command.Config) and found.timeout_s == 5
    hook = parse_action({"type": "webhook", "url": "https://deploy.example.com/x"})
    assert isinstance(hook, webhook.Config)
    assert parse_action(hook) is hook and parse_action(None) is None


def test_no_default_action_the_checklist_fails_before_any_load() -> None:
    profile = load_profiles({"shop": {"plan": "harmonyflow-10k"}})["shop"]
    assert profile.rollback is None
    config = RunConfig(**SHOP_RUN)
    assert config.rollback is None
    assert json.loads(config.model_dump_json())["rollback"] is None
    check = cl.check_rollback(None, "http://127.0.0.1:9", None)
    assert check.status == "fail" and check.required
    assert "no rollback action configured" in check.evidence
    assert "command, kubernetes, syncbridge, webhook" in check.evidence
    assert cl.failed_required([check]) == [check]


def test_the_record_keeps_each_action_s_own_settings() -> None:
    config = RunConfig(
        **SHOP_RUN,
        rollback={"type": "webhook", "url": "https://deploy.example.com/hooks/s3cr3t?t=1"},
    )
    record = json.loads(config.model_dump_json())
    assert record["rollback"] == {
        "type": "webhook",
        "timeout_s": 120.0,
        "verify_timeout_s": 60.0,
        "url": "https://deploy.example.com",
    }
    back = RunConfig.model_validate(record)
    assert isinstance(back.rollback, webhook.Config)
    kube = RunConfig(
        **SHOP_RUN,
        rollback={"type": "kubernetes", "namespace": "shop", "deployment": "api"},
    )
    assert RunConfig.model_validate(kube.model_dump(mode="json")) == kube


def test_the_example_s_action_is_found_through_its_entry_point() -> None:
    assert "syncbridge" not in CORE  # the core does not ship it
    assert declared(ACTIONS)["syncbridge"] == "loadgate_syncbridge.rollback"
    assert actions.action("syncbridge") is loadgate_syncbridge.rollback
    found = parse_action({"type": "syncbridge"})
    assert isinstance(found, loadgate_syncbridge.rollback.Config)


def test_a_package_cannot_replace_a_core_action(monkeypatch) -> None:
    monkeypatch.setattr(
        actions, "declared", lambda group: {"command": "shady.module", "extra": "x.y:action"}
    )
    actions.registered.cache_clear()
    try:
        assert actions.registered()["command"] == "loadgate.actions.command"
        assert actions.registered()["extra"] == "x.y:action"
    finally:
        actions.registered.cache_clear()
