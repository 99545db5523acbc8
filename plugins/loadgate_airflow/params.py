"""The release gate's trigger form: its Params, in the sections a person reads them in.

Every default validates, so the form opens ready to submit: with nothing changed, **Trigger**
starts the documented default run. A value that may be left out is nullable with a ``None``
default (Airflow's UI marks a field required unless its type admits ``null``, and an emptied
text field is sent as ``null``); the run config reads ``None`` as "not given" and applies its
own default (``loadgate.config.run.resolve_trigger``). The form holds only what a trigger may
set; everything else is the profile's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Param

from loadgate.config.profiles import DEFAULT_PROFILE

TARGET = "Target and release"
LOAD = "Load shape"


def _optional(
    title: str, section: str, description: str, kind: str = "string", **schema: Any
) -> Param:
    """A field that may stay empty: ``None`` means the run's default behaviour."""
    return Param(
        None, type=["null", kind], title=title, section=section, **schema, description=description
    )


def release_gate_params(stages: Sequence[str]) -> dict[str, Param]:
    """The form of ``release_gate``: what a trigger may set, and nothing else (the rest is the
    profile's, set by operators: ``loadgate.config.profiles``); ``stages`` are the plan's, in its
    order."""
    return {
        # --- what to gate -------------------------------------------------------------------
        "profile": Param(
            DEFAULT_PROFILE,
            type="string",
            minLength=1,
            title="Profile",
            section=TARGET,
            description_md="The gated service's profile, set by operators (the "
            "`loadgate_profiles` Variable): its plan, allowed targets, rollback action, where "
            "the load runs and where results go. `syncbridge`: the reference service.",
        ),
        "target_url": _optional(
            "Target URL",
            TARGET,
            "Base URL of the freshly deployed service; it must be on the profile's allowlist "
            "(loopback is always allowed). Empty: the profile's default target.",
            maxLength=2000,
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
        "scale": _optional(
            "Load scale",
            LOAD,
            "Multiplies virtual users, connections and rates (1 = the plan's 10,000 users; "
            "0.01 = 100), up to the profile's limit. Empty: the profile's scale.",
            kind="number",
            exclusiveMinimum=0,
            maximum=10,
        ),
        "time_scale": _optional(
            "Time scale",
            LOAD,
            "Shortens the schedule only (ramps, holds, stage durations, start times; 1 = the "
            "plan's 44-minute API test, 0.05 plays it in about 2 minutes); users keep the "
            "plan's think times and intervals, so the request rate follows the number of users "
            "and a shorter run sends fewer requests, never faster ones. Empty: the profile's.",
            kind="number",
            exclusiveMinimum=0,
            maximum=1,
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
    }
