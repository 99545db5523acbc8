"""What a person watching a gate run wants to read, line by line, from its run folder.

The run folder is the one source of truth of a run (:mod:`loadgate.run.folder`), and every step
writes its record there as it ends: ``run.json``, ``checklist.json``, ``seeding.progress.json``
then ``seeding.json``, each stage's shard windows second by second (:mod:`loadgate.run.live`),
its abort marker, ``gates/<stage>.json``, ``rollback.json`` and ``report.json``. A
:class:`RunWatch` looks at the folder now and then (:meth:`RunWatch.poll`) and returns the lines
for what appeared since its last look, in the run's order: the run, each checklist item with
its result, the seeding progress, each stage's live figures every few seconds of the stage, a
criterion that stopped a stage, each gate's verdict with its figures and reasons, the rollback,
and the final verdict with the report's path. Each line is returned once; a finished run folder
read in one look gives the whole story. The ``*_lines`` functions turn one record into its lines.

Nothing secret is in these records (credentials stay in ``users.jsonl``, never read here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from loadgate.run.folder import MAX_ATTEMPTS
from loadgate.run.live import Interval, StageTail, total_vus
from loadgate.run.records import (
    NOT_RUN,
    Checklist,
    Report,
    RollbackOutcome,
    RunRecord,
    StageGate,
)

MARKS = {"pass": "ok  ", "warn": "warn", "fail": "FAIL"}
MAX_REASONS = 8


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def run_lines(record: RunRecord) -> list[str]:
    config = record.config
    stages = ", ".join(
        f"{s} ({n} users)" if (n := total_vus(record.load, s)) else s for s in config.stages
    )
    what = "dry run" if config.dry_run else "run"
    return [
        f"{what} {record.run_id}: release {config.release or '—'} on {config.target_url}",
        f"  stages {stages}; scale {config.scale:g}, time scale {config.time_scale:g}",
    ]


def checklist_lines(checklist: Checklist) -> list[str]:
    lines = ["pre-test checklist:"]
    for c in checklist.root:
        optional = "" if c.required else " (optional)"
        lines.append(f"  {MARKS.get(c.status, c.status)}  {c.item}{optional}: {c.evidence}")
    failed = checklist.failed_required()
    lines.append(
        "checklist: passed"
        if not failed
        else "checklist: FAILED, no load is sent: " + ", ".join(c.item for c in failed)
    )
    return lines


def seeding_line(counts: dict[str, Any], done: bool = False) -> str:
    """``seeding.progress.json`` while seeding runs; ``seeding.json`` once it is done."""
    line = f"seeding users: {counts.get('ready', 0)} / {counts.get('requested', 0)} ready"
    if done:
        line += (
            f" in {counts.get('seconds', 0):.1f} s ({counts.get('registered', 0)} registered, "
            f"{counts.get('existing', 0)} existing, {counts.get('failed', 0)} failed)"
        )
    elif counts.get("failed"):
        line += f", {counts['failed']} failed"
    return line


def interval_line(label: str, figures: Interval, *, peak: int, http: bool, ws: bool) -> str:
    """One interval of a stage: users, then its HTTP and WebSocket figures (what it has)."""
    users = f"{figures.vus}/{peak}" if peak else str(figures.vus)
    parts = [f"  {label:<10} {figures.end_s:>4} s", f"VUs {users:>7}"]
    if not ws or (http and figures.requests):  # a WebSocket stage's few requests: when sent
        parts += [
            f"{figures.rps:6.1f} req/s",
            f"p95 {ms(figures.p95_ms):>7}",
            f"errors {figures.failed} ({figures.error_rate * 100:.1f}%)",
        ]
    if ws:
        parts += [
            f"{figures.ws_open} connections",
            f"{figures.ws_rate:.1f} msg/s",
            f"RTT p95 {ms(figures.rtt_p95_ms)}",
            f"{'ws errors' if len(parts) > 2 else 'errors'} {figures.ws_errors}",
        ]
    return " │ ".join(parts)


def abort_line(label: str, marker: dict[str, Any]) -> str:
    at = marker.get("at_s")
    when = f" at {at:.0f} s" if isinstance(at, int | float) else ""
    observed = marker.get("observed")
    seen = f" (observed {observed:.4g})" if isinstance(observed, int | float) else ""
    shard = f" on shard {marker['shard']}" if marker.get("shard") is not None else ""
    criterion = marker.get("criterion") or "a live criterion"
    return f"  {label}: stopped{when} by {criterion}{seen}{shard}: every shard stops"


def reason_lines(
    reasons: Sequence[str], indent: str = "    ", most: int = MAX_REASONS
) -> list[str]:
    lines = [f"{indent}- {r}" for r in reasons[:most]]
    if len(reasons) > most:
        lines.append(f"{indent}  (+{len(reasons) - most} more in the report)")
    return lines


def gate_lines(gate: StageGate) -> list[str]:
    """A gate's verdict, the stage's key figures, and the reasons."""
    label = gate.stage if gate.attempt == 1 else f"{gate.stage} (attempt {gate.attempt})"
    head = f"gate {label}: {gate.verdict.upper()}"
    s = gate.summary
    if s is not None:
        figures = []
        if s.requests:
            figures += [
                f"{s.requests:,} requests",
                f"{s.rps:.1f} req/s",
                f"errors {pct(s.error_rate)}",
                f"p95 {ms(s.p95_ms)}",
                f"p99 {ms(s.p99_ms)}",
            ]
        if s.ws.connects:
            figures += [
                f"{s.ws.max_connections:,} connections",
                f"{s.ws.messages_sent + s.ws.messages_received:,} messages",
                f"RTT p95 {ms(s.ws.rtt_p95_ms)}",
            ]
        if figures:
            head += " — " + ", ".join(figures)
    return [head, *criteria_lines(gate), *reason_lines(gate.reasons)]


STATUS_WORDS = {"pass": "met", "breach": "breached", "insufficient": "too few samples"}


def criteria_lines(gate: StageGate) -> list[str]:
    """How the plan's criteria came out, counted: "12 met, 2 no baseline"."""
    counts: dict[str, int] = {}
    for c in gate.criteria:
        word = STATUS_WORDS.get(c.status, c.status)
        counts[word] = counts.get(word, 0) + 1
    if not counts:
        return []
    return ["    criteria: " + ", ".join(f"{n} {word}" for word, n in counts.items())]


def rollback_lines(outcome: RollbackOutcome) -> list[str]:
    restored = outcome.restored_release or outcome.health.release
    line = f"rollback ({outcome.action}): {outcome.outcome}"
    if restored:
        line += f", the target reports release {restored}"
    return [line, *([f"    - {outcome.error}"] if outcome.error else [])]


def final_lines(report: Report, root: Path) -> list[str]:
    lines = [f"verdict: {report.verdict.upper()} (release {report.release})"]
    lines += reason_lines(report.reasons, "  ", most=4)  # each gate's are above
    lines.append(f"report: {root / 'report.html'}")
    return lines


@dataclass
class _Stage:
    """One stage attempt being followed."""

    label: str
    tail: StageTail
    peak: int
    aborted: bool = False


@dataclass
class RunWatch:
    """Follows a local run folder: each :meth:`poll` returns the lines for what appeared since
    the last one (``every_s``: seconds of a stage per progress line)."""

    root: Path
    every_s: int = 5
    _said: set[str] = field(default_factory=set)
    _record: RunRecord | None = None
    _stages: dict[tuple[str, int], _Stage] = field(default_factory=dict)
    _errors: dict[str, str] = field(default_factory=dict)

    def _json(self, rel: str) -> Any:
        path = self.root / rel
        return orjson.loads(path.read_bytes()) if path.is_file() else None

    def _once(self, key: str, make: Callable[[], list[str]]) -> list[str]:
        """``make()``'s lines the first time ``key`` is seen; a record that cannot be read yet
        is tried again at the next look."""
        if key in self._said:
            return []
        try:
            lines = make()
        except (OSError, ValueError) as exc:
            self._errors[key] = f"{type(exc).__name__}: {exc}"
            return []
        if lines:
            self._said.add(key)
            self._errors.pop(key, None)
        return lines

    def poll(self, final: bool = False) -> list[str]:
        """The new lines. ``final``: the run is over (its process ended): every stage still
        followed is reported to its end, and a record that could not be read says so."""
        out: list[str] = []
        if self._record is None:
            found = self._json("run.json")
            if found is None:
                return out
            self._record = RunRecord.model_validate(found)
        record = self._record
        out += self._once("run", lambda: run_lines(record))
        out += self._once("checklist", self._checklist)
        out += self._seeding()
        report = self._read_report()
        for stage in record.config.stages:
            out += self._stage(stage, report is not None or final)
        out += self._once("rollback", self._rollback)
        if report:
            out += self._once("report", lambda: self._report(report))
        if final:
            out += [f"(could not read {key}: {err})" for key, err in self._errors.items()]
            self._errors.clear()
        return out

    def _read_report(self) -> Report | None:
        try:
            found = self._json("report.json")
            return None if found is None else Report.model_validate(found)
        except (OSError, ValueError) as exc:
            self._errors["report"] = f"{type(exc).__name__}: {exc}"
            return None

    def _checklist(self) -> list[str]:
        found = self._json("checklist.json")
        return [] if found is None else checklist_lines(Checklist.model_validate(found))

    def _seeding(self) -> list[str]:
        if "seeded" in self._said:
            return []
        done = self._json("seeding.json")
        if done is not None:
            self._said.add("seeded")
            return [seeding_line(done, done=True)]
        progress = self._json("seeding.progress.json")
        if progress is None:
            return []
        key = f"seeding {progress.get('ready')} {progress.get('failed')}"
        return self._once(key, lambda: [seeding_line(progress)])

    def _stage(self, stage: str, run_over: bool) -> list[str]:
        out: list[str] = []
        for attempt in range(1, MAX_ATTEMPTS + 1):
            folder = self.root / "stages" / stage
            if attempt > 1:
                folder = folder / f"attempt-{attempt}"
            gate = self._gate(stage, attempt)
            followed = self._stages.get((stage, attempt))
            if followed is None and folder.is_dir():
                followed = self._follow(stage, attempt, folder)
                out.append(
                    f"stage {followed.label}: load started, {followed.tail.shards} shard(s)"
                    + (f", up to {followed.peak} users" if followed.peak else "")
                )
            if followed is not None:
                out += self._progress(followed, ended=gate is not None or run_over)
            if gate is not None:
                out += self._once(f"gate {stage} {attempt}", partial(gate_lines, gate))
        if run_over and not any(k[0] == stage for k in self._stages):
            verdict = self._report_verdict(stage)
            if verdict == NOT_RUN:
                out += self._once(f"not run {stage}", lambda: [f"stage {stage}: not run"])
        return out

    def _report_verdict(self, stage: str) -> str | None:
        report = self._read_report()
        found = report.stages.get(stage) if report else None
        return None if found is None else str(found.verdict)

    def _follow(self, stage: str, attempt: int, folder: Path) -> _Stage:
        assert self._record is not None
        load = self._record.load
        shards = {r.shard.split("/")[1] for r in load if r.stage == stage}
        count = int(next(iter(shards))) if len(shards) == 1 else self._record.config.shards or 1
        label = stage if attempt == 1 else f"{stage} (attempt {attempt})"
        followed = _Stage(label, StageTail(folder, count, self.every_s), total_vus(load, stage))
        self._stages[(stage, attempt)] = followed
        return followed

    def _progress(self, followed: _Stage, ended: bool) -> list[str]:
        tail = followed.tail
        out = [
            interval_line(followed.label, i, peak=followed.peak, http=tail.has_http, ws=tail.has_ws)
            for i in tail.poll(ended)
        ]
        if not followed.aborted:
            marker = tail.abort()
            if marker:
                followed.aborted = True
                out.append(abort_line(followed.label, marker))
        return out

    def _gate(self, stage: str, attempt: int) -> StageGate | None:
        """The gate of ``attempt`` of ``stage``, once decided (a re-run's first decision is
        kept in ``gates/<stage>.attempt-1.json``)."""
        try:
            found = self._json(f"gates/{stage}.json")
            gate = None if found is None else StageGate.model_validate(found)
            if gate is not None and gate.attempt == attempt:
                return gate
            if attempt == 1 and gate is not None:
                first = self._json(f"gates/{stage}.attempt-1.json")
                return None if first is None else StageGate.model_validate(first)
        except (OSError, ValueError) as exc:
            self._errors[f"gate {stage}"] = f"{type(exc).__name__}: {exc}"
        return None

    def _rollback(self) -> list[str]:
        found = self._json("rollback.json")
        return [] if found is None else rollback_lines(RollbackOutcome.model_validate(found))

    def _report(self, report: Report) -> list[str]:
        return final_lines(report, self.root)


def find_run(artifacts_root: Path, target_url: str, skip: set[str] | frozenset[str]) -> Path | None:
    """The run folder under ``artifacts_root`` of a run on ``target_url`` that is not one of
    ``skip`` (the folders there before the run started), once its ``run.json`` is written."""
    if not artifacts_root.is_dir():
        return None
    for folder in sorted(artifacts_root.iterdir()):
        if folder.name in skip or not (folder / "run.json").is_file():
            continue
        try:
            record = orjson.loads((folder / "run.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if (record.get("config") or {}).get("target_url") == target_url:
            return folder
    return None
