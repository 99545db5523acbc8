"""Where loadgate's Airflow settings live: Variables and Connections, each optional.

- Variable ``loadgate_profiles``: the gate profiles, JSON or YAML, a mapping of profile name to
  its settings (``loadgate.config.profiles.Profile``: plan, allowlist, rollback, backend and pods,
  artifacts root, limits, Slack channel …), over the shipped ``syncbridge`` profile. Only
  operators set it; a trigger only names a profile.
- Connection ``loadgate_slack`` (type slack: bot token as password, extra ``channel``, optional
  ``base_url``): one thread per run; or ``loadgate_slack_webhook`` (type slackwebhook), which
  cannot thread or update: each message is posted on its own. Neither: messages go to the
  run's ``notifications.jsonl``. Their buttons link the run and its report through Airflow's
  ``[api] base_url`` (config); without it the messages have no links.
- Connection ``loadgate_target``: the target's admin token (password) for the reference
  service's rollback, or the bearer token a webhook rollback sends.
- Connection ``loadgate_seed``: the secret test users' passwords derive from (password). Without
  it a secret is made once beside the runs.
- Connection ``aws_default`` (or the run's ``aws_conn_id``; type aws, the amazon provider's):
  the credentials and ``endpoint_url`` of an ``s3://`` artifacts_root.
"""

from __future__ import annotations

import logging

from airflow.sdk import Connection, Variable
from airflow.sdk.exceptions import AirflowNotFoundException

from loadgate.config.profiles import Profile, load_profiles
from loadgate.notify import Links, Sender, SlackApiSender, SlackWebhookSender, airflow_links

log = logging.getLogger(__name__)

PROFILES = "loadgate_profiles"
SLACK = "loadgate_slack"
SLACK_WEBHOOK = "loadgate_slack_webhook"
TARGET = "loadgate_target"
SEED = "loadgate_seed"


def _connection(conn_id: str) -> Connection | None:
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def profiles() -> dict[str, Profile]:
    """The shipped profiles with the deployment's (Variable ``loadgate_profiles``) over them;
    ProfileError names the bad key."""
    return load_profiles(Variable.get(PROFILES, default=None))


def secret(conn_id: str) -> str | None:
    conn = _connection(conn_id)
    return conn.password if conn and conn.password else None


def object_store_env(conn_id: str) -> dict[str, str]:
    """The aws connection as the standard AWS environment variables, for s3fs in this task and
    the engine processes it starts (never logged, never in XCom).

    The amazon provider's hook resolves the connection (keys, an assumed role, a profile; a
    missing connection falls back to boto's own chain: the environment, the instance's role);
    its ``endpoint_url`` (an S3-compatible server) and ``region_name`` come along.
    """
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
    env: dict[str, str] = {}
    try:
        credentials = hook.get_credentials()
    except AttributeError:  # boto found no credentials at all: the store decides what it allows
        credentials = None
    if credentials is not None and credentials.access_key:
        env["AWS_ACCESS_KEY_ID"] = credentials.access_key
        env["AWS_SECRET_ACCESS_KEY"] = credentials.secret_key
        if credentials.token:
            env["AWS_SESSION_TOKEN"] = credentials.token
    config = hook.conn_config
    if config.endpoint_url:
        env["AWS_ENDPOINT_URL"] = config.endpoint_url
    if config.region_name:
        env["AWS_DEFAULT_REGION"] = config.region_name
    return env


def slack_sender(channel: str | None = None) -> Sender | None:
    """The Slack connection's sender; ``channel`` (the profile's) over the connection's own."""
    if _connection(SLACK) is not None:
        from airflow.providers.slack.hooks.slack import SlackHook

        channel = channel or _connection(SLACK).extra_dejson.get("channel") or "#deploys"
        return SlackApiSender(SlackHook(slack_conn_id=SLACK).client, channel)
    if _connection(SLACK_WEBHOOK) is not None:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        return SlackWebhookSender(SlackWebhookHook(slack_webhook_conn_id=SLACK_WEBHOOK).client)
    return None


def run_links(run_id: str, dag_id: str | None = None) -> Links:
    """The run's page in the Airflow UI and its report as the API server serves it
    (``report_view``), from ``[api] base_url``; ``dag_id`` defaults to the running task's."""
    from airflow.configuration import conf

    if dag_id is None:
        try:
            from airflow.sdk import get_current_context

            dag_id = get_current_context()["ti"].dag_id
        except Exception:  # outside a task: no DAG, no links
            return Links()
    base_url = conf.get("api", "base_url", fallback=None)
    links = airflow_links(base_url, dag_id, run_id)
    if links.run is None:
        log.info("[api] base_url is not an http(s) URL: the messages carry no links to the run")
    return links
