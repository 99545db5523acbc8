"""The Airflow UI as a person uses it, in Debian's Chromium, on ``make up``'s Airflow.

The module's one deployment is what ``make up`` starts (``loadgate_syncbridge.up``, run as a
person runs it, its state in the module's temp folder): the scheduler (LocalExecutor), the
dag-processor, the triggerer and the api-server on SQLite, with the reference service on
loopback, the ``syncbridge`` profile pointed at it. The first test checks what ``make up``
printed and that a second one starts nothing; the last, that ``make down`` leaves no process
or port (the fixture's ``down`` stops it too, also when a test failed). Only the tests that
open the browser skip where Chromium is absent.

A person reruns the gate from the UI: the form must open valid (every default validates, the
optional fields may stay empty), read in sections with each field's description, and start the
documented default run; the run ends, and its report is one click away (the **Report** tab,
``plugins/loadgate_airflow/report_view.py``), for signed-in users only.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from loadgate.config.profiles import TRIGGER_KEYS, shipped_profiles
from loadgate.config.run import RunConfig, resolve_trigger
from loadgate_syncbridge.up import port_free
from tests.support.airflow_server import DAG_ID
from tests.support.airflow_ui import (
    LocalUp,
    form_trigger_button,
    open_report_tab,
    open_run,
    open_section,
    open_trigger_form,
    set_switch,
    still_running,
)
from tests.support.browser import save_screenshot

pytestmark = [pytest.mark.deployment, pytest.mark.browser, pytest.mark.slow]

SECTIONS = ["Target and release", "Load shape"]  # what a trigger may set; the rest is the profile's
RUN_TIMEOUT_S = 300  # a dry run's ~30 tasks take about 90 s here


@pytest.fixture(scope="module")
def local_up(tmp_path_factory):
    """``make up``, once for the module (its output is ``outputs[0]``)."""
    up = LocalUp(tmp_path_factory.mktemp("make-up") / ".up")
    try:
        up.up()
        yield up
    finally:
        up.down()


def report_url(up: LocalUp, run_id: str, name: str = "") -> str:
    return f"{up.url}/loadgate/reports/{DAG_ID}/{run_id}" + (f"/{name}" if name else "")


def wait_for_run(up: LocalUp, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = up.dag_runs(DAG_ID)
        if runs:
            return runs[0]
        time.sleep(0.5)
    raise AssertionError(f"no run of {DAG_ID} was created in {timeout:.0f} s")


def wait_until_ended(up: LocalUp, run_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = up.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} had not ended after {timeout:.0f} s")


def form_descriptions(params: dict) -> dict[str, list[tuple[str, str]]]:
    """Each section's fields, as (param, the description a person reads) (Markdown ones as
    rendered: without their code marks)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    for name, param in params.items():
        schema = param.get("schema") or {}
        text = param.get("description") or schema.get("description_md") or ""
        sections.setdefault(schema.get("section"), []).append((name, text.replace("`", "")))
    return sections


def squashed(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_make_up_starts_once_and_prints_how_to_log_in(local_up) -> None:
    """First in the module, before any run starts a task process."""
    printed = local_up.outputs[0]
    url, service = local_up.url, local_up.service_url
    # what a person reads: where to go, who to log in as, where the password is (not it)
    assert url in printed and service in printed, printed
    assert "log in as admin" in printed
    assert str(local_up.passwords_file) in printed
    assert local_up.password not in printed
    assert "make down" in printed

    ui = requests.get(url, timeout=30)
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    dags = local_up.api("GET", "/dags").json()["dags"]
    assert DAG_ID in [d["dag_id"] for d in dags]
    health = requests.get(f"{url}/api/v2/monitor/health", timeout=30).json()
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health
    # the reference service the profile points at: release v1 over v0
    assert requests.get(f"{service}/healthz", timeout=10).json()["release"] == "v1"

    started = local_up.pids()
    assert len(started) >= 5, started  # 4 Airflow components and the service, and children
    again = local_up.up()
    assert "already running" in again and url in again
    assert local_up.pids() == started, "a second make up started processes"


def test_a_run_without_a_report_answers_a_short_page(local_up) -> None:
    """A run that has not been prepared (queued on the paused DAG) and a run that does not
    exist: a short page saying so, with 404, never a stack trace."""
    assert local_up.api("GET", f"/dags/{DAG_ID}").json()["is_paused"] is True
    created = local_up.api(
        "POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"dry_run": True}}
    )
    assert created.status_code == 200, created.text
    run_id = created.json()["dag_run_id"]
    try:
        headers = {"Authorization": f"Bearer {local_up.token()}"}
        queued = requests.get(report_url(local_up, run_id), headers=headers, timeout=30)
        assert queued.status_code == 404
        assert "no loadgate run record" in queued.text
        assert "Traceback" not in queued.text
        missing = requests.get(report_url(local_up, "no-such-run"), headers=headers, timeout=30)
        assert missing.status_code == 404
        assert f"{DAG_ID} has no run no-such-run" in missing.text
    finally:
        deleted = local_up.api("DELETE", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        assert deleted.status_code == 204, deleted.text
    assert local_up.dag_runs(DAG_ID) == []


def test_the_form_opens_valid_in_sections_and_triggers_a_dry_run(local_up, page) -> None:
    details = local_up.api("GET", f"/dags/{DAG_ID}/details")
    details.raise_for_status()
    assert details.json()["dag_display_name"] == "Release gate"
    params = details.json()["params"]
    defaults = {name: p["value"] for name, p in params.items()}
    assert sorted(defaults) == sorted(TRIGGER_KEYS)
    sections = form_descriptions(params)
    assert sorted(sections) == sorted(SECTIONS), sections
    assert local_up.dag_runs(DAG_ID) == []

    dialog = open_trigger_form(page, local_up, DAG_ID)

    # opened as it is: no field invalid, the button enabled
    trigger = form_trigger_button(dialog)
    assert trigger.is_enabled(), "the form's Trigger button is disabled with the defaults"
    assert dialog.locator("[aria-invalid=true]").count() == 0
    text = dialog.inner_text()
    positions = [text.find(section) for section in SECTIONS]
    assert -1 not in positions and positions == sorted(positions), positions

    # each section shows its fields with their descriptions, none marked invalid once visible
    for section in SECTIONS:
        open_section(dialog, section)
        assert dialog.locator("[aria-invalid=true]").count() == 0, section
        shown = squashed(dialog.inner_text())
        for name, description in sections[section]:
            assert description, f"{name} has no description"
            assert squashed(description) in shown, (section, name, description)
            assert dialog.locator(f"[name=element_{name}]").count() >= 1, name
    open_section(dialog, "Target and release")
    for optional in ("target_url", "release"):
        assert dialog.locator(f"input[name=element_{optional}]").input_value() == ""
    set_switch(dialog, "dry_run", True)
    # the DAG is paused (as Airflow creates it): the form unpauses it on trigger
    unpause = dialog.get_by_role("checkbox", name=re.compile("Unpause"))
    if unpause.count():
        assert unpause.is_checked()
    shot = save_screenshot(dialog, "trigger-form")
    assert shot.stat().st_size > 10_000
    assert trigger.is_enabled()
    trigger.click()
    dialog.wait_for(state="hidden")

    run = wait_for_run(local_up)
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


def test_the_dry_run_succeeds_and_its_report_tab_shows_the_report(local_up, page) -> None:
    """The run the form started ends successfully under the scheduler; on its page, the Report
    tab shows its report: the dry run's verdict, on the service ``make up`` started (the form's
    defaults are the profile's, which ``make up`` points at it)."""
    runs = [r for r in local_up.dag_runs(DAG_ID) if (r["conf"] or {}).get("dry_run")]
    assert runs, "no dry run: the form test did not trigger one"
    run_id = runs[0]["dag_run_id"]
    started = time.monotonic()
    ended = wait_until_ended(local_up, run_id)
    print(f"\nthe dry run ended {ended['state']} after {time.monotonic() - started:.0f} s more")
    assert ended["state"] == "success", ended

    open_run(page, local_up, DAG_ID, run_id)
    page.get_by_text("Success").first.wait_for()
    save_screenshot(page, "dag-run-finished")

    frame = open_report_tab(page)
    verdict = frame.get_by_text("Verdict:")
    verdict.wait_for()
    report = squashed(frame.locator("body").inner_text())
    assert "Verdict: DRY RUN" in report, report[:500]  # a word, no emoji
    assert "dry run: no load was sent" in report
    assert f"Target: {local_up.service_url}" in report
    assert run_id in report
    save_screenshot(page, "dag-run-report")


def test_the_report_is_refused_without_a_login_and_serves_only_the_report(local_up) -> None:
    runs = [r for r in local_up.dag_runs(DAG_ID) if (r["conf"] or {}).get("dry_run")]
    assert runs, "no dry run: the form test did not trigger one"
    url = report_url(local_up, runs[0]["dag_run_id"])

    assert requests.get(url, timeout=30).status_code == 401
    forged = {"Authorization": "Bearer not-a-token"}
    assert requests.get(url, headers=forged, timeout=30).status_code == 403
    assert requests.get(url, cookies={"_token": "not-a-token"}, timeout=30).status_code == 403

    signed_in = {"Authorization": f"Bearer {local_up.token()}"}
    page = requests.get(url, headers=signed_in, timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "sandbox" in page.headers["content-security-policy"]
    assert "DRY RUN" in page.text
    verdict = requests.get(f"{url}/report.json", headers=signed_in, timeout=30)
    assert verdict.status_code == 200 and verdict.json()["verdict"] == "dry_run"
    # nothing but the report's files, whatever the URL says
    for name in ("users.jsonl", "run.json", "..", "%2E%2E%2Frun.json", "..%2F..%2Fstate.json"):
        refused = requests.get(f"{url}/{name}", headers=signed_in, timeout=30)
        assert refused.status_code == 404, (name, refused.status_code)


def test_make_down_leaves_no_process_or_port(local_up) -> None:
    """Last in the module: ``make down`` (the fixture's then finds nothing running)."""
    pids, ports = local_up.pids(), local_up.ports()
    assert pids
    stopped = local_up.down()
    assert "stopped" in stopped and "api-server" in stopped and "syncbridge" in stopped
    assert still_running(pids) == set(), "make down left processes"
    assert all(port_free(port) for port in ports), ports
    assert local_up.pids() == set()
    assert "nothing was running" in local_up.down()
