"""Run the real KubernetesPodOperator once, outside a scheduler, and print what happened.

    python kpo_runner.py SPEC.json

SPEC: {"operator": {KubernetesPodOperator keyword arguments}, "task_id": …, "map_index": …}.
Runs ``execute()`` with a minimal task context (the operator needs ``ti``, ``run_id``, ``dag``)
and prints one line ``RESULT {json}``: ok, error, the XComs the operator pushed. SIGTERM calls
the operator's ``on_kill``, as Airflow's task runner does when a task is marked failed or
cleared from the UI (the supervisor's SIGTERM to the task process). The operator's
own log (with the pod's log lines) goes to stderr. Run it in an Airflow environment of its own
(``tests.support.airflow.airflow_env``), as the tests do.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import traceback
from types import SimpleNamespace
from typing import Any


class TaskInstance:
    def __init__(self, dag_id: str, task_id: str, map_index: int, try_number: int) -> None:
        self.dag_id = dag_id
        self.task_id = task_id
        self.map_index = map_index
        self.try_number = try_number
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def main(spec_path: str) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    with open(spec_path) as handle:
        spec = json.load(handle)
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    ti = TaskInstance(
        spec.get("dag_id", "loadgate_k8s_test"),
        spec.get("task_id", "shard"),
        spec.get("map_index", -1),
        spec.get("try_number", 1),
    )
    context = {
        "ti": ti,
        "task_instance": ti,
        "run_id": spec.get("run_id", "manual__2026-01-01T00:00:00+00:00"),
        "dag": SimpleNamespace(dag_id=ti.dag_id),
    }
    operator = KubernetesPodOperator(task_id=ti.task_id, **spec["operator"])
    signal.signal(signal.SIGTERM, lambda signum, frame: operator.on_kill())
    result: dict[str, Any] = {"ok": True, "error": None}
    try:
        operator.execute(context)
    except BaseException as exc:  # report whatever ended the task, as the task runner would
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}", kind=type(exc).__name__)
        traceback.print_exc()
    result["xcom"] = ti.xcoms
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
