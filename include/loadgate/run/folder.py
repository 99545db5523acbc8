"""The run folder, the one source of truth of a gate run: its resolved config, its copy of the
plan, its records, each stage's (and re-run's) folder."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from upath import UPath

from loadgate.plan import Plan, load_plan
from loadgate.run import history
from loadgate.run.artifacts import RunArtifacts
from loadgate.run.records import (
    Checklist,
    RollbackOutcome,
    RunRecord,
    StageGate,
)
from loadgate.storage import remove_tree

PLAN_COPY = "plan.yaml"  # the run root's copy of the plan


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Run:
    """One gate run: its resolved config, plan and run root."""

    def __init__(self, record: RunRecord | Mapping[str, Any]) -> None:
        """``record``: the run's :class:`RunRecord`, or its JSON (``run.json``, XCom)."""
        self.record = record if isinstance(record, RunRecord) else RunRecord.model_validate(record)
        self.config = self.record.config.model_copy(deep=True)
        self.run_id = self.record.run_id
        self.artifacts = RunArtifacts(self.config.artifacts_root, self.run_id)
        self._plan: Plan | None = None

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = load_plan(self.plan_location())
        return self._plan

    def plan_location(self) -> Any:
        """The run's own copy of the plan (``plan.yaml`` in the run root, written by
        :func:`prepare`): what the gates evaluate and every shard runs, local process or pod,
        whatever the images hold and even if the plan file changes while the run goes on.
        Before prepare, the configured plan file."""
        copy = self.artifacts.path(PLAN_COPY)
        return copy if copy.exists() else self.config.plan_path()

    def shards(self, stage: str) -> int:
        return self.config.shards or self.plan.stages[stage].shards

    def timeline(self, event: str) -> None:
        self.artifacts.append_jsonl("timeline.jsonl", {"at": now(), "event": event})

    def gate(self, stage: str) -> StageGate | None:
        found = self.artifacts.read_json(f"gates/{stage}.json")
        return None if found is None else StageGate.model_validate(found)

    def checklist(self) -> Checklist | None:
        found = self.artifacts.read_json("checklist.json")
        return None if found is None else Checklist.model_validate(found)

    def rollback_outcome(self) -> RollbackOutcome | None:
        found = self.artifacts.read_json("rollback.json")
        return None if found is None else RollbackOutcome.model_validate(found)

    def users_file(self) -> UPath:
        """The seeded users (credentials): a 0600 file, or an object of an s3:// run root."""
        return self.artifacts.path("users.jsonl")


def history_key(run: Run) -> str:
    """Where this run's release history is kept: per profile and plan (``shop--checkout-smoke``),
    whatever the target's address (a demo's port changes every run)."""
    return history.history_key(run.config.profile, Path(run.config.plan).stem)


# A stage whose gate is inconclusive runs once more (the profile's limits.max_attempts: 2, or 1
# for never) and is decided on both attempts' pooled evidence; the second attempt's shards write
# under the stage's folder, apart from the first. The DAG holds one re-run.
MAX_ATTEMPTS = 2


def stage_folder(run: Run, stage: str, attempt: int = 1) -> UPath:
    """Where ``attempt`` of ``stage`` writes its shards: ``stages/<stage>`` for the first,
    ``stages/<stage>/attempt-<n>`` for a re-run."""
    if attempt == 1:
        return run.artifacts.path("stages", stage)
    return run.artifacts.path("stages", stage, f"attempt-{attempt}")


def clear_stage(run: Run, stage: str, attempt: int = 1) -> UPath:
    """A rerun of a stage starts clean: its earlier results, abort marker and gate are removed
    (a first attempt's rerun also removes the later attempts)."""
    folder = stage_folder(run, stage, attempt)
    remove_tree(folder)
    if attempt == 1:
        for name in (f"{stage}.json", f"{stage}.attempt-1.json"):
            gate = run.artifacts.path("gates", name)
            if gate.exists():
                gate.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return folder
