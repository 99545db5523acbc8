"""Run the real Airflow (``airflow dags test``) against this checkout's dags/ and plugins/."""

from loadgate_syncbridge.demo import airflow_env, connection_env, dags_test, migrate, profiles_env

__all__ = ["airflow_env", "connection_env", "dags_test", "migrate", "profiles_env"]


def as_profile(full: dict, name: str = "e2e") -> tuple[dict[str, str], dict]:
    """A test's run settings split as a deployment has them: the operator's (a profile
    ``name`` in the ``loadgate_profiles`` Variable, by environment; its plan the example's
    unless ``full`` names one) and the trigger's conf
    (``loadgate.config.profiles.TRIGGER_KEYS``)."""
    from loadgate.config.profiles import TRIGGER_KEYS
    from tests.support.helpers import REFERENCE_PLAN

    conf = {k: v for k, v in full.items() if k in TRIGGER_KEYS}
    profile = {"plan": REFERENCE_PLAN}
    profile.update((k, v) for k, v in full.items() if k not in TRIGGER_KEYS)
    return profiles_env({name: profile}), {**conf, "profile": name}
