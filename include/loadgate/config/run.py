"""What one gate run is asked to do, validated before anything is sent.

A trigger (the DAG's form, a REST trigger's ``conf``, a deploy Asset event's ``extra``) and the
operator's profile it names end up here (:func:`resolve_trigger`); the result is what the tasks
pass each other (through XCom: it holds no secret). :func:`build_run_config` builds one from
operator-level settings directly (the CLI, tests): it is never given a trigger's values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from loadgate.actions import ActionConfig, RollbackAction
from loadgate.actions.base import webhook_origin
from loadgate.config.pods import PodSettings
from loadgate.config.profiles import (
    Limits,
    Profile,
    TriggerError,
    profile_for,
    read_trigger,
    scales,
)
from loadgate.extensions import plan_files
from loadgate.plan import PlanError, load_plan
from loadgate.safety import check_target

# The deployment's own plans: a folder of ``NAME.yaml`` files (set on the workers and the DAG
# processor by operators, never by a trigger), known by name beside the shipped ones.
PLANS_DIR_ENV = "LOADGATE_PLANS_DIR"


class RunConfigError(ValueError):
    """The run's parameters are not usable; the message says which and why."""


def known_plans() -> dict[str, Path]:
    """Every plan a profile may name, by name: the shipped ones
    (:func:`loadgate.extensions.plan_files`), then the ``*.yaml`` files of the folder
    ``$LOADGATE_PLANS_DIR`` (a shipped plan's name wins)."""
    plans = {name: Path(str(file)) for name, file in plan_files().items()}
    folder = os.environ.get(PLANS_DIR_ENV, "").strip()
    if folder and Path(folder).is_dir():
        for file in sorted(Path(folder).glob("*.yaml")):
            if file.is_file():
                plans.setdefault(file.stem, file)
    return plans


def plan_stages(plan: str) -> list[str]:
    """The stages of ``plan`` (a name or a path), in its order; RunConfigError if it is not
    a usable plan."""
    try:
        return list(load_plan(resolve_plan_path(plan)).stages)
    except PlanError as exc:
        raise RunConfigError(str(exc)) from None


def same_plan(a: str, b: str) -> bool:
    """Whether two plan references (names or paths) are the same plan file."""
    try:
        return resolve_plan_path(a).resolve() == resolve_plan_path(b).resolve()
    except RunConfigError:
        return False


def resolve_plan_path(plan: str) -> Path:
    """A known plan by name (:func:`known_plans`) or a plan file by path."""
    candidate = Path(plan)
    if candidate.suffix not in (".yaml", ".yml"):
        shipped = known_plans()
        if plan not in shipped:
            known = ", ".join(sorted(shipped))
            raise RunConfigError(f"plan {plan!r} not found (known plans: {known or 'none'})")
        candidate = shipped[plan]
    if not candidate.is_file():
        raise RunConfigError(f"plan file {plan!r} not found")
    return candidate


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    profile: str = Field(min_length=1)
    target_url: str
    release: str = Field(default="", max_length=200)
    plan: str = Field(min_length=1)  # the profile's: a known plan's name or a plan file
    scale: float = Field(default=1.0, gt=0, le=10)
    time_scale: float = Field(default=1.0, gt=0, le=10)
    # the plan's stages to run, in its order (a run config built here has them checked against
    # the plan; not given: all of them, filled in when the run is prepared)
    stages: list[str] = Field(default_factory=list)
    backend: Literal["local", "kubernetes"] = "local"
    dry_run: bool = False
    artifacts_root: str = "artifacts"  # a local folder or s3://bucket/prefix
    aws_conn_id: str = "aws_default"  # the Airflow connection an s3:// artifacts_root uses
    shards: int | None = Field(default=None, ge=1, le=100)
    prometheus_url: str = ""
    target_log: str = ""
    rollback: RollbackAction | None = None  # None: not configured (the checklist fails)
    kubernetes: PodSettings = Field(default_factory=PodSettings)
    target_selector: str = ""  # the target's pods (label selector), for collect_logs
    allowlist: list[str] = Field(default_factory=list)
    slack_channel: str | None = None
    limits: Limits = Field(default_factory=Limits)

    @field_validator("target_url")
    @classmethod
    def _target(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))  # no duplicates; put in the plan's order on checking

    def plan_path(self) -> Path:
        return resolve_plan_path(self.plan)

    @field_serializer("rollback", when_used="json")
    def _rollback_without_webhook_path(self, value: ActionConfig | None) -> dict[str, Any] | None:
        """A webhook's path and query are often its secret: run.json and XCom hold only its
        ``scheme://host``; the tasks that call it take the action from the profile again."""
        if value is None:
            return None
        data = value.model_dump(mode="json")
        if data.get("url"):
            data["url"] = webhook_origin(data["url"])
        return data


def _humanize(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "conf"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def build_run_config(params: Mapping[str, Any], *, allowlist: list[str] | None = None) -> RunConfig:
    """A run config from operator-level settings (the CLI, tests; never a trigger's values):
    ``None`` means "not given". The target must be on the allowlist; the plan must exist."""
    values = {k: v for k, v in params.items() if v is not None}
    if allowlist is not None:
        values["allowlist"] = allowlist
    return _validated(values)


def _validated(values: Mapping[str, Any], where: str = "") -> RunConfig:
    """``values`` as a RunConfig whose target is allowed and whose plan exists; ``where`` ends
    an allowlist refusal (the profile it came from)."""
    if "stages" in values and not values["stages"]:
        raise RunConfigError("invalid run parameters: stages: choose at least one stage")
    try:
        config = RunConfig.model_validate(values)
    except ValidationError as exc:
        raise RunConfigError(f"invalid run parameters: {_humanize(exc)}") from None
    try:
        check_target(config.target_url, config.allowlist)
    except ValueError as exc:
        raise RunConfigError(f"{exc}{where}") from None
    names = plan_stages(config.plan)
    unknown = [s for s in config.stages if s not in names]
    if unknown:
        raise RunConfigError(
            f"invalid run parameters: stages: {', '.join(map(repr, unknown))} not in plan "
            f"{config.plan!r} (its stages: {', '.join(names)})"
        )
    config.stages = [s for s in names if not config.stages or s in config.stages]
    return config


def resolve_trigger(
    conf: Mapping[str, Any],
    *,
    profiles: Mapping[str, Profile],
    asset_extra: Mapping[str, Any] | None = None,
    plan: str | None = None,
) -> RunConfig:
    """A trigger's values (``conf`` or the form; a deploy event's ``release`` and
    ``target_url`` fill in what it leaves empty) on the profile it names. ``plan`` is the
    DAG's (a DAG per plan): the profile must run it, and a trigger that names no profile gets
    the only profile for it; without ``plan``, the only profile there is.

    Refused, with a clear message and before anything is written or sent: any key a trigger may
    not set (:data:`loadgate.config.profiles.TRIGGER_KEYS`), an unknown profile, a target off the
    profile's allowlist, a scale or time scale outside the profile's bounds, a stage the plan
    does not have, a profile of another plan than the DAG's.
    """
    values = dict(conf)
    for key in ("release", "target_url"):
        extra = (asset_extra or {}).get(key)
        if extra and not values.get(key):
            values[key] = extra
    try:
        trigger = read_trigger(values)
        if plan is None:
            name, profile = profile_for(trigger, profiles)
        else:
            name, profile = profile_for(
                trigger, profiles, lambda p: same_plan(p.plan, plan), f"for plan {plan!r}"
            )
        scale, time_scale = scales(trigger, name, profile)
    except TriggerError as exc:
        raise RunConfigError(str(exc)) from None
    if plan is not None and not same_plan(profile.plan, plan):
        raise RunConfigError(
            f"profile {name!r} runs plan {profile.plan!r}, not this DAG's plan {plan!r}: "
            "trigger the DAG of its plan"
        )
    target = trigger.target_url or profile.default_target
    if not target:
        raise RunConfigError(f"no target: profile {name!r} has no default_target, give target_url")
    settings = profile.model_dump(
        exclude={"description", "default_target", "scale", "time_scale"},
        exclude_none=True,
        mode="python",
    )
    settings.update(
        profile=name,
        target_url=target,
        release=trigger.release,
        scale=scale,
        time_scale=time_scale,
        dry_run=trigger.dry_run,
    )
    if trigger.stages is not None:
        settings["stages"] = trigger.stages
    return _validated(settings, f" (profile {name!r})")
