"""Release history: every gated run's verdict and key figures, per key, under the artifacts root.

A key names what is gated: the profile and the plan (:func:`history_key`,
``shop--checkout-smoke``), given by the caller. Each entry is its own object, never a
shared file rewritten, so any number of runs may append at once, locally or on a store::

    <root>/history/<key>/entries/<UTC time>-<run id>.json    one per run (created exclusively)
    <root>/history/<key>/pin.json                             the pinned baseline, if any

Listing sorts by the time in the name (then the run id), oldest first. The baseline of a run
is the pinned entry if one is pinned, else the newest entry of the same plan and scale whose
verdict is ``pass`` (of the same time scale where one exists), the run itself excluded.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from loadgate.run.artifacts import safe_name
from loadgate.storage import Location, as_path, create_exclusive, is_remote, write_atomic

HISTORY = "history"
ENTRIES = "entries"
PIN = "pin.json"
_SLUG = re.compile(r"[^a-z0-9]+")


class HistoryError(ValueError):
    """An unknown key or run, or an unreadable history."""


def history_key(name: str, plan: str) -> str:
    """A safe folder name for what is gated (a profile; any URL is reduced to its host) and a
    plan: ``shop`` + ``checkout-smoke`` → ``shop--checkout-smoke``;
    ``https://sb.example:8443/`` + ``p`` → ``sb-example-8443--p``."""
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", name.strip().lower())
    host = host.split("@")[-1]  # never credentials in a key
    slug_host = _SLUG.sub("-", host).strip("-")
    slug_plan = _SLUG.sub("-", plan.strip().lower()).strip("-")
    if not slug_host or not slug_plan:
        raise ValueError(f"no history key for {name!r} and plan {plan!r}")
    return f"{slug_host}--{slug_plan}"


def _check_key(key: str) -> str:
    if not key or safe_name(key) != key or key.startswith("."):
        raise HistoryError(f"not a history key: {key!r} (letters, digits, '.', '_', '=', '-')")
    return key


class StageFigures(BaseModel):
    """One stage's key figures (None where the run did not measure them)."""

    model_config = ConfigDict(extra="ignore")

    verdict: str
    requests: int = 0
    offered_rps: float | None = None
    achieved_rps: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float | None = None
    peak_users: int | None = None
    peak_connections: int | None = None
    cpu_peak: float | None = None
    memory_peak: float | None = None
    # per scope ("http all", "http GET /x", "ws heartbeat"): p50/p95/p99 (ms), tail_ratio and
    # error_rate, from which later runs estimate how much healthy runs vary
    scopes: dict[str, dict[str, float]] = Field(default_factory=dict)


class HistoryEntry(BaseModel):
    """One gated run."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    release: str | None = None
    verdict: str
    recorded_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    plan: str
    scale: float
    time_scale: float
    run_root: str
    stages: dict[str, StageFigures] = Field(default_factory=dict)


def _dir(root: Location, key: str) -> Any:
    return as_path(root) / HISTORY / _check_key(key)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def append(root: Location, key: str, entry: HistoryEntry) -> str:
    """Add an entry (its own object); returns where. A run appended twice keeps both."""
    folder = _dir(root, key) / ENTRIES
    if not is_remote(folder):
        folder.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(entry.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
    base = f"{_stamp(entry.recorded_at)}-{safe_name(entry.run_id)}"
    for attempt in range(100):
        name = f"{base}.json" if not attempt else f"{base}.{attempt}.json"
        target = folder / name
        if create_exclusive(target, data + b"\n"):
            return str(target)
    raise HistoryError(f"could not add {base} to history {key}")  # pragma: no cover


def _entry_files(root: Location, key: str) -> list[Any]:
    folder = _dir(root, key) / ENTRIES
    try:
        files = [p for p in folder.iterdir() if p.name.endswith(".json")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(files, key=lambda p: p.name)


def exists(root: Location, key: str) -> bool:
    return bool(_entry_files(root, key))


def find_key(root: Location, name: str) -> str:
    """``name`` itself when it is a history key here, else the one key of the profile ``name``
    (``shop`` → ``shop--checkout-smoke``); HistoryError naming the candidates."""
    if exists(root, name):
        return name
    try:
        found: list[str] = sorted(
            str(p.name)
            for p in (as_path(root) / HISTORY).iterdir()
            if p.name.startswith(f"{name}--") and exists(root, p.name)
        )
    except (FileNotFoundError, NotADirectoryError):
        found = []
    if len(found) == 1:
        return found[0]
    if found:
        raise HistoryError(f"profile {name!r} has several histories: {', '.join(found)}")
    raise HistoryError(f"no history {name!r} under {root}")


def entries(root: Location, key: str, limit: int | None = None) -> list[HistoryEntry]:
    """The entries, oldest first; ``limit``: only the newest ``limit`` of them."""
    files = _entry_files(root, key)
    if limit is not None:
        files = files[-limit:] if limit > 0 else []
    out = []
    for path in files:
        try:
            out.append(HistoryEntry.model_validate(orjson.loads(path.read_bytes())))
        except (ValueError, FileNotFoundError):
            continue  # a foreign or damaged object: not an entry
    out.sort(key=lambda e: (e.recorded_at, e.run_id))
    return out


def pinned(root: Location, key: str) -> str | None:
    """The run id pinned as the baseline, if any."""
    path = _dir(root, key) / PIN
    try:
        return str(orjson.loads(path.read_bytes())["run_id"])
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None


def pin(root: Location, key: str, run_id: str, *, by: str | None = None) -> None:
    """Pin a run of the history as the baseline (it must be in the history)."""
    if not any(e.run_id == run_id for e in entries(root, key)):
        raise HistoryError(f"run {run_id!r} is not in history {key!r}")
    record = {"run_id": run_id, "pinned_at": datetime.now(UTC).isoformat(), "by": by}
    write_atomic(_dir(root, key) / PIN, orjson.dumps(record) + b"\n")


def unpin(root: Location, key: str) -> bool:
    """Remove the pin; False when nothing was pinned."""
    path = _dir(root, key) / PIN
    try:
        if not path.exists():
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def baseline(
    root: Location,
    key: str,
    *,
    plan: str,
    scale: float,
    time_scale: float | None = None,
    exclude_run: str | None = None,
) -> HistoryEntry | None:
    """The pinned entry, else the newest passing entry of the same plan and scale, of the same
    ``time_scale`` where one exists: a run as long as this one gathered as much evidence, so a
    short run's handful of samples never sets a long run's baseline while a comparable one
    exists."""
    found = entries(root, key)
    pin_id = pinned(root, key)
    if pin_id is not None and pin_id != exclude_run:
        for entry in reversed(found):
            if entry.run_id == pin_id:
                return entry
    passing = passing_runs(found, plan=plan, scale=scale, exclude_run=exclude_run)
    same_length = [e for e in passing if time_scale is not None and e.time_scale == time_scale]
    chosen = same_length or passing
    return chosen[0] if chosen else None


def passing_runs(
    found: list[HistoryEntry], *, plan: str, scale: float, exclude_run: str | None = None
) -> list[HistoryEntry]:
    """The passing entries of ``plan`` at ``scale`` among ``found``, newest first."""
    return [
        e
        for e in reversed(found)
        if e.run_id != exclude_run and e.verdict == "pass" and e.plan == plan and e.scale == scale
    ]


# --- an entry from a run's gates ----------------------------------------------------------------


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def stage_figures(gate: dict[str, Any]) -> StageFigures:
    """Key figures of one stage from its gate result (``gates/<stage>.json``)."""
    summary = gate.get("summary") or {}
    system = summary.get("system") or {}
    rates = summary.get("rates") or {}
    ws = summary.get("ws") or {}

    def peak(name: str) -> float | None:
        return _number((system.get(name) or {}).get("max"))

    achieved = _number(rates.get("achieved"))
    if achieved is None:
        achieved = _number(summary.get("rps"))
    connections = ws.get("max_connections")
    scopes = (gate.get("baseline") or {}).get("figures") or {}
    return StageFigures(
        verdict=str(gate.get("verdict", "error")),
        requests=int(summary.get("requests") or 0),
        offered_rps=_number(rates.get("offered")),
        achieved_rps=achieved,
        p50_ms=_number(summary.get("p50_ms")),
        p95_ms=_number(summary.get("p95_ms")),
        p99_ms=_number(summary.get("p99_ms")),
        error_rate=_number(summary.get("error_rate")),
        peak_users=summary.get("max_vus") if isinstance(summary.get("max_vus"), int) else None,
        peak_connections=connections if isinstance(connections, int) and connections else None,
        cpu_peak=peak("cpu_utilization"),
        memory_peak=peak("memory_utilization"),
        scopes=scopes if isinstance(scopes, dict) else {},
    )


def entry_from_gates(
    *,
    run_id: str,
    verdict: str,
    plan: str,
    scale: float,
    time_scale: float,
    run_root: str,
    gates: dict[str, dict[str, Any]],
    release: str | None = None,
    recorded_at: datetime | None = None,
) -> HistoryEntry:
    """A history entry from a run's gate results, ``{stage: gates/<stage>.json}``."""
    return HistoryEntry(
        run_id=run_id,
        release=release,
        verdict=verdict,
        recorded_at=recorded_at or datetime.now(UTC),
        plan=plan,
        scale=scale,
        time_scale=time_scale,
        run_root=run_root,
        stages={stage: stage_figures(gate) for stage, gate in gates.items()},
    )


# --- the table ----------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def render_table(found: list[HistoryEntry], pin_id: str | None, base_id: str | None) -> str:
    """Entries oldest first, one line per stage; ``*`` pinned, ``B`` the baseline."""
    header = (
        f"{'':2} {'recorded (UTC)':19}  {'run':28} {'release':12} {'verdict':11} "
        f"{'plan':18} {'scale':>7} {'stage':10} {'req/s':>8} {'p95 ms':>9} {'p99 ms':>9} "
        f"{'errors':>7}"
    )
    lines = [header]
    for entry in found:
        mark = ("*" if entry.run_id == pin_id else " ") + ("B" if entry.run_id == base_id else " ")
        head = (
            f"{mark} {entry.recorded_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  "
            f"{entry.run_id[:28]:28} {(entry.release or '—')[:12]:12} {entry.verdict:11} "
            f"{entry.plan[:18]:18} {entry.scale:>7g}"
        )
        stages = entry.stages.items() or [("—", None)]
        for i, (stage, fig) in enumerate(stages):
            prefix = head if i == 0 else " " * len(head)
            if fig is None:
                lines.append(f"{prefix} {stage:10}")
                continue
            err = None if fig.error_rate is None else fig.error_rate * 100
            lines.append(
                f"{prefix} {stage[:10]:10} {_fmt(fig.achieved_rps, '.1f'):>8} "
                f"{_fmt(fig.p95_ms, '.1f'):>9} {_fmt(fig.p99_ms, '.1f'):>9} "
                f"{_fmt(err, '.2f') + '%' if err is not None else '—':>7}"
            )
    lines.append(
        "* pinned baseline   B the baseline a run of the newest entry's plan and scale uses"
    )
    return "\n".join(lines) + "\n"
