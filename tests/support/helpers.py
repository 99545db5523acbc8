"""Small helpers several test modules share: plan data, the ``run-stage`` command line and the
check that a VU curve follows its profile."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def scenario(executor: str, exec: str = "basic.get", **fields: Any) -> dict[str, Any]:
    """A plan's scenario: ``exec`` run by ``executor`` with the executor's ``fields``."""
    return {"exec": exec, "executor": executor, **fields}


def ramp(*stages: tuple[float | str, int]) -> list[dict[str, Any]]:
    """A ``ramping-vus`` scenario's stages from (duration, target) pairs."""
    return [{"duration": duration, "target": target} for duration, target in stages]


def shipped_criteria(*ids: str, **changes: Any) -> list[dict[str, Any]]:
    """The shipped plan's criteria ``ids``, as data, each with ``changes`` applied (e.g.
    ``stages=None`` to apply it to any stage of a test plan)."""
    import yaml

    from loadgate.config.run import resolve_plan_path

    by_id = {
        c["id"]: c
        for c in yaml.safe_load(resolve_plan_path("harmonyflow-10k").read_text())["criteria"]
    }
    return [{k: v for k, v in {**by_id[i], **changes}.items() if v is not None} for i in ids]


def one_stage_plan(
    scenarios: dict[str, Any],
    *,
    name: str = "t",
    stage: str = "s",
    criteria: list[Any] | None = None,
    **stage_fields: Any,
) -> dict[str, Any]:
    """The data of a plan ``name`` with the one stage ``stage`` running ``scenarios`` (name ->
    scenario), with the stage's other ``stage_fields`` and, if given, the plan's ``criteria``."""
    data: dict[str, Any] = {
        "name": name,
        "stages": {stage: {**stage_fields, "scenarios": scenarios}},
    }
    if criteria is not None:
        data["criteria"] = criteria
    return data


def run_stage_args(
    plan: Path | str, stage: str, target: str, out: Path | str, **options: Any
) -> list[str]:
    """``run-stage --plan PLAN --stage STAGE --target TARGET --out OUT`` and each option as
    ``--name value`` (``time_scale`` is ``--time-scale``; ``True`` is a bare flag)."""
    args = ["run-stage", "--plan", str(plan), "--stage", stage, "--target", target]
    args += ["--out", str(out)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


def assert_follows(
    samples: Iterable[tuple[float, int]], profile: Any, slack: float, tolerance: int = 1
) -> None:
    """Each (time, VUs) sample is within ``tolerance`` VUs of the profile's target at some
    moment from ``slack`` before the previous sample to ``slack`` after its own time.

    The window reaches back to the previous sample because the controller and the probe share
    one event loop: when the process is not scheduled for a while (the suite runs on several
    processes on two cores), the first sample after the stall can run before the controller's
    overdue tick and shows the count the controller set before the stall. On a quiet machine
    the previous sample is ``probe_every`` back, inside ``slack``, so the window is unchanged.
    """
    previous = 0.0
    for t, n in samples:
        start, end = max(0.0, min(t, previous) - slack), t + slack
        steps = max(1, math.ceil((end - start) / 0.005))
        targets = [profile.target_at(start + (end - start) * i / steps) for i in range(steps + 1)]
        lo, hi = min(targets), max(targets)
        assert lo - tolerance <= n <= hi + tolerance, (t, n, lo, hi, previous)
        previous = t


# The example's profile and plan (loadgate_syncbridge), which a run config names explicitly:
# the core has no default of either.
REFERENCE_PROFILE = "syncbridge"
REFERENCE_PLAN = "harmonyflow-10k"


def reference_run(**values: Any) -> dict[str, Any]:
    """Run settings on the example's profile and plan, with ``values`` over them (for
    ``build_run_config`` or ``RunConfig``)."""
    return {"profile": REFERENCE_PROFILE, "plan": REFERENCE_PLAN, **values}


def wait_for(predicate: Callable[[], T], timeout: float, poll: float = 0.05) -> T:
    """``predicate()`` polled every ``poll`` seconds until it returns a true value or ``timeout``
    seconds have passed; its last value either way (the caller asserts on it). For a test that
    waits for something to happen: never a fixed sleep that is too long on a quiet machine and
    too short on a busy one (the suite runs on several processes)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(poll)


def processes(marker: str) -> dict[int, str]:
    """Processes (not zombies) whose command line holds ``marker``: pid -> command line."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        if marker.encode() in cmdline and stat[stat.rfind(")") + 2] != "Z":
            found[int(entry.name)] = cmdline.decode(errors="replace")
    return found
