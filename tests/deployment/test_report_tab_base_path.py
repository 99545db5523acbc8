"""The **Report** tab where Airflow is served under a path (``[api] base_url`` with a path, as
behind a reverse proxy at ``https://ops.example/airflow/``), in Debian's Chromium.

The UI resolves the tab's ``href`` against its ``<base href>``, the base URL's path, and the API
server serves the plugin's app under it: the tab's frame must load the report app's page from
``/airflow/loadgate/reports/…``. (At the root path the tab is checked with a finished run in
``test_trigger_form.py``.) The deployment is the UI's part only: the dag-processor and the
api-server on SQLite, no scheduler, so the run triggered here stays queued and its report page
says there is no report yet, a page only the report app answers.
"""

from __future__ import annotations

import pytest

from tests.support.airflow_server import DAG_ID, AirflowDeployment
from tests.support.airflow_ui import open_report_tab, open_run
from tests.support.browser import chromium_or_skip, save_screenshot

pytestmark = [pytest.mark.deployment, pytest.mark.browser, pytest.mark.slow]

BASE_PATH = "/airflow"


@pytest.fixture(scope="module")
def airflow(start_airflow, tmp_path_factory) -> AirflowDeployment:
    chromium_or_skip()  # before the deployment starts: nothing here runs without the browser
    return start_airflow(tmp_path_factory.mktemp("airflow-base-path"), base_path=BASE_PATH)


def test_the_report_tab_opens_the_report_app_under_the_base_path(airflow, page) -> None:
    assert airflow.url.endswith(BASE_PATH)
    resp = airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]

    open_run(page, airflow, DAG_ID, run_id)
    frame = open_report_tab(page)
    frame.get_by_text("No report yet").wait_for()
    text = frame.locator("body").inner_text()
    assert "has no loadgate run record" in text, text[:500]
    assert run_id in text
    (report,) = [f for f in page.frames if "/loadgate/reports/" in f.url]
    assert report.url.startswith(f"{airflow.url}/loadgate/reports/{DAG_ID}/"), report.url
    save_screenshot(page, "dag-run-report-base-path")
