"""What one gate run is asked to do, validated before anything is sent.

A trigger (the DAG's form, a REST trigger's ``conf``, a deploy Asset event's ``extra``) and the
operator's profile it names end up here (:func:`resolve_trigger`); the result is what the tasks
pass each other (through XCom: it holds no secret). :func:`build_run_config` builds one from
operator-level settings directly (the CLI, tests): it is never given a trigger's values.
"""

from __future__ import annotations

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

from loadgate.actions.rollback import RollbackConfig, webhook_origin
from loadgate.config.pods import PodSettings
from loadgate.config.profiles import (
    DEFAULT_PROFILE,
    Limits,
    Profile,
    TriggerError,
    profile_for,
    read_trigger,
    scales,
)
from loadgate.extensions import plan_files
from loadgate.safety import check_target

DEFAULT_PLAN = "harmonyflow-10k"
ALL_STAGES = ("api", "websocket", "session")


class RunConfigError(ValueError):
    """The run's parameters are not usable; the message says which and why."""


def resolve_plan_path(plan: str) -> Path:
    """A shipped plan by name (:func:`loadgate.extensions.plan_files`) or a plan file by path."""
    candidate = Path(plan)
    if candidate.suffix not in (".yaml", ".yml"):
        shipped = plan_files()
        if plan not in shipped:
            known = ", ".join(sorted(shipped))
            raise RunConfigError(f"plan {plan!r} not found (known plans: {known or 'none'})")
        candidate = Path(str(shipped[plan]))
    if not candidate.is_file():
        raise RunConfigError(f"plan file {plan!r} not found")
    return candidate


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    profile: str = DEFAULT_PROFILE
    target_url: str
    release: str = Field(default="", max_length=200)
    plan: str = DEFAULT_PLAN
    scale: float = Field(default=1.0, gt=0, le=10)
    time_scale: float = Field(default=1.0, gt=0, le=10)
    stages: list[Literal["api", "websocket", "session"]] = Field(
        default_factory=lambda: list(ALL_STAGES)
    )
    backend: Literal["local", "kubernetes"] = "local"
    dry_run: bool = False
    artifacts_root: str = "artifacts"  # a local folder or s3://bucket/prefix
    aws_conn_id: str = "aws_default"  # the Airflow connection an s3:// artifacts_root uses
    shards: int | None = Field(default=None, ge=1, le=100)
    prometheus_url: str = ""
    target_log: str = ""
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)
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
        if not value:
            raise ValueError("choose at least one stage")
        return [s for s in ALL_STAGES if s in value]  # the plan's order, no duplicates

    def plan_path(self) -> Path:
        return resolve_plan_path(self.plan)

    @field_serializer("rollback", when_used="json")
    def _rollback_without_webhook_path(self, value: RollbackConfig) -> dict[str, Any]:
        """A webhook's path and query are often its secret: run.json and XCom hold only its
        ``scheme://host``; the tasks that call it take the action from the profile again."""
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
    try:
        config = RunConfig.model_validate(values)
    except ValidationError as exc:
        raise RunConfigError(f"invalid run parameters: {_humanize(exc)}") from None
    try:
        check_target(config.target_url, config.allowlist)
    except ValueError as exc:
        raise RunConfigError(f"{exc}{where}") from None
    config.plan_path()
    return config


def resolve_trigger(
    conf: Mapping[str, Any],
    *,
    profiles: Mapping[str, Profile],
    asset_extra: Mapping[str, Any] | None = None,
) -> RunConfig:
    """A trigger's values (``conf`` or the form; a deploy event's ``release`` and
    ``target_url`` fill in what it leaves empty) on the profile it names.

    Refused, with a clear message and before anything is written or sent: any key a trigger may
    not set (:data:`loadgate.config.profiles.TRIGGER_KEYS`), an unknown profile, a target off the
    profile's allowlist, a scale or time scale outside the profile's bounds, a stage the plan
    does not have.
    """
    values = dict(conf)
    for key in ("release", "target_url"):
        extra = (asset_extra or {}).get(key)
        if extra and not values.get(key):
            values[key] = extra
    try:
        trigger = read_trigger(values)
        profile = profile_for(trigger, profiles)
        scale, time_scale = scales(trigger, trigger.profile, profile)
    except TriggerError as exc:
        raise RunConfigError(str(exc)) from None
    target = trigger.target_url or profile.default_target
    if not target:
        raise RunConfigError(
            f"no target: profile {trigger.profile!r} has no default_target, give target_url"
        )
    settings = profile.model_dump(
        exclude={"description", "default_target", "scale", "time_scale"},
        exclude_none=True,
        mode="python",
    )
    settings.update(
        profile=trigger.profile,
        target_url=target,
        release=trigger.release,
        scale=scale,
        time_scale=time_scale,
        dry_run=trigger.dry_run,
    )
    if trigger.stages is not None:
        settings["stages"] = trigger.stages
    return _validated(settings, f" (profile {trigger.profile!r})")
