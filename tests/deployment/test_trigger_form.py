"""The trigger form of ``release_gate`` in a real browser, against a real API server.

A person reruns the gate from the UI: the form must open valid (every default validates, the
optional fields may stay empty), read in sections, and start the documented default run.
"""

from __future__ import annotations

import time

import pytest

from loadgate.config.profiles import TRIGGER_KEYS, shipped_profiles
from loadgate.config.run import RunConfig, resolve_trigger
from tests.support.airflow_server import DAG_ID
from tests.support.airflow_ui import (
    form_trigger_button,
    open_section,
    open_trigger_form,
    set_switch,
)
from tests.support.browser import save_screenshot

pytestmark = [pytest.mark.deployment, pytest.mark.browser, pytest.mark.slow]

SECTIONS = ["Target and release", "Load shape"]  # what a trigger may set; the rest is the profile's


def wait_for_run(airflow, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = airflow.dag_runs()
        if runs:
            return runs[0]
        time.sleep(0.5)
    raise AssertionError(f"no run of {DAG_ID} was created in {timeout:.0f} s")


def test_the_form_opens_valid_and_triggers_a_dry_run(airflow_ui, page) -> None:
    details = airflow_ui.api("GET", f"/dags/{DAG_ID}/details")
    details.raise_for_status()
    assert details.json()["dag_display_name"] == "Release gate"
    defaults = {name: p["value"] for name, p in details.json()["params"].items()}
    assert sorted(defaults) == sorted(TRIGGER_KEYS)
    assert airflow_ui.dag_runs() == []

    dialog = open_trigger_form(page, airflow_ui, DAG_ID)

    # opened as it is: no field invalid, the button enabled
    trigger = form_trigger_button(dialog)
    assert trigger.is_enabled(), "the form's Trigger button is disabled with the defaults"
    assert dialog.locator("[aria-invalid=true]").count() == 0
    text = dialog.inner_text()
    positions = [text.find(section) for section in SECTIONS]
    assert -1 not in positions and positions == sorted(positions), positions

    # every section's fields are shown, and none is marked invalid once visible
    for section in SECTIONS:
        open_section(dialog, section)
        assert dialog.locator("[aria-invalid=true]").count() == 0, section
    open_section(dialog, "Target and release")
    for optional in ("target_url", "release"):
        assert dialog.locator(f"input[name=element_{optional}]").input_value() == ""
    set_switch(dialog, "dry_run", True)
    shot = save_screenshot(dialog, "trigger-form")
    assert shot.stat().st_size > 10_000
    assert trigger.is_enabled()
    trigger.click()
    dialog.wait_for(state="hidden")

    run = wait_for_run(airflow_ui)
    conf = run["conf"]
    assert conf["dry_run"] is True
    for name, default in defaults.items():
        if name != "dry_run":
            assert conf.get(name) == default, (name, conf.get(name), default)
    # the run that conf starts is the documented default run, dry
    config = resolve_trigger(conf, profiles=shipped_profiles(), plan="harmonyflow-10k")
    assert config == RunConfig(
        profile="syncbridge",
        plan="harmonyflow-10k",
        target_url="http://127.0.0.1:8080",
        rollback={"type": "syncbridge"},
        stages=["api", "websocket", "session"],
        dry_run=True,
    )
