"""The release gate's trigger form: its Params, in the sections a person reads them in.

Every default validates, so the form opens ready to submit: with nothing changed, **Trigger**
starts the documented default run. A value that may be left out is nullable with a ``None``
default (Airflow's UI marks a field required unless its type admits ``null``, and an emptied
text field is sent as ``null``); the run config reads ``None`` as "not given" and applies its
own default (``loadgate.runconfig.build_run_config``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Param

TARGET = "Target and release"
LOAD = "Load shape"
WHERE = "Where it runs"
OPERATOR = "Operator settings"


def _optional(
    title: str, section: str, description: str, kind: str = "string", **schema: Any
) -> Param:
    """A field that may stay empty: ``None`` means the run's default behaviour."""
    return Param(
        None, type=["null", kind], title=title, section=section, **schema, description=description
    )


def release_gate_params(stages: Sequence[str]) -> dict[str, Param]:
    """The form of ``release_gate``; ``stages`` are the plan's, in its order."""
    return {
        # --- what to gate -------------------------------------------------------------------
        "target_url": Param(
            "http://127.0.0.1:8080",
            type="string",
            minLength=1,
            title="Target URL",
            section=TARGET,
            description_md="Base URL of the freshly deployed service. It must be on the "
            "`loadgate_target_allowlist` Variable (loopback is always allowed).",
        ),
        "release": _optional(
            "Release",
            TARGET,
            "The release id the target must report on /healthz. Empty: take it from the "
            "deploy event, or only warn.",
            maxLength=200,
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            section=TARGET,
            description="Validate everything and report who would get how much load; send none.",
        ),
        # --- how much load, for how long ------------------------------------------------------
        "plan": Param(
            "harmonyflow-10k",
            type="string",
            minLength=1,
            title="Test plan",
            section=LOAD,
            description_md="A plan shipped in `include/plans` (by name, e.g. `harmonyflow-10k`) "
            "or a path to a plan YAML file.",
        ),
        "scale": Param(
            1.0,
            type="number",
            exclusiveMinimum=0,
            maximum=10,
            title="Load scale",
            section=LOAD,
            description="Multiplies virtual users, connections and rates (1 = the plan's "
            "10,000 users; 0.01 = 100).",
        ),
        "time_scale": Param(
            1.0,
            type="number",
            exclusiveMinimum=0,
            maximum=10,
            title="Time scale",
            section=LOAD,
            description="Shortens the schedule only (ramps, holds, stage durations, start "
            "times; 1 = the plan's 44-minute API test, 0.05 plays it in about 2 minutes); users "
            "keep the plan's think times and intervals, so the request rate follows the number "
            "of users and a shorter run sends fewer requests, never faster ones.",
        ),
        "stages": Param(
            list(stages),
            type="array",
            items={"type": "string", "enum": list(stages)},
            minItems=1,
            uniqueItems=True,
            title="Stages",
            section=LOAD,
            description="Which load stages to run; they run in the plan's order.",
        ),
        "shards": _optional(
            "Shards per stage",
            LOAD,
            "Load generators per stage. Empty: the plan's number.",
            kind="integer",
            minimum=1,
            maximum=100,
        ),
        # --- where the load engine runs ---------------------------------------------------------
        "backend": Param(
            "local",
            type="string",
            enum=["local", "kubernetes"],
            title="Backend",
            section=WHERE,
            description_md="Where the load engine runs: `local` processes on the worker, or "
            "`kubernetes` pods (KubernetesPodOperator, the `kubernetes_default` connection).",
        ),
        "kubernetes": Param(
            {},
            type="object",
            title="Kubernetes pods",
            section=WHERE,
            description_md="For `backend=kubernetes`: `namespace`, `image`, `service_account`, "
            "`node_selector`, `tolerations`, `secret_env` … (`loadgate.kubernetes.PodSettings`). "
            "`{}`: the defaults.",
        ),
        "target_selector": _optional(
            "Target pods",
            WHERE,
            "Label selector of the target's pods (in the Kubernetes namespace): their logs are "
            "collected. Empty: none.",
        ),
        # --- where results go, what else is read --------------------------------------------
        "artifacts_root": Param(
            "artifacts",
            type="string",
            minLength=1,
            title="Artifacts root",
            section=OPERATOR,
            description_md="Folder (or `s3://bucket/prefix`) under which each run writes its "
            "results, logs and report.",
        ),
        "aws_conn_id": Param(
            "aws_default",
            type="string",
            minLength=1,
            title="AWS connection",
            section=OPERATOR,
            description="For an s3:// artifacts root: the Airflow aws connection (credentials, "
            "endpoint_url, region). Kubernetes pods take theirs from a Secret (kubernetes."
            "secret_env) or their service account.",
        ),
        "prometheus_url": _optional(
            "Prometheus URL",
            OPERATOR,
            "Prometheus server for system metrics and alert rules. Empty: scrape the target's "
            "own /metrics.",
        ),
        "target_log": _optional(
            "Target log",
            OPERATOR,
            "Path of the target's log file, read by the checklist and collected into the "
            "artifacts. Empty: none.",
        ),
        "rollback": Param(
            {"type": "syncbridge"},
            type="object",
            title="Rollback action",
            section=OPERATOR,
            description_md='`{"type": "syncbridge"}` restores the reference service\'s previous '
            'release; `{"type": "command", "command": [...]}` runs a command; '
            '`{"type": "webhook", "url": "..."}` calls a webhook; `{"type": "kubernetes", '
            '"namespace": ..., "deployment": ...}` undoes a rollout.',
        ),
    }
