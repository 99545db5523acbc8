"""The plan as a validated model: stages, scenarios with their executors, criteria, metrics.

A plan is data (a ``*.yaml`` file, shipped as package data: :mod:`loadgate.extensions`);
:func:`loadgate.plan.load_plan` turns a file into a :class:`Plan` or raises a
:class:`~loadgate.plan.errors.PlanError` naming file, field and reason. Every duration accepts
``"2m"``, ``"30s"``, ``"10ms"`` or plain seconds and is stored in seconds. Models are frozen: a
loaded plan is never changed; scale, time scale and shard are applied by
:mod:`loadgate.plan.profile`, which derives a concrete per-shard profile from it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import Field, field_validator

from loadgate.engine.executors.base import Model, PositiveSeconds, executors

Level = Literal["acceptance", "rollback", "investigate"]
LEVELS: tuple[str, ...] = ("acceptance", "rollback", "investigate")
# the executors' names, in the registry's order (loadgate.engine.executors)
EXECUTORS: tuple[str, ...] = tuple(e.name for e in executors())

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BREACH_RE = re.compile(r"^\s*(<=|>=|<|>|==|!=)\s*(" + _NUMBER + r")\s*(%?)\s*$")


# --- scenarios: one config model per executor, discriminated by ``executor`` -------------------

if TYPE_CHECKING:
    from loadgate.engine.executors.base import ScenarioConfig as Scenario
else:
    Scenario = Annotated[
        Union[tuple(e.config for e in executors())],  # noqa: UP007 - built from the registry
        Field(discriminator="executor"),
    ]


# --- stages ------------------------------------------------------------------------------------


class Resources(Model):
    """Kubernetes requests and limits of one shard's pod (``cpu: "1"``, ``memory: 1Gi``)."""

    requests: dict[Literal["cpu", "memory", "ephemeral-storage"], str] = Field(default_factory=dict)
    limits: dict[Literal["cpu", "memory", "ephemeral-storage"], str] = Field(default_factory=dict)


class ExpectedFigure(Model):
    """A row of the seed's expected-results tables (§4), for the report: what was promised."""

    label: str
    metric: str | None = None
    stat: str | None = None
    target: str | None = None
    expected: float | None = None
    unit: str = ""
    source: str = ""


class Stage(Model):
    description: str = ""
    scenarios: dict[str, Scenario] = Field(min_length=1)
    shards: int = Field(default=1, ge=1, le=1000)
    resources: Resources | None = None
    expected: list[ExpectedFigure] = Field(default_factory=list)

    @property
    def duration(self) -> float:
        """Scheduled length: the latest scenario end (graceful stops excluded)."""
        return max(s.end for s in self.scenarios.values())


# --- criteria and system metrics ----------------------------------------------------------------


class Scope(Model):
    """Restricts an engine metric to some scenarios and/or request or WebSocket names.

    A request matches a name given as ``"METHOD /route/{template}"`` or as the bare template.
    """

    scenarios: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)


class Criterion(Model):
    """One criterion of the seed, read precisely.

    ``breach`` is the condition that makes it fail (``"> 5%"``, ``">= 500"``): the seed's
    acceptance targets are written as their negation (target ``< 1%`` → breach ``">= 1%"``).
    ``window`` is the sliding window the engine evaluates it over while the load runs (only
    ``rollback`` criteria stop a stage); a gate evaluates it over the whole stage.
    ``min_samples`` is the least denominator (requests, connections + messages, latency
    samples, system samples) under which it reads "insufficient data", never breached.
    ``relative_to: baseline`` compares ``value / reference - 1`` where the reference is a
    baseline supplied at evaluation (previous release), else ``reference``.
    ``scaled: true`` marks a threshold that is an amount of load (10,000 connections): it is
    multiplied by the run's ``--scale`` when evaluated, as the load itself was.
    ``must_have: true`` (Kayenta's mustHaveData): too little data for it makes its stage
    inconclusive (re-run once, then decided on the pooled evidence) instead of "no data".
    """

    id: str
    level: Level
    description: str = ""
    source: str = ""
    metric: str
    stat: str | None = None
    breach: str
    window: PositiveSeconds = 30.0
    min_samples: int = Field(default=0, ge=0)
    stages: list[str] | None = None
    scope: Scope = Field(default_factory=Scope)
    relative_to: Literal["baseline"] | None = None
    reference: float | None = None
    unknown: Literal["ignore", "breach"] = "ignore"
    scaled: bool = False
    must_have: bool = False

    @field_validator("id")
    @classmethod
    def _id_form(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError("must be lower case letters, digits, '-', '_' or '.'")
        return value

    @field_validator("breach")
    @classmethod
    def _breach_form(cls, value: str) -> str:
        if not _BREACH_RE.match(value):
            raise ValueError("must be an operator and a number, e.g. '> 5%', '>= 500', '< 0.99'")
        return value

    @property
    def op(self) -> str:
        match = _BREACH_RE.match(self.breach)
        assert match
        return match.group(1)

    @property
    def threshold(self) -> float:
        match = _BREACH_RE.match(self.breach)
        assert match
        value = float(match.group(2))
        return value / 100.0 if match.group(3) else value

    def applies_to(self, stage: str) -> bool:
        return self.stages is None or stage in self.stages


class ScrapeSpec(Model):
    """How a direct scrape of the target's ``/metrics`` computes the metric."""

    metric: str
    labels: dict[str, str] = Field(default_factory=dict)
    fn: Literal["gauge", "rate", "increase", "changes"] = "gauge"
    divide_by: str | None = None


class SystemMetric(Model):
    """A named system metric the criteria can use, for both metrics sources.

    ``window`` is the range of ``rate``/``increase``/``changes`` (the ``[30s]`` of the PromQL
    expression); the engine asks the source for it once a second.
    """

    description: str = ""
    unit: str = ""
    promql: str
    scrape: ScrapeSpec | None = None
    window: PositiveSeconds = 30.0


class LoadLevel(Model):
    """A row of the seed's §9.2 (expected at that load) with §6.1's limits for it."""

    name: str
    users: int = Field(ge=0)
    expected_p95_ms: float | None = None
    expected_error_rate: float | None = None
    expected_cpu: float | None = None
    expected_memory: float | None = None
    limit_p95_ms: float | None = None
    limit_error_rate: float | None = None


class GeneratorLimits(Model):
    """When the generator cannot vouch for its numbers: a window is saturated when its event-loop
    lag or its CPU (in cores, of the one core Python uses) passes the limit; the results are
    flagged when more than ``max_fraction`` of the windows are."""

    loop_lag_ms: float = Field(default=200.0, gt=0)
    cpu: float = Field(default=0.9, gt=0)
    max_fraction: float = Field(default=0.05, ge=0, le=1)


class Plan(Model):
    name: str
    description: str = ""
    source: str = ""
    stages: dict[str, Stage] = Field(min_length=1)
    criteria: list[Criterion] = Field(default_factory=list)
    system_metrics: dict[str, SystemMetric] = Field(default_factory=dict)
    load_levels: list[LoadLevel] = Field(default_factory=list)
    generator: GeneratorLimits = Field(default_factory=GeneratorLimits)
    # The live rollback test's false-alarm budget per stage: the probability that a release
    # whose rates are all at or below their thresholds is aborted by a rate criterion, over
    # the whole stage, all its shards and all its live rate criteria (loadgate.verdict.sequential).
    live_alpha: float = Field(default=0.01, gt=0, lt=1)

    def criteria_for(self, stage: str, levels: tuple[str, ...] = LEVELS) -> list[Criterion]:
        return [c for c in self.criteria if c.level in levels and c.applies_to(stage)]
