"""The Airflow 3 UI as a person uses it, through Playwright: log in, open a DAG, its trigger form,
a run and its Report tab; and ``make up``'s Airflow (``LocalUp``), which a person opens it on.

Selectors are the ones a person sees (roles and labels) wherever the UI gives them; a form
field's input is ``element_<param>``, the id Airflow's form gives it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from tests.support.airflow_server import ADMIN_USER, AdminApi

# How long an action waits for the page. Playwright's 30 s was once not enough in a full run,
# the CPU saturated by the suite: a click on the resolved Report link waited on the renderer
# past it. A wait, not a speed claim: a page that works answers within a second when idle.
TIMEOUT_MS = 60_000


class Airflow(Protocol):
    """What the UI helpers need of a deployment (``AirflowDeployment``, ``LocalUp``)."""

    @property
    def url(self) -> str: ...

    @property
    def password(self) -> str: ...


def log_in(page: Any, airflow: Airflow, path: str = "/") -> None:
    """Open ``path``; on the SimpleAuthManager's login page, sign in as the admin user."""
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{airflow.url}{path}")
    page.wait_for_load_state("networkidle")
    if "/auth/login" in page.url:
        page.get_by_label("Username").fill(ADMIN_USER)
        page.get_by_label("Password").fill(airflow.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"**{path}")


def open_trigger_form(page: Any, airflow: Airflow, dag_id: str) -> Any:
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


def run_path(dag_id: str, run_id: str) -> str:
    """A DAG run's page in the UI."""
    return f"/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}"


def open_run(page: Any, airflow: Airflow, dag_id: str, run_id: str) -> None:
    """Log in, then open the run's page (its task instances)."""
    log_in(page, airflow)
    page.goto(f"{airflow.url}{run_path(dag_id, run_id)}")
    page.wait_for_load_state("networkidle")


def open_report_tab(page: Any) -> Any:
    """On a run's page, its **Report** tab (loadgate's plugin): the frame it shows the report
    in."""
    page.get_by_role("link", name="Report", exact=True).click()
    frame = page.frame_locator("iframe[title=Report]")
    frame.locator("body").wait_for()
    return frame


@dataclass
class LocalUp(AdminApi):
    """``make up``'s module (``loadgate_syncbridge.up``) run as a person runs it, with its state
    in ``root`` instead of the checkout's ``.up/`` and the UI on a free port."""

    root: Path
    outputs: list[str] = field(default_factory=list)
    _token: str | None = None

    def _command(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "loadgate_syncbridge.up", *args, "--dir", str(self.root)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        self.outputs.append(done.stdout + done.stderr)
        return done

    def up(self, timeout: float = 420) -> str:
        """``make up``; its output. Fails with the output when it fails."""
        done = self._command("up", "--port", "0", timeout=timeout)
        assert done.returncode == 0, f"make up failed ({done.returncode}):\n{self.outputs[-1]}"
        return done.stdout

    def down(self) -> str:
        done = self._command("down", timeout=120)
        assert done.returncode == 0, f"make down failed ({done.returncode}):\n{self.outputs[-1]}"
        return done.stdout

    @property
    def state(self) -> dict[str, str]:
        found: dict[str, str] = json.loads((self.root / "state.json").read_text())
        return found

    @property
    def url(self) -> str:
        return self.state["url"]

    @property
    def service_url(self) -> str:
        return self.state["service_url"]

    @property
    def passwords_file(self) -> Path:
        return self.root / "airflow" / "simple_auth_manager_passwords.json.generated"

    @property
    def password(self) -> str:
        """The admin's password, which Airflow generated (``make up`` prints where it is)."""
        found: str = json.loads(self.passwords_file.read_text())[ADMIN_USER]
        return found

    def ports(self) -> list[int]:
        """The UI's port and the reference service's."""
        ports = [urllib.parse.urlsplit(u).port for u in (self.url, self.service_url)]
        return [p for p in ports if p is not None]

    def pids(self) -> set[int]:
        """Every live process of this ``up``: what it started, with their families."""
        from loadgate_syncbridge.up import Layout, pids

        return pids(Layout(self.root))


def still_running(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (a zombie has ended)."""
    found = set()
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.add(pid)
    return found
