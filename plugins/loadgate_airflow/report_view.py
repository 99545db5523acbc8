"""A run's report, one click away from the run: served by Airflow's API server.

``GET /loadgate/reports/{dag_id}/{run_id}/`` answers the run's ``report.html`` (the link
without the last slash, the Report tab's and the messages', redirects there, so that the
report's relative links resolve under the run), ``…/{run_id}/{name}`` the report's other files
(``report.md``, ``report.json``, ``junit.xml``) and ``…/{run_id}/logs/…`` the logs the run
collected, as plain text; all read from the run root, a local folder or ``s3://…`` reached
through the run's ``aws_conn_id`` connection. The UI shows it as the **Report** tab of a DAG
run (an external view with ``destination: dag_run``, registered by ``loadgate_plugin``), in an
iframe.

Where the run root is comes from the run itself, never from the request: the ``prepare`` task's
return value (XCom), which is the run record (``loadgate.run.records.RunRecord``: the resolved
config, with its artifacts root, and the run id). Only the report's files are served, by name,
and the logs that the run's own ``logs/index.json`` lists: never ``users.jsonl`` (the test
users' credentials) or anything else under the run root, and no path from the URL reaches the
store unless the run listed it.

Access is Airflow's own: the caller must be allowed to read the DAG's runs
(``requires_access_dag("GET", DagAccessEntity.RUN)``), by the JWT cookie the UI sets or a bearer
token; without one the answer is 401, with an invalid one 403. A run without a report yet (still
running, a dry run's prepare failed, a DAG that is no release gate) answers a short page with 404.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XCOM_RETURN_KEY, XComModel
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from loadgate.report.figures import log_links
from loadgate.run.artifacts import safe_name
from loadgate.run.records import RunRecord
from loadgate.storage import is_remote, upath

log = logging.getLogger(__name__)

URL_PREFIX = "/loadgate/reports"
RECORD_TASK = "prepare"  # its return value is the run record
REPORT = "report.html"
# the report's files, by name: nothing else under a run root is ever served
REPORT_FILES = {
    "report.html": "text/html; charset=utf-8",
    "report.md": "text/markdown; charset=utf-8",
    "report.json": "application/json",
    "junit.xml": "application/xml",
}
LOGS = "logs/"  # the collected logs, linked from the report
LOG_INDEX = "logs/index.json"  # what post_test.collect_logs collected: only those are served
LOG_MEDIA_TYPE = "text/plain; charset=utf-8"
MAX_BYTES = 64 * 1024 * 1024  # a report is a few hundred kB; a file beyond this is not a report
# The report is self-contained: inline styles and SVG, no script, nothing fetched. The UI frames
# it (frame-ancestors 'self'); the sandbox gives it an origin of its own, so even a report that
# held a script could not act as the signed-in user.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class NoReport(Exception):
    """What a person reads instead of the report (a 404 page)."""


@dataclass(frozen=True)
class RunRoot:
    """Where a run's files are: its artifacts root and folder, and the connection of a store."""

    artifacts_root: str
    folder: str
    aws_conn_id: str
    logs: frozenset[str] = frozenset()  # the collected logs this root may serve (logs/…)

    @classmethod
    def of(cls, record: RunRecord) -> RunRoot:
        return cls(
            artifacts_root=str(record.config.artifacts_root),
            folder=safe_name(record.run_id),
            aws_conn_id=record.config.aws_conn_id,
        )

    def path(self, name: str, store_options: dict[str, Any] | None = None) -> Any:
        """The report file ``name`` (one of :data:`REPORT_FILES`, or a log the run collected,
        checked by :func:`read_log_file`) under this run root."""
        if name not in REPORT_FILES and name not in self.logs:
            raise NoReport(f"{name!r} is not a file of the report")
        if not is_remote(self.artifacts_root):
            return upath(self.artifacts_root) / self.folder / name
        from upath import UPath

        options = {"use_listings_cache": False, **(store_options or {})}
        return UPath(self.artifacts_root, **options) / self.folder / name


def store_options(conn_id: str) -> dict[str, Any]:
    """The run's ``aws`` connection as s3fs options (keys, endpoint, region), for this request
    only: the API server's own environment is left as it is (the tasks put the connection in
    theirs, :func:`loadgate_airflow.settings.object_store_env`)."""
    from loadgate_airflow.settings import object_store_env

    env = object_store_env(conn_id)
    options: dict[str, Any] = {}
    if "AWS_ACCESS_KEY_ID" in env:
        options["key"] = env["AWS_ACCESS_KEY_ID"]
        options["secret"] = env["AWS_SECRET_ACCESS_KEY"]
    if "AWS_SESSION_TOKEN" in env:
        options["token"] = env["AWS_SESSION_TOKEN"]
    if "AWS_ENDPOINT_URL" in env:
        options["endpoint_url"] = env["AWS_ENDPOINT_URL"]
    if "AWS_DEFAULT_REGION" in env:
        options["client_kwargs"] = {"region_name": env["AWS_DEFAULT_REGION"]}
    return options


def read_report_file(root: RunRoot, name: str) -> bytes:
    """The bytes of the report file ``name`` of the run at ``root``; NoReport if it is absent."""
    options = store_options(root.aws_conn_id) if is_remote(root.artifacts_root) else None
    path = root.path(name, options)
    if not path.exists():
        raise NoReport(
            f"The run has no {name} yet: post_test.build_report writes it at the run's end "
            "(also after a failed stage or a rollback)."
        )
    with path.open("rb") as f:
        data: bytes = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise NoReport(f"{name} is larger than {MAX_BYTES // 2**20} MB: not served")
    return data


def read_log_file(root: RunRoot, name: str) -> bytes:
    """A log the run collected (``logs/…``, as the report links it): only a path that the
    run's own ``logs/index.json`` lists, so nothing else under the run root is reachable."""
    if not name.startswith(LOGS):
        raise NoReport(f"{name!r} is not a log of the run.")
    try:
        index = json.loads(read_report_file(replace(root, logs=frozenset({LOG_INDEX})), LOG_INDEX))
    except NoReport:
        raise NoReport("The run has collected no logs (post_test.collect_logs).") from None
    listed = frozenset(log_links(index))
    if name not in listed:
        raise NoReport(f"{name!r} is not a log the run collected.")
    return read_report_file(replace(root, logs=listed), name)


def run_record(session: Any, dag_id: str, run_id: str) -> RunRecord:
    """The run record of ``run_id``: its ``prepare`` task's return value."""
    exists = session.scalar(
        select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
    )
    if exists is None:
        raise NoReport(f"{dag_id} has no run {run_id}.")
    row = session.scalars(
        XComModel.get_many(
            run_id=run_id,
            key=XCOM_RETURN_KEY,
            task_ids=RECORD_TASK,
            dag_ids=dag_id,
            map_indexes=-1,
            limit=1,
        )
    ).first()
    if row is None:
        raise NoReport(
            "This run has no loadgate run record: its prepare task has not finished, or failed "
            "(see its log), or the DAG is not a release gate."
        )
    value = XComModel.deserialize_value(row)
    try:
        return RunRecord.model_validate(value)
    except ValueError:
        raise NoReport("This run's prepare task returned no loadgate run record.") from None


def no_report_page(dag_id: str, run_id: str, why: str, status: int = 404) -> HTMLResponse:
    body = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>No report</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#111827}</style></head>"
        f"<body><h1>No report yet</h1><p>{html.escape(why)}</p>"
        f"<p>DAG <code>{html.escape(dag_id)}</code>, run <code>{html.escape(run_id)}</code></p>"
        "</body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=HEADERS)


ReadRuns = Depends(requires_access_dag("GET", DagAccessEntity.RUN))


def create_app() -> FastAPI:
    app = FastAPI(
        title="loadgate reports",
        description="A release-gate run's report, from its run root",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/{dag_id}/{run_id}", dependencies=[ReadRuns])
    def report_link(dag_id: str, run_id: str) -> Response:
        """The Report tab's and the messages' link: on to the run's folder-like URL, against
        which the report's relative links (its collected logs) resolve."""
        return RedirectResponse(quote(run_id, safe="") + "/", status_code=307)

    @app.get("/{dag_id}/{run_id}/", dependencies=[ReadRuns])
    def report(dag_id: str, run_id: str, session: SessionDep) -> Response:
        """The run's report.html (the Report tab)."""
        return _serve(session, dag_id, run_id, REPORT)

    @app.get("/{dag_id}/{run_id}/logs/{path:path}", dependencies=[ReadRuns])
    def log_file(dag_id: str, run_id: str, path: str, session: SessionDep) -> Response:
        """A log the run collected, as the report links it (``logs/…``), as plain text."""
        return _serve(session, dag_id, run_id, LOGS + path)

    @app.get("/{dag_id}/{run_id}/{name}", dependencies=[ReadRuns])
    def report_file(dag_id: str, run_id: str, name: str, session: SessionDep) -> Response:
        """One of the report's files, by name (:data:`REPORT_FILES`)."""
        return _serve(session, dag_id, run_id, name)

    return app


def _serve(session: Any, dag_id: str, run_id: str, name: str) -> Response:
    """The file ``name`` of the run's report, or a short page saying why there is none."""
    try:
        if name.startswith(LOGS):
            root = RunRoot.of(run_record(session, dag_id, run_id))
            data, media_type = read_log_file(root, name), LOG_MEDIA_TYPE
        elif name in REPORT_FILES:
            data = read_report_file(RunRoot.of(run_record(session, dag_id, run_id)), name)
            media_type = REPORT_FILES[name]
        else:
            raise NoReport(f"{name!r} is not a file of the report.")
    except NoReport as exc:
        return no_report_page(dag_id, run_id, str(exc))
    except Exception:  # a store or a connection that fails: logged here, never shown
        log.exception("the report of %s %s could not be read", dag_id, run_id)
        return no_report_page(
            dag_id, run_id, "The run's artifacts could not be read (see the API server's log).", 502
        )
    return Response(data, media_type=media_type, headers=HEADERS)
