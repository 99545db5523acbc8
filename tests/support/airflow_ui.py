"""The Airflow 3 UI as a person uses it, through Playwright: log in, open a DAG, its trigger form.

Selectors are the ones a person sees (roles and labels) wherever the UI gives them; a form
field's input is ``element_<param>``, the id Airflow's form gives it.
"""

from __future__ import annotations

from typing import Any

from tests.support.airflow_server import ADMIN_USER, AirflowDeployment

TIMEOUT_MS = 30_000


def log_in(page: Any, airflow: AirflowDeployment, path: str = "/") -> None:
    """Open ``path``; on the SimpleAuthManager's login page, sign in as the admin user."""
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{airflow.url}{path}")
    page.wait_for_load_state("networkidle")
    if "/auth/login" in page.url:
        page.get_by_label("Username").fill(ADMIN_USER)
        page.get_by_label("Password").fill(airflow.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"**{path}")


def open_trigger_form(page: Any, airflow: AirflowDeployment, dag_id: str) -> Any:
    """The DAG's page, then its **Trigger** button: returns the form's dialog."""
    log_in(page, airflow, f"/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    return dialog


def form_trigger_button(dialog: Any) -> Any:
    return dialog.get_by_role("button", name="Trigger", exact=True)


def open_section(dialog: Any, section: str) -> None:
    """Expand a Params section (the form shows one at a time)."""
    header = dialog.get_by_role("button", name=section, exact=True)
    if header.get_attribute("aria-expanded") != "true":
        header.click()
    dialog.page.wait_for_timeout(300)  # the accordion's animation


def set_switch(dialog: Any, param: str, on: bool) -> None:
    """A boolean Param's switch."""
    box = dialog.locator(f"input[name=element_{param}]")
    if box.is_checked() != on:
        dialog.locator(f"[id='switch:element_{param}']").click()
    assert box.is_checked() == on
