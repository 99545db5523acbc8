"""What every executor shares: the registry, the config base, the profile base and the driver.

An executor is one module of this package (k6's ``lib/executor/``): its plan config (a pydantic
model, a subclass of :class:`ScenarioConfig` whose ``executor`` field is its name), its
per-shard profile (a :class:`Profile`: ``target_at(t)`` and the rest) and its driver (an
``async def drive(run, profile)`` that starts and stops a ``ScenarioRun``'s VUs as the
profile says), listed as an :class:`Executor` in the package's registry
(:mod:`loadgate.engine.executors`). The plan builds its scenario union from the registry
(:mod:`loadgate.plan.model`), a stage asks each config for its profile
(:mod:`loadgate.plan.profile`) and ``ScenarioRun.run`` (:mod:`.driver`) drives a profile with
its executor's driver: nothing else names an executor.

Every duration of a config accepts ``"2m"``, ``"30s"``, ``"10ms"`` or plain seconds and is stored
in seconds (:data:`Seconds`, :data:`PositiveSeconds`; the plan's other durations use them too).

The driver's shared machinery (a scenario's VUs, their stop and their lifetimes) is
:class:`~loadgate.engine.executors.driver.ScenarioRun`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from loadgate.engine.durations import parse_duration
from loadgate.engine.shard import Shard

Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
PositiveSeconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]

_EXEC_RE = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")


def _exec_form(value: str) -> str:
    if not _EXEC_RE.match(value):
        raise ValueError("must be 'package.module:function' or a registered scenario name")
    return value


class Model(BaseModel):
    """The plan's models: unknown fields refused, frozen once loaded, no inf or NaN."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- the config ---------------------------------------------------------------------------------


class ScenarioConfig(Model):
    """A plan scenario: what every executor's config has. A subclass adds its ``executor``
    field (``Literal`` of its name, the plan's discriminator), its own fields and validation,
    ``duration`` and ``peak``, and :meth:`build_profile`."""

    exec: Annotated[str, AfterValidator(_exec_form)] = Field(
        description="'package.module:function' or a name registered in loadgate.scenarios"
    )
    description: str = ""
    options: dict[str, Any] = Field(default_factory=dict)
    start_time: Seconds = 0.0
    graceful_stop: Seconds = 30.0

    # its users move through the load levels (the report's rows of a load level are points on it)
    ramps_users: ClassVar[bool] = False

    if TYPE_CHECKING:  # each executor's field or property

        @property
        def executor(self) -> str: ...

        @property
        def duration(self) -> float: ...

        @property
        def peak(self) -> int: ...

    @property
    def end(self) -> float:
        """Seconds from the stage start to the last scheduled moment (graceful stop excluded)."""
        return float(self.start_time + self.duration)

    def build_profile(
        self, name: str, *, shard: Shard, rotate: int, scale: float, time_scale: float
    ) -> Profile:
        """This scenario's concrete profile for one shard (``--scale`` and ``--time-scale``
        applied as :mod:`loadgate.plan.profile` describes)."""
        raise NotImplementedError  # pragma: no cover - every executor's config overrides it

    def profile_fields(
        self, name: str, *, shard: Shard, rotate: int, time_scale: float
    ) -> dict[str, Any]:
        """The keyword arguments every :class:`Profile` takes."""
        return {
            "name": name,
            "kind": self.executor,
            "start": self.start_time * time_scale,
            "graceful_stop": self.graceful_stop * time_scale,
            "shard": shard,
            "rotate": rotate,
            "exec_ref": self.exec,
            "options": self.options,
        }

    def problems(self) -> list[tuple[str, str]]:
        """Checks across fields, as (field, reason), made once the whole plan is valid."""
        return []


# --- the profile --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """A scenario's concrete schedule on one shard: ``total_at(t)`` across all shards and this
    shard's share of it, ``target_at(t)`` (seconds from the stage start)."""

    # what a VU of this executor is called in logs, and whether each runs the scenario once
    unit: ClassVar[str] = "VU"
    once: ClassVar[bool] = False

    name: str
    kind: str
    start: float
    duration: float
    graceful_stop: float
    shard: Shard
    rotate: int
    # the plan's scenario function and options: the results carry them, so that a summary can
    # read the scenario's declared pacing (loadgate.scenarios.declared_pacing) for its plan rate
    exec_ref: str = field(default="", kw_only=True)
    options: Mapping[str, Any] = field(default_factory=dict, kw_only=True, hash=False)

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def longest_grace(self) -> float:
        """The longest a VU may still run after it was asked to stop."""
        return self.graceful_stop

    def total_at(self, t: float) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def share(self, total: int) -> int:
        """This shard's share of ``total`` (VUs, connections, iterations of this scenario)."""
        return self.shard.share(total, self.rotate)

    def target_at(self, t: float) -> int:
        return self.share(self.total_at(t))

    def global_index(self, local: int) -> int:
        return self.shard.global_index(local, self.rotate)

    @property
    def peak_total(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def peak(self) -> int:
        return self.share(self.peak_total)

    @property
    def iteration_rate(self) -> float | None:
        """Iterations per second this shard starts on schedule (an open model), else None:
        its VUs loop, each at the scenario's own pace."""
        return None

    @classmethod
    def scheduled_iterations(cls, described: Mapping[str, Any], seconds: float) -> float | None:
        """The iterations a profile so ``described`` (:meth:`describe`, as the results carry
        it) schedules over a stage that ran ``seconds``, for an open model; else None."""
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "executor": self.kind,
            "start_s": round(self.start, 6),
            "duration_s": round(self.duration, 6),
            "graceful_stop_s": round(self.graceful_stop, 6),
            "peak_total": self.peak_total,
            "peak_this_shard": self.peak,
            "exec": self.exec_ref,
            "options": dict(self.options),
            **self.details(),
        }

    def details(self) -> dict[str, Any]:
        """What :meth:`describe` adds for this executor."""
        return {}


# --- the registry -------------------------------------------------------------------------------

# (run, profile): a driver.ScenarioRun and this executor's profile
Driver = Callable[[Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Executor:
    """One executor: its name (the plan's ``executor:``), config, profile and driver."""

    name: str
    config: type[ScenarioConfig]
    profile: type[Profile]
    drive: Driver

    def __post_init__(self) -> None:
        tag = get_args(self.config.model_fields["executor"].annotation)
        if tag != (self.name,):
            raise ValueError(f"{self.config.__name__}.executor must be Literal[{self.name!r}]")


_REGISTRY: dict[str, Executor] = {}


def register(*executors: Executor) -> None:
    """Add executors to the registry, in the order the plan's messages list them."""
    for entry in executors:
        if entry.name in _REGISTRY:
            raise ValueError(f"executor {entry.name!r} is registered twice")
        _REGISTRY[entry.name] = entry


def executor(name: str) -> Executor:
    """The executor called ``name`` (KeyError naming the known ones if there is none)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown executor {name!r}; known: {', '.join(_REGISTRY)}") from None


def find_executor(name: Any) -> Executor | None:
    """The executor called ``name``, or None (results of an unknown or missing executor)."""
    return _REGISTRY.get(name) if isinstance(name, str) else None


def executors() -> tuple[Executor, ...]:
    """Every registered executor, in registry order."""
    return tuple(_REGISTRY.values())
