"""loadgate's Airflow plugin: the **Report** tab of a DAG run, served by the API server.

Airflow imports every ``.py`` file of the plugins folder as a top-level module of its own
(``plugins_manager``: the file's stem as its name) and registers each AirflowPlugin subclass it
finds in one. ``.airflowignore`` beside this file leaves out the package's other modules, so this
file is the one that registers (a module that imported the plugin class would register it a
second time), and the package's modules are imported once, as ``loadgate_airflow.…``.

Every task process loads plugins too (for macros and listeners): the report app, whose imports
take seconds (the API server's security and database modules), is built only when the API
server asks for ``fastapi_apps``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

REPORT_TAB = {
    "name": "Report",
    # the UI fills in the run's DAG and id, and shows the page in an iframe on the run's page.
    # Relative: it resolves against the UI's <base href>, the path of Airflow's [api] base_url,
    # so the tab finds the report also where Airflow is served under a path (behind a proxy at
    # https://ops.example/airflow/); "/loadgate/…" would leave that path out.
    "href": "loadgate/reports/{DAG_ID}/{RUN_ID}",
    "destination": "dag_run",
    "url_route": "loadgate-report",
}


class LoadgatePlugin(AirflowPlugin):
    name = "loadgate"
    external_views: ClassVar[list[Any]] = [REPORT_TAB]

    @property  # type: ignore[override]  # a list on the base class; built on first use here
    def fastapi_apps(self) -> list[dict[str, Any]]:
        from loadgate_airflow import report_view

        if not hasattr(self, "_apps"):
            self._apps = [
                {
                    "name": "loadgate reports",
                    "app": report_view.create_app(),
                    "url_prefix": report_view.URL_PREFIX,
                }
            ]
        return self._apps
