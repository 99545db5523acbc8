"""The deployment tier: a real Airflow (api-server, dag-processor; scheduler and triggerer where
a test runs DAG runs) on loopback, and Debian's Chromium for what a person looks at.

``start_airflow(home, **options)`` (module-scoped) starts an ``AirflowDeployment`` (see
``tests/support/airflow_server.py``: ``components=FULL, postgres=True`` is the production
shape, the metadata database on a throwaway PostgreSQL cluster and the LocalExecutor) and
stops every deployment it started at the module's end, also when a test failed."""

from __future__ import annotations

import pytest

from tests.support.airflow_server import AirflowDeployment
from tests.support.browser import PAUSE_ANIMATIONS, chromium


@pytest.fixture(scope="module")
def start_airflow():
    started: list[AirflowDeployment] = []

    def factory(home, **options) -> AirflowDeployment:
        deployment = AirflowDeployment(home, **options)
        started.append(deployment)
        return deployment.start()

    yield factory
    for deployment in started:
        deployment.stop()


@pytest.fixture(scope="module")
def browser():
    """Closed with its module: Playwright's sync API holds an event loop on the main thread
    while it is open, and the tests of other modules run their own (asyncio.run)."""
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    context.add_init_script(PAUSE_ANIMATIONS)
    page = context.new_page()
    yield page
    context.close()
