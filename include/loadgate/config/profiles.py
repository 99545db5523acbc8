"""Gate profiles: the operator's configuration of one gated service, and what a trigger may add.

The trust boundary of a gate run. An operator (the platform team) owns a **profile** per gated
service: its plan, the targets load may go to, the rollback action, where the load engine runs
(backend, Kubernetes pod settings), the target's pods, metrics and log sources, the artifacts
root and its AWS connection, the Slack channel, and the bounds of what a trigger may ask.
A **trigger** (a deploy pipeline's REST call or Asset event, a person's form) chooses only the
profile, the target URL (within the profile's allowlist), the release, ``scale``,
``time_scale`` (each within the profile's bounds), ``stages`` (a subset of the plan's) and
``dry_run``. Anything else a trigger sends is refused with the list of what is allowed: a
trigger never names a command, a file, an image, a module or a bucket.

Profiles are data (JSON or YAML): a mapping of profile name → :class:`Profile`. Installed
packages ship profiles through the ``loadgate.profiles`` entry points
(:data:`loadgate.extensions.PROFILES`; the example ships one for its reference service); a
deployment's own profiles are added to them or replace one by name (in Airflow: the Variable
``loadgate_profiles``). A trigger that names no profile gets the only one there is (or the only
one for the DAG's plan); with several, it must name one.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from loadgate.actions import RollbackAction
from loadgate.config.pods import PodSettings
from loadgate.extensions import PROFILES, declared
from loadgate.safety import allowlist_entry

MAX_STAGE_S = 4 * 3600.0  # the longest stage any profile may allow (the DAG's task timeouts)
TRIGGER_KEYS = ("profile", "target_url", "release", "scale", "time_scale", "stages", "dry_run")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class ProfileError(ValueError):
    """A profile (or the profiles' configuration) is not usable; the message names the key."""


class TriggerError(ValueError):
    """A trigger asked for something it may not, or something the profile does not allow."""


class Limits(BaseModel):
    """What a trigger's ``scale`` and ``time_scale`` may be, and the caps on the load they
    imply (checked on the plan's numbers before anything is written or sent)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_scale: float = Field(1.0, gt=0, le=10, description="the largest scale a trigger may set")
    min_time_scale: float = Field(0.001, gt=0, le=1)
    max_time_scale: float = Field(1.0, gt=0, le=1, description="1: the plan's own schedule")
    max_vus: int = Field(20_000, ge=1, description="users (or connections) of a stage, scaled")
    max_shards: int = Field(100, ge=1, le=1000, description="load generators of a stage")
    max_stage_s: float = Field(
        MAX_STAGE_S, gt=0, le=MAX_STAGE_S, description="a stage's length, time-scaled"
    )
    max_rate: float = Field(50_000.0, gt=0, description="an arrival rate per second, scaled")
    max_attempts: int = Field(
        2, ge=1, le=2, description="runs of a stage: 2 re-runs an inconclusive one once, 1 never"
    )
    invalid_fails_run: bool = Field(
        True, description="an invalid stage (the test cannot vouch for it) fails the DAG run"
    )


class Profile(BaseModel):
    """One gated service, as its operator configures it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    description: str = ""
    plan: str = Field(
        min_length=1,
        description="a shipped plan by name, or a plan file the deployment ships (a path)",
    )
    allowlist: list[str] = Field(
        default_factory=list,
        description="targets load may go to: hosts, *.suffixes, networks, URL prefixes "
        "(loopback is always allowed)",
    )
    default_target: str | None = Field(None, description="the target when a trigger gives none")
    limits: Limits = Field(default_factory=Limits)
    scale: float = Field(1.0, gt=0, description="when a trigger gives none (within limits)")
    time_scale: float = Field(1.0, gt=0, description="when a trigger gives none")
    shards: int | None = Field(None, ge=1, le=1000, description="per stage; None: the plan's")
    backend: Literal["local", "kubernetes"] = "local"
    kubernetes: PodSettings = Field(default_factory=PodSettings)
    target_selector: str = ""
    prometheus_url: str = ""
    target_log: str = ""
    rollback: RollbackAction | None = Field(None, description="none: the checklist fails")
    artifacts_root: str = "artifacts"
    aws_conn_id: str = "aws_default"
    slack_channel: str | None = None

    @field_validator("allowlist")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        for entry in value:
            allowlist_entry(entry)  # a clear ValueError naming a malformed entry
        return value

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> Profile:
        if self.scale > self.limits.max_scale:
            raise ValueError(f"scale {self.scale:g} is above limits.max_scale")
        if not self.limits.min_time_scale <= self.time_scale <= self.limits.max_time_scale:
            raise ValueError(f"time_scale {self.time_scale:g} is outside the limits")
        return self


def shipped_profiles() -> dict[str, Profile]:
    """The profiles installed packages ship (entry points ``loadgate.profiles``: a name →
    ``module:function`` returning the profile's settings), validated; ProfileError names a bad
    one."""
    profiles: dict[str, Profile] = {}
    for name, target in declared(PROFILES).items():
        module, _, attr = target.partition(":")
        try:
            data = getattr(importlib.import_module(module), attr)()
        except (ImportError, AttributeError, TypeError) as exc:
            raise ProfileError(f"profiles.{name}: {target} is not usable: {exc}") from None
        try:
            profiles[name] = Profile.model_validate(dict(data))
        except ValidationError as exc:
            raise ProfileError(_describe(exc, f"profiles.{name}")) from None
    return profiles


def _describe(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def load_profiles(data: Any, *, base: Mapping[str, Profile] | None = None) -> dict[str, Profile]:
    """Profiles from operator data (a mapping, or its JSON/YAML text) over ``base`` (the shipped
    ones by default): a profile of the same name replaces the base's. ProfileError names the
    first bad key (``profiles.shop.limits.max_scale: …``)."""
    profiles = dict(shipped_profiles() if base is None else base)
    if data is None or data == "":
        return profiles
    if isinstance(data, str | bytes):
        try:
            data = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise ProfileError(f"profiles: not JSON or YAML: {exc}") from None
        if data is None:
            return profiles
    if not isinstance(data, Mapping):
        raise ProfileError("profiles: must be a mapping of profile name to its settings")
    for name, settings in data.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ProfileError(
                f"profiles: {name!r} is not a profile name (lower case letters, digits, "
                "'-', '_', '.'; at most 63)"
            )
        if not isinstance(settings, Mapping):
            raise ProfileError(f"profiles.{name}: must be a mapping of settings")
        try:
            profiles[name] = Profile.model_validate(dict(settings))
        except ValidationError as exc:
            raise ProfileError(_describe(exc, f"profiles.{name}")) from None
    return profiles


def load_profiles_file(path: str | Path) -> dict[str, Profile]:
    """Profiles from a JSON or YAML file (over the shipped ones)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ProfileError(f"profiles file {path}: {exc.strerror or exc}") from None
    return load_profiles(text)


class Trigger(BaseModel):
    """What a trigger may ask: nothing else is accepted."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    profile: str | None = Field(None, min_length=1)
    target_url: str | None = Field(None, min_length=1, max_length=2000)
    release: str = Field("", max_length=200)
    scale: float | None = Field(None, gt=0)
    time_scale: float | None = Field(None, gt=0)
    stages: list[str] | None = Field(None, min_length=1)
    dry_run: bool = False


def read_trigger(conf: Mapping[str, Any]) -> Trigger:
    """A trigger's ``conf`` (or the form's values) checked for what it may contain; ``None``
    values mean "not given". TriggerError lists what is allowed."""
    given = {k: v for k, v in conf.items() if v is not None}
    unknown = sorted(str(k) for k in given if k not in TRIGGER_KEYS)
    if unknown:
        raise TriggerError(
            f"a trigger may not set {', '.join(unknown)}: it may set only "
            f"{', '.join(TRIGGER_KEYS)} (everything else is the profile's, set by operators)"
        )
    for key in ("scale", "time_scale"):
        value = given.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise TriggerError(f"{key}: must be a finite number")
    try:
        return Trigger.model_validate(given)
    except ValidationError as exc:
        raise TriggerError("invalid trigger: " + _describe(exc, "")) from None


def scales(trigger: Trigger, profile_name: str, profile: Profile) -> tuple[float, float]:
    """The run's (scale, time scale): the trigger's, else the profile's defaults; either within
    the profile's limits."""
    limits = profile.limits
    scale = profile.scale if trigger.scale is None else trigger.scale
    time_scale = profile.time_scale if trigger.time_scale is None else trigger.time_scale
    if scale > limits.max_scale:
        raise TriggerError(
            f"scale {scale:g} is above profile {profile_name!r}'s limit ({limits.max_scale:g})"
        )
    if not limits.min_time_scale <= time_scale <= limits.max_time_scale:
        raise TriggerError(
            f"time_scale {time_scale:g} is outside profile {profile_name!r}'s bounds "
            f"({limits.min_time_scale:g} to {limits.max_time_scale:g})"
        )
    return scale, time_scale


def profile_for(
    trigger: Trigger,
    profiles: Mapping[str, Profile],
    fits: Callable[[Profile], bool] | None = None,
    what: str = "",
) -> tuple[str, Profile]:
    """The profile the trigger names, as (name, profile); a trigger that names none gets the
    only profile (of those that ``fits``, described by ``what``, e.g. "for plan 'shop'"), and
    a clear error listing them when there are several or none."""
    if trigger.profile is not None:
        found = profiles.get(trigger.profile)
        if found is None:
            raise TriggerError(
                f"unknown profile {trigger.profile!r} (profiles: {', '.join(sorted(profiles))})"
            )
        return trigger.profile, found
    candidates = sorted(n for n, p in profiles.items() if fits is None or fits(p))
    if len(candidates) == 1:
        return candidates[0], profiles[candidates[0]]
    where = f" {what}" if what else ""
    if not candidates:
        known = ", ".join(sorted(profiles)) or "none"
        raise TriggerError(f"no profile{where}: configure one (profiles: {known})")
    raise TriggerError(f"name a profile: there are several{where} ({', '.join(candidates)})")
