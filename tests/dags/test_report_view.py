"""The Report tab's plugin without a deployment: what the plugins folder registers, and how a
run's report is found and read from its run root, local or on S3 through the run's aws
connection (the deployment tier serves it through a real API server: test_trigger_form.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadgate.run.artifacts import RunArtifacts
from loadgate.run.records import RunRecord

airflow = pytest.importorskip("airflow")
PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
RUN_ID = "manual__2026-01-01T00:00:00+00:00"  # Airflow's: not a folder name as it is


@pytest.fixture
def report_view(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))  # as Airflow puts its plugins folder
    from loadgate_airflow import report_view

    return report_view


def record(artifacts_root: str, aws_conn_id: str = "aws_default") -> RunRecord:
    return RunRecord.model_validate(
        {
            "run_id": RUN_ID,
            "config": {
                "profile": "t",
                "plan": "harmonyflow-10k",
                "target_url": "http://127.0.0.1:9",
                "artifacts_root": artifacts_root,
                "aws_conn_id": aws_conn_id,
            },
        }
    )


def test_the_plugins_folder_registers_one_plugin_with_the_report_tab(monkeypatch) -> None:
    """Only loadgate_plugin.py is loaded from the plugins folder (its .airflowignore): the
    package's other modules are not imported a second time as top-level modules, and the plugin
    is registered once."""
    from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory

    monkeypatch.syspath_prepend(str(PLUGINS))
    before = set(sys.modules)
    try:
        plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS))
        loaded = set(sys.modules) - before
    finally:
        sys.modules.pop("loadgate_plugin", None)
    assert errors == {}
    assert [p.name for p in plugins] == ["loadgate"]
    assert not loaded & {"tasks", "gate_dag", "settings", "params", "stages", "report_view"}
    (tab,) = plugins[0].external_views
    assert tab["destination"] == "dag_run" and tab["name"] == "Report"
    assert tab["href"] == "loadgate/reports/{DAG_ID}/{RUN_ID}"  # under the UI's base path
    (app,) = plugins[0].fastapi_apps  # built when the API server asks for it
    assert app["url_prefix"] == "/loadgate/reports"
    paths = {route.path for route in app["app"].routes}
    assert paths == {
        "/{dag_id}/{run_id}",  # redirects to the run's folder-like URL
        "/{dag_id}/{run_id}/",
        "/{dag_id}/{run_id}/logs/{path:path}",
        "/{dag_id}/{run_id}/{name}",
    }


def test_a_local_run_root_serves_the_report_files_and_nothing_else(report_view, tmp_path) -> None:
    run = record(str(tmp_path / "artifacts"))
    artifacts = RunArtifacts(run.config.artifacts_root, RUN_ID)
    root = report_view.RunRoot.of(run)
    with pytest.raises(report_view.NoReport, match=r"no report\.html yet"):
        report_view.read_report_file(root, "report.html")

    artifacts.write_text("report.html", "<h1>the report</h1>")
    artifacts.write_text("users.jsonl", '{"password": "x"}', private=True)
    assert report_view.read_report_file(root, "report.html") == b"<h1>the report</h1>"
    for name in ("users.jsonl", "run.json", "../report.html", "/etc/passwd", ""):
        with pytest.raises(report_view.NoReport, match="not a file of the report"):
            report_view.read_report_file(root, name)


def test_only_the_logs_the_run_collected_are_served(report_view, tmp_path) -> None:
    run = record(str(tmp_path / "artifacts"))
    artifacts = RunArtifacts(run.config.artifacts_root, RUN_ID)
    root = report_view.RunRoot.of(run)
    with pytest.raises(report_view.NoReport, match="collected no logs"):
        report_view.read_log_file(root, "logs/target.log")

    artifacts.write_text("logs/target.log", "the target's log")
    artifacts.write_text("logs/generator/api-shard-0.log", "shard 0")
    artifacts.write_text("logs/unlisted.log", "not collected")
    artifacts.write_text("users.jsonl", '{"password": "x"}', private=True)
    index = {"generator": ["logs/generator/api-shard-0.log"], "target": "logs/target.log"}
    artifacts.write_json("logs/index.json", index)
    assert report_view.read_log_file(root, "logs/target.log") == b"the target's log"
    assert report_view.read_log_file(root, "logs/generator/api-shard-0.log") == b"shard 0"
    for name in ("logs/unlisted.log", "logs/../users.jsonl", "logs/index.json", "users.jsonl"):
        with pytest.raises(report_view.NoReport, match="not a log"):
            report_view.read_log_file(root, name)
    # the report's own files are not reachable as logs, nor logs as report files
    with pytest.raises(report_view.NoReport, match="not a file of the report"):
        report_view.read_report_file(root, "logs/target.log")


def test_an_s3_run_root_is_read_through_the_runs_aws_connection(
    report_view, s3, monkeypatch
) -> None:
    """The API server reads the store with the run's connection (keys, endpoint, region), not
    with credentials of its own environment."""
    for name, value in s3.airflow_connection_env("report_store").items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    run = record(s3.url("runs"), aws_conn_id="report_store")
    root = report_view.RunRoot.of(run)
    assert root.folder == RunArtifacts("runs", RUN_ID).root.name  # the run's own folder

    with pytest.raises(report_view.NoReport, match=r"no report\.html yet"):
        report_view.read_report_file(root, "report.html")
    s3.server.client().put_object(
        Bucket=s3.name, Key=f"runs/{root.folder}/report.html", Body=b"<h1>on S3</h1>"
    )
    assert report_view.read_report_file(root, "report.html") == b"<h1>on S3</h1>"
