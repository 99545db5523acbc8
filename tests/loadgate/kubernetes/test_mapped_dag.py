"""The operator in a real Airflow task runner (``airflow dags test``), mapped over a stage's
shards as the Kubernetes backend does: one upstream task renders the shard pods
(``loadgate.kubernetes``), ``KubernetesPodOperator.partial(...).expand(pod_template_dict=...)``
runs one pod per shard, and a cleanup task (trigger rule all_done) deletes every pod of the run
by label, so none is left even when a shard failed and its pod was kept for debugging."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.airflow import airflow_env, migrate

from .conftest import NAMESPACE

pytestmark = pytest.mark.slow

DAG = """
import sys

import pendulum
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import dag, task

from loadgate.backends.kubernetes import manifests
from loadgate.backends.kubernetes import pods as k8s_pods
from loadgate.config import pods as pod_settings

FAILING_SHARD = {failing_shard}
NAMESPACE = "{namespace}"


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def kpo_shards():
    @task
    def shard_pods(**context):
        label = manifests.run_label(context["run_id"])
        settings = pod_settings.PodSettings(namespace=NAMESPACE, image="loadgate:test")
        pods = []
        for i in range(2):
            code = f"print('shard {{i}} of 2 generating load', flush=True)"
            if i == FAILING_SHARD:
                code += "; raise SystemExit(3)"
            pods.append(
                manifests.pod_manifest(
                    name=f"loadgate-api-{{label[:8]}}-{{i}}",
                    argv=[sys.executable, "-c", code],
                    settings=settings,
                    labels={{
                        manifests.RUN_LABEL: label,
                        manifests.STAGE_LABEL: "api",
                        manifests.SHARD_LABEL: str(i),
                    }},
                )
            )
        return pods

    load = KubernetesPodOperator.partial(
        task_id="api_load_test",
        in_cluster=False,
        get_logs=True,
        do_xcom_push=False,
        on_finish_action="delete_succeeded_pod",
        termination_message_policy="FallbackToLogsOnError",
        startup_timeout_seconds=60,
        startup_check_interval_seconds=1,
        retries=0,
    ).expand(pod_template_dict=shard_pods())

    @task(trigger_rule="all_done")
    def cleanup_pods(**context):
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        core = KubernetesHook().core_v1_client
        label = manifests.run_label(context["run_id"])
        deleted = k8s_pods.delete_run_pods(core, NAMESPACE, label, wait_s=10)
        print("DELETED", sorted(deleted))
        return deleted

    load >> cleanup_pods()


kpo_shards()
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("airflow")
    migrate(airflow_env(home))
    return home


def dags_test(home: Path, dags: Path, extra: dict[str, str]) -> subprocess.CompletedProcess:
    """``airflow dags test kpo_shards``; its output is kept beside the DAG (``dags-test.log``)."""
    env = airflow_env(home, AIRFLOW__CORE__DAGS_FOLDER=str(dags), **extra)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "test", "kpo_shards"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=dags,
    )
    (dags.parent / "dags-test.log").write_text(proc.stdout + proc.stderr)
    return proc


def write_dag(tmp_path: Path, failing_shard: int | None) -> Path:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "kpo_shards.py").write_text(
        DAG.format(failing_shard=failing_shard, namespace=NAMESPACE)
    )
    return dags


def test_mapped_shards_run_as_pods_and_none_is_left(
    airflow_home, kube, kubeconfig, tmp_path
) -> None:
    proc = dags_test(
        airflow_home, write_dag(tmp_path, None), kube.airflow_connection_env(kubeconfig)
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    for i in range(2):
        assert f"[base] shard {i} of 2 generating load" in output
    posted = [c["body"] for c in kube.calls("POST") if c["path"].endswith("/pods")]
    assert sorted(p["metadata"]["labels"]["map_index"] for p in posted) == ["0", "1"]
    assert "DELETED []" in output  # both succeeded: the operator deleted them already
    assert kube.pods(NAMESPACE) == []


def test_a_failed_shard_fails_its_task_and_cleanup_deletes_its_kept_pod(
    airflow_home, kube, kubeconfig, tmp_path
) -> None:
    proc = dags_test(
        airflow_home, write_dag(tmp_path, failing_shard=1), kube.airflow_connection_env(kubeconfig)
    )
    output = proc.stdout + proc.stderr
    assert "[base] shard 1 of 2 generating load" in output
    assert "returned a failure" in output
    assert "Task failed with exception" in output  # the shard's task failed
    line = next(ln for ln in output.splitlines() if ln.startswith("DELETED"))
    (deleted,) = ast.literal_eval(line[len("DELETED ") :])  # the failed shard's kept pod only
    assert re.fullmatch(r"loadgate-api-[0-9a-f]{8}-1-[a-z0-9]{8}", deleted), deleted
    assert kube.pods(NAMESPACE) == []
