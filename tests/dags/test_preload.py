"""The deployment's local settings (``deploy/airflow_local_settings.py``) as Airflow imports
them while it initializes: the scheduler and the dag-processor import the gate's modules before
they fork their tasks; every other process is left as it was, and none of Airflow's settings is
changed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.airflow import airflow_env

pytest.importorskip("airflow")
pytestmark = pytest.mark.slow  # a process initializing Airflow a test: 2-8 s each

PROBE = """
import json, sys
sys.argv = ["airflow", sys.argv[1]]
import airflow.settings
print(json.dumps({
    "loaded": [m for m in ("loadgate_airflow.gate_dag",
                           "airflow.providers.cncf.kubernetes.operators.pod",
                           "airflow.providers.slack.hooks.slack") if m in sys.modules],
    "settings_names": [n for n in ("preload", "MODULES") if hasattr(airflow.settings, n)],
}))
"""


def probe(tmp_path, component: str) -> dict:
    env = airflow_env(tmp_path / "airflow")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, component],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("component", ["scheduler", "dag-processor"])
def test_forking_components_import_the_gate_before_they_fork(tmp_path, component):
    result = probe(tmp_path, component)
    assert result["loaded"] == [
        "loadgate_airflow.gate_dag",
        "airflow.providers.cncf.kubernetes.operators.pod",
        "airflow.providers.slack.hooks.slack",
    ]
    assert result["settings_names"] == []  # Airflow's settings untouched


@pytest.mark.parametrize("component", ["api-server", "triggerer"])
def test_other_components_import_nothing_more(tmp_path, component):
    assert probe(tmp_path, component) == {"loaded": [], "settings_names": []}
