"""What one gate run is asked to do, validated before anything is sent.

The DAG's Params, a REST trigger's ``conf`` and a deploy Asset event's ``extra`` all end up here;
the result is what the tasks pass each other (through XCom: it holds no secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loadgate.kubernetes import PodSettings
from loadgate.rollback import RollbackConfig
from loadgate.safety import check_target

PLANS_DIR = Path(__file__).resolve().parent.parent / "plans"
DEFAULT_PLAN = "harmonyflow-10k"
ALL_STAGES = ("api", "websocket", "session")


class RunConfigError(ValueError):
    """The run's parameters are not usable; the message says which and why."""


def resolve_plan_path(plan: str) -> Path:
    """A plan by name (``harmonyflow-10k``, from include/plans) or by path."""
    candidate = Path(plan)
    if candidate.suffix not in (".yaml", ".yml"):
        candidate = PLANS_DIR / f"{plan}.yaml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in PLANS_DIR.glob("*.yaml")))
        raise RunConfigError(f"plan {plan!r} not found (known plans: {known or 'none'})")
    return candidate


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

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


def _humanize(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "conf"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def build_run_config(
    params: Mapping[str, Any],
    *,
    asset_extra: Mapping[str, Any] | None = None,
    allowlist: list[str] | None = None,
) -> RunConfig:
    """Params (with the trigger's conf already merged by Airflow) plus a deploy event's extra.

    A deploy pipeline's Asset event may carry ``release`` and ``target_url``; they fill in what
    the params leave empty. The target must be on the allowlist; the plan must exist.
    """
    values = {k: v for k, v in params.items() if v is not None}
    for key in ("release", "target_url"):
        if asset_extra and asset_extra.get(key) and not values.get(key):
            values[key] = asset_extra[key]
    if allowlist is not None:
        values["allowlist"] = allowlist
    try:
        config = RunConfig.model_validate(values)
    except ValidationError as exc:
        raise RunConfigError(f"invalid run parameters: {_humanize(exc)}") from None
    try:
        check_target(config.target_url, config.allowlist)
    except ValueError as exc:
        raise RunConfigError(str(exc)) from None
    config.plan_path()
    return config
