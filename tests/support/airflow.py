"""Run the real Airflow (``airflow dags test``) against this checkout's dags/ and plugins/."""

from loadgate.demo import airflow_env, connection_env, dags_test, migrate, profiles_env

__all__ = ["airflow_env", "connection_env", "dags_test", "migrate", "profiles_env"]
