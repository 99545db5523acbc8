"""Test plans as data: the validated model, loading, sharding and per-shard profiles."""

from .durations import format_duration, parse_duration
from .errors import PlanError
from .load import load_plan, plan_from_data
from .model import (
    ConnectionRamp,
    ConstantArrivalRate,
    ConstantVUs,
    Criterion,
    Plan,
    RampingVUs,
    Stage,
    SystemMetric,
)
from .shard import Shard

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
