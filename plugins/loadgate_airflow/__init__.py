"""Airflow glue for loadgate: task callables, connections and variables, notifications.

Everything here turns Airflow's context (params, connections, variables, the run id) into calls
of the core (``loadgate``), which imports no Airflow.
"""
