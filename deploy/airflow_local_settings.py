"""Airflow's local settings for a deployment of loadgate: ``$AIRFLOW_HOME/config/``.

The scheduler and the dag-processor import the release gate's modules before they fork, so
that each task process finds them imported (``loadgate_airflow.preload`` says why). It sets
none of Airflow's settings: Airflow takes every name this file defines as one, hence the empty
``__all__``.
"""

from loadgate_airflow.preload import preload

preload()
__all__: list[str] = []
