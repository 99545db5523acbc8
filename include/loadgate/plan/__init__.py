"""Test plans as data: the validated model, loading, sharding and per-shard profiles."""

from loadgate.engine.durations import format_duration, parse_duration
from loadgate.engine.shard import Shard
from loadgate.plan.errors import PlanError
from loadgate.plan.load import load_plan, plan_from_data
from loadgate.plan.model import (
    Criterion,
    Plan,
    Stage,
    SystemMetric,
)

__all__ = [
    "Criterion",
    "Plan",
    "PlanError",
    "Shard",
    "Stage",
    "SystemMetric",
    "format_duration",
    "load_plan",
    "parse_duration",
    "plan_from_data",
]
