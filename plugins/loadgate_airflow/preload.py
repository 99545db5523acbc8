"""Import the release gate's modules once, in the scheduler and the dag-processor, before they
fork.

Every task of a gate run is a process forked from a LocalExecutor worker, itself forked from
the scheduler; each parses the DAG file, which imports the KubernetesPodOperator and
``loadgate_airflow`` with the core: about 2 s of CPU per task when the scheduler had not
imported them (a gate run starts about 16 tasks). Imported here, a forked task finds them in
``sys.modules``. The dag-processor forks a parser per DAG file the same way.

A deployment turns it on with ``$AIRFLOW_HOME/config/airflow_local_settings.py`` (Airflow
imports that file in every process while it initializes)::

    from loadgate_airflow.preload import preload

    preload()
    __all__: list[str] = []  # the file's names are Airflow's settings: it sets none

Other processes (the API server, the triggerer, ``airflow`` commands) are left alone.
"""

from __future__ import annotations

import importlib
import logging
import sys

FORKING_COMPONENTS = frozenset({"scheduler", "dag-processor"})
MODULES = (
    "loadgate_airflow.gate_dag",  # the KubernetesPodOperator, the tasks, the core they call
    "airflow.providers.slack.hooks.slack",  # the messages (start, each gate, the verdict)
)

log = logging.getLogger(__name__)


def preload(argv: list[str] | None = None) -> list[str]:
    """Import ``MODULES`` when this process is ``airflow scheduler`` or ``airflow
    dag-processor``; the modules imported. A module that fails to import is logged and
    skipped: the task that needs it reports the error where it belongs."""
    args = sys.argv if argv is None else argv
    if len(args) < 2 or args[1] not in FORKING_COMPONENTS:
        return []
    done = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:
            log.warning("loadgate: could not preload %s", name, exc_info=True)
        else:
            done.append(name)
    return done
