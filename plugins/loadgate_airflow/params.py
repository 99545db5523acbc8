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

from loadgate.plan import Plan, format_duration

TARGET = "Target and release"
LOAD = "Load shape"


def _optional(
    title: str, section: str, description: str, kind: str = "string", **schema: Any
) -> Param:
    """A field that may stay empty: ``None`` means the run's default behaviour."""
    return Param(
        None, type=["null", kind], title=title, section=section, **schema, description=description
    )


def _profile(default: str | None) -> Param:
    about = (
        "The gated service's profile, set by operators (the `loadgate_profiles` Variable): "
        "its plan (this DAG's), allowed targets, rollback action, where the load runs and "
        "where results go."
    )
    if default is None:
        return Param(
            None,
            type=["null", "string"],
            minLength=1,
            title="Profile",
            section=TARGET,
            description_md=about + " Empty: the only profile for this DAG's plan.",
        )
    return Param(
        default, type="string", minLength=1, title="Profile", section=TARGET, description_md=about
    )


def release_gate_params(
    stages: Sequence[str], profile: str | None = None, plan: Plan | None = None
) -> dict[str, Param]:
    """The form of a release-gate DAG: what a trigger may set, and nothing else (the rest is
    the profile's, set by operators: ``loadgate.config.profiles``); ``stages`` are the plan's, in
    its order; ``profile`` the form's default (``None``: the only profile for the plan)."""
    longest = max((s.duration for s in plan.stages.values()), default=0.0) if plan else 0.0
    schedule = (
        f" (1 = the plan's schedule, its longest stage {format_duration(longest)}; 0.05 plays "
        f"it in {format_duration(round(longest * 0.05))})"
        if longest
        else " (1 = the plan's schedule)"
    )
    return {
        # --- what to gate -------------------------------------------------------------------
        "profile": _profile(profile),
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
            "Multiplies virtual users, connections and rates (1 = the plan's load, 0.01 = a "
            "hundredth of it), up to the profile's limit. Empty: the profile's scale.",
            kind="number",
            exclusiveMinimum=0,
            maximum=10,
        ),
        "time_scale": _optional(
            "Time scale",
            LOAD,
            "Shortens the schedule only (ramps, holds, stage durations, start times"
            + schedule
            + "); users keep the plan's think times and intervals, so the request rate follows "
            "the number of users and a shorter run sends fewer requests, never faster ones. "
            "Empty: the profile's.",
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
            description="Which of the plan's load stages to run ("
            + ", ".join(stages)
            + "); they run in the plan's order.",
        ),
    }
