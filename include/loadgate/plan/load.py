"""Loading a plan file: YAML → :class:`Plan`, with every problem reported as a PlanError."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from loadgate.plan.errors import PlanError
from loadgate.plan.model import EXECUTORS, Plan


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in EXECUTORS:
            continue  # pydantic's tag of the discriminated union, not a field
        else:
            out += f".{part}" if out else str(part)
    return out


def _reason(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err.get("type") == "union_tag_invalid":
        msg = f"unknown executor; use one of {', '.join(EXECUTORS)}"
    if err.get("type") == "union_tag_not_found":
        msg = f"missing 'executor' (one of {', '.join(EXECUTORS)})"
    return msg


def plan_from_data(data: Any, file: str = "<plan>") -> Plan:
    """Validate already-parsed plan data (a mapping) into a Plan."""
    if not isinstance(data, dict):
        raise PlanError(file, [("", "a plan is a mapping with at least 'name' and 'stages'")])
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(file, [(_path(e["loc"]), _reason(e)) for e in exc.errors()]) from None
    problems = list(check_references(plan))
    if problems:
        raise PlanError(file, problems)
    return plan


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file (a path, or a store URL such as the run root's copy);
    raises PlanError (file, field, reason) on any problem."""
    from loadgate.storage import as_path

    file = str(path)
    try:
        text = as_path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(file, [("", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanError(file, [("", f"not valid YAML: {where}{problem}")]) from None
    return plan_from_data(data, file)


def check_references(plan: Plan) -> Iterator[tuple[str, str]]:
    """Cross-field checks pydantic cannot express: names that must refer to something."""
    from loadgate.plan.vocabulary import ENGINE_METRICS, SYSTEM_STATS

    seen: set[str] = set()
    for i, crit in enumerate(plan.criteria):
        at = f"criteria[{i}]"
        if crit.id in seen:
            yield f"{at}.id", f"duplicate criterion id {crit.id!r}"
        seen.add(crit.id)
        for stage in crit.stages or []:
            if stage not in plan.stages:
                yield f"{at}.stages", f"unknown stage {stage!r} (stages: {', '.join(plan.stages)})"
        if crit.metric in ENGINE_METRICS:
            spec = ENGINE_METRICS[crit.metric]
            if crit.stat is not None and crit.stat not in spec.stats:
                yield f"{at}.stat", f"{crit.metric} has stats {', '.join(spec.stats)}"
        elif crit.metric in plan.system_metrics:
            if crit.stat is not None and crit.stat not in SYSTEM_STATS:
                yield f"{at}.stat", f"a system metric has stats {', '.join(SYSTEM_STATS)}"
            if crit.scope.scenarios or crit.scope.names:
                yield f"{at}.scope", "a system metric has no scenarios or names"
        else:
            yield (
                f"{at}.metric",
                f"unknown metric {crit.metric!r}: use an engine metric "
                f"({', '.join(sorted(ENGINE_METRICS))}) or one declared under system_metrics",
            )
        stages = crit.stages or list(plan.stages)
        known = {name for s in stages if s in plan.stages for name in plan.stages[s].scenarios}
        for name in crit.scope.scenarios:
            if name not in known:
                yield f"{at}.scope.scenarios", f"no scenario {name!r} in its stages"
        if crit.relative_to == "baseline" and crit.reference is not None and crit.reference <= 0:
            yield f"{at}.reference", "must be greater than 0"
    for name, stage_model in plan.stages.items():
        for sname, scen in stage_model.scenarios.items():
            for where, reason in scen.problems():
                yield f"stages.{name}.scenarios.{sname}.{where}", reason
