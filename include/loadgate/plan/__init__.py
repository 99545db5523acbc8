"""Test plans as data: the validated model, loading, sharding and per-shard profiles."""

from loadgate.engine.durations import format_duration, parse_duration
from loadgate.engine.shard import Shard
from loadgate.plan.errors import PlanError
from loadgate.plan.load import load_plan, plan_from_data
from loadgate.plan.model import (
    ConnectionRamp,
    ConstantArrivalRate,
    ConstantVUs,
    Criterion,
    Plan,
    RampingVUs,
    Stage,
    SystemMetric,
)

__all__ = [
    "ConnectionRamp",
    "ConstantArrivalRate",
    "ConstantVUs",
    "Criterion",
    "Plan",
    "PlanError",
    "RampingVUs",
    "Shard",
    "Stage",
    "SystemMetric",
    "format_duration",
    "load_plan",
    "parse_duration",
    "plan_from_data",
]
