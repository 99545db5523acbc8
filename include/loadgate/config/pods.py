"""Load pod settings as an operator writes them in a profile: namespace, image, secrets by
reference, tolerations. Validated here; rendered into pods by
:mod:`loadgate.backends.kubernetes.manifests`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    pass


_SECRET_NAME = re.compile(
    r"(TOKEN|PASSW|SECRET|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL|AUTH|SESSION_?KEY|COOKIE)",
    re.IGNORECASE,
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# --- settings -------------------------------------------------------------------------------------


class SecretKeyRef(BaseModel):
    """One key of a Kubernetes Secret, given to the container as an environment variable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: str
    key: str
    optional: bool = False


class SecretVolume(BaseModel):
    """A Kubernetes Secret mounted read-only as files (mode 0400 by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: str
    mount_path: str
    default_mode: int = Field(default=0o400, ge=0, le=0o777)
    optional: bool = False

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.operator == "Equal" and not self.key:
            raise ValueError("a toleration with operator Equal needs a key")
        return self

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        for name, key in (("key", "key"), ("value", "value"), ("effect", "effect")):
            if getattr(self, name) is not None:
                out[key] = getattr(self, name)
        if self.toleration_seconds is not None:
            out["tolerationSeconds"] = self.toleration_seconds
        return out


class PodSettings(BaseModel):
    """Where and how the load pods run; an SRE's configuration, not a run's parameter.

    Resources come from the plan's stage (``resources``: requests and limits of one shard);
    ``default_resources`` applies to a stage that has none.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = "loadgate"
    image: str = "loadgate:latest"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    service_account: str | None = None
    automount_service_account_token: bool = False
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class: str | None = None
    spread_shards: bool = True
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict, description="plain, non-secret values")
    secret_env: dict[str, SecretKeyRef] = Field(default_factory=dict)
    env_from_secrets: list[str] = Field(default_factory=list)
    secret_volumes: list[SecretVolume] = Field(default_factory=list)
    results_dir: str = "/var/lib/loadgate"
    tmp_size_limit: str = "256Mi"
    results_size_limit: str = "1Gi"
    run_as_user: int = Field(default=10001, ge=1)
    run_as_group: int = Field(default=10001, ge=1)
    default_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "1", "memory": "512Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        }
    )
    deadline_margin_s: int = Field(
        default=600, ge=0, description="activeDeadlineSeconds = the stage's length + this"
    )
    termination_grace_s: int = Field(default=30, ge=0)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid namespace name")
        return value

    @field_validator("env")
    @classmethod
    def _no_plain_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if _SECRET_NAME.search(name):
                raise ValueError(
                    f"env {name} looks like a credential: give it as secret_env "
                    "(a Kubernetes Secret key), never as a plain value in the pod spec"
                )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            check_label(key, label)
        return value

    @field_validator("results_dir")
    @classmethod
    def _results_dir(cls, value: str) -> str:
        if not value.startswith("/") or value.rstrip("/") in ("", "/tmp"):
            raise ValueError("must be an absolute path other than / and /tmp")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _distinct_env(self) -> PodSettings:
        both = set(self.env) & set(self.secret_env)
        if both:
            raise ValueError(f"env and secret_env both set {', '.join(sorted(both))}")
        return self


def check_label(key: str, value: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(f"label {key}={value!r} is not a valid label value")
