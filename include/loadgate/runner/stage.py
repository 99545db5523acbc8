"""Running one stage on one shard: executors, windows, live criteria, abort, signals.

:func:`prepare` does everything that can fail on bad input (scenarios resolved, users present,
target allowed, abort marker absent) before a single request is sent; :func:`run_stage` then
runs the stage on uvloop and returns its outcome. Once a second, at each wall-clock second, the
current window is closed, written to ``windows.jsonl``, and the stage's rollback criteria are
evaluated: rate criteria by the sequential test of :mod:`loadgate.verdict.sequential` (false-alarm
probability at most the plan's ``live_alpha`` over the stage, split over its shards and live
rate criteria), the others over their sliding windows; a breach stops every VU at once, writes
the abort marker with its evidence and ends the stage with the abort code. The marker of
another shard does the same here.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import platform
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from loadgate.engine.abort import AbortMarker, read_marker
from loadgate.engine.executors.base import Profile
from loadgate.engine.executors.driver import ScenarioRun
from loadgate.engine.exitcodes import (
    EXIT_ABORTED,
    EXIT_COMPLETED,
    EXIT_ERROR,
    EXIT_SIGINT,
    EXIT_SIGTERM,
)
from loadgate.engine.health import ProcessSampler, watch_loop_lag
from loadgate.engine.results import FORMAT
from loadgate.engine.shard import Shard
from loadgate.engine.upload import open_results
from loadgate.engine.vu import StageRuntime
from loadgate.engine.window import Recorder, window_record
from loadgate.metrics.base import MetricsSource, NullSource
from loadgate.plan.model import Criterion, Plan
from loadgate.plan.profile import stage_profiles
from loadgate.plan.vocabulary import ENGINE_METRICS
from loadgate.scenarios import ScenarioError, needs_user, resolve
from loadgate.storage import as_path
from loadgate.verdict.criteria import CriterionResult, SlidingEvaluator, is_sequential
from loadgate.verdict.sequential import split_alpha

PROGRESS_EVERY_S = 10

# A stage holds many long-lived objects (VUs, their tasks, connections and timers). With
# CPython's default gen-0 threshold (700) the collector rescans them all the time: at 10,000
# VUs of the seed's pattern it took 35-40% of the generator's CPU, with 0.3 s pauses
# (bench/README.md, "Load engine vs peers"). The gen-0 count is allocations minus
# deallocations, so with 50,000 it stays idle while VUs churn short-lived objects and still
# collects when objects (cyclic garbage included) really pile up.
GC_THRESHOLDS = (50_000, 10, 10)


class EngineInputError(ValueError):
    """Bad input found before any request was sent (exit code 2)."""


@dataclass
class StageConfig:
    plan: Plan
    plan_path: str
    stage: str
    target: str
    out: Path
    shard: Shard = field(default_factory=Shard)
    scale: float = 1.0
    time_scale: float = 1.0
    users: list[dict[str, Any]] = field(default_factory=list)
    metrics: MetricsSource | None = None
    abort_dir: Path | None = None
    run_id: str | None = None
    term_grace_s: float = 10.0
    request_timeout_s: float = 60.0
    progress: Callable[[str], None] | None = None
    upload_every_s: float | None = None  # a store --out: seconds between window uploads

    @property
    def marker_dir(self) -> Path:
        return self.abort_dir if self.abort_dir is not None else self.out.resolve().parent


class AlreadyAborted(Exception):
    """Another shard aborted the stage before this one started: it sends nothing, and its
    results say it was aborted by the marker (so a late pod ends like its siblings)."""

    def __init__(self, cfg: StageConfig, marker: dict[str, Any]) -> None:
        super().__init__(
            f"stage {cfg.stage} was already aborted (marker {cfg.marker_dir / 'ABORT'}: "
            f"{marker.get('criterion', '?')} by shard {marker.get('shard', '?')}); nothing sent"
        )
        self.cfg = cfg
        self.marker = marker

    def write_results(self) -> None:
        cfg, now = self.cfg, time.time()
        writer = open_results(cfg.out, cfg.upload_every_s)
        writer.write_meta(
            {
                "format": FORMAT,
                "plan": {"name": cfg.plan.name, "path": cfg.plan_path},
                "stage": cfg.stage,
                "run_id": cfg.run_id,
                "target": _public_url(cfg.target),
                "shard": {"index": cfg.shard.index, "count": cfg.shard.count},
                "scale": cfg.scale,
                "time_scale": cfg.time_scale,
                "started_at": now,
                "ended_at": now,
                "status": "aborted",
                "exit_code": EXIT_ABORTED,
                "aborted": {
                    **{k: v for k, v in self.marker.items() if k in EVIDENCE_KEYS},
                    "criterion": self.marker.get("criterion"),
                    "observed": self.marker.get("observed"),
                    "at_s": 0.0,
                    "shard": str(cfg.shard),
                    "by_marker": True,
                },
                "scenarios": {},
                "vu_lifetimes": {},  # no VU ran here
                "generator": {},
            }
        )
        writer.close()


@dataclass
class StageOutcome:
    status: str
    exit_code: int
    aborted: dict[str, Any] | None
    out: Path
    results_lost: bool = False  # they never reached the store (kept on local disk)


@dataclass
class Prepared:
    cfg: StageConfig
    functions: dict[str, Callable[..., Any]]
    profiles: dict[str, Profile]
    live_criteria: list[Criterion]
    run_id: str


def _public_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def prepare(cfg: StageConfig) -> Prepared:
    """Check everything that can be checked before load; raise EngineInputError on a problem."""
    if cfg.stage not in cfg.plan.stages:
        raise EngineInputError(
            f"plan {cfg.plan.name!r} has no stage {cfg.stage!r} "
            f"(stages: {', '.join(cfg.plan.stages)})"
        )
    if not (cfg.scale > 0 and math.isfinite(cfg.scale)):
        raise EngineInputError(f"--scale must be a positive number, got {cfg.scale}")
    if not (cfg.time_scale > 0 and math.isfinite(cfg.time_scale)):
        raise EngineInputError(f"--time-scale must be a positive number, got {cfg.time_scale}")
    parts = urlsplit(cfg.target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EngineInputError(f"--target must be http(s)://host[:port][/path], got {cfg.target!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise EngineInputError(f"--target has an invalid port: {cfg.target!r}") from None
    stage = cfg.plan.stages[cfg.stage]
    functions: dict[str, Callable[..., Any]] = {}
    for name, scen in stage.scenarios.items():
        try:
            functions[name] = resolve(scen.exec)
        except ScenarioError as exc:
            raise EngineInputError(f"stage {cfg.stage}, scenario {name}: {exc}") from None
        if needs_user(functions[name]) and not cfg.users:
            raise EngineInputError(
                f"scenario {name} ({scen.exec}) logs in as seeded users: give --users FILE"
            )
    profiles = stage_profiles(stage, shard=cfg.shard, scale=cfg.scale, time_scale=cfg.time_scale)
    marker = read_marker(cfg.marker_dir)
    if marker is not None:
        raise AlreadyAborted(cfg, marker)
    live = cfg.plan.criteria_for(cfg.stage, ("rollback",))
    has_source = cfg.metrics is not None and not isinstance(cfg.metrics, NullSource)
    if not has_source:
        live = [c for c in live if c.metric in ENGINE_METRICS]
    run_id = cfg.run_id or f"{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
    return Prepared(cfg, functions, profiles, live, run_id)


class SystemSampler:
    """Asks the metrics source once a second, from its own thread; keeps the last samples."""

    def __init__(self, source: MetricsSource, groups: dict[float, list[str]]) -> None:
        self.source = source
        self.groups = groups
        self.names = [n for names in groups.values() for n in names]
        self._samples: deque[tuple[float, dict[str, float | None]]] = deque(maxlen=8)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="system-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.time()
            values: dict[str, float | None] = {}
            for window_s, names in self.groups.items():
                try:
                    got = self.source.sample(names, window_s)
                except Exception:  # a source must not raise; if it does, the values are unknown
                    got = {}
                for name in names:
                    value = got.get(name)
                    values[name] = float(value) if isinstance(value, int | float) else None
            self._samples.append((began, values))
            self._stop.wait(max(0.05, 1.0 - (time.time() - began)))

    def for_window(self, t: int) -> dict[str, float | None]:
        """The latest sample taken before the window ended (unknown if older than 3 s)."""
        for ts, values in reversed(self._samples):
            if ts < t + 1:
                return values if ts >= t - 2 else dict.fromkeys(self.names)
        return dict.fromkeys(self.names)


EVIDENCE_KEYS = (
    "criterion", "metric", "stat", "op", "threshold", "observed", "samples", "window",
    "test", "statistic", "boundary", "alpha", "confidence", "stage_alpha", "since_s",
    "window_observed", "window_samples", "criterion_window", "min_samples",
)  # fmt: skip


def abort_evidence(
    result: CriterionResult, stage_alpha: float, min_samples: int = 0
) -> dict[str, Any]:
    """What a breached live criterion puts in the abort record (meta.json and the marker).

    A sequential breach: ``observed`` and ``samples`` are the rate and requests over the
    evidence span (``window``: the last N seconds, from the stage's second ``since_s``, where
    the fault most likely started); ``statistic`` is ln of the test's e-value, ``boundary`` the
    ln(1 / ``alpha``) it reached, ``alpha`` this test's share of the stage's ``stage_alpha``
    and ``confidence`` 1 - ``alpha``. ``window_observed`` and ``window_samples`` are the
    criterion's own sliding window ``criterion_window`` (``min_samples`` is its floor). A
    point breach: the window's value, as before.
    """
    out: dict[str, Any] = {
        "criterion": result.id,
        "metric": result.metric,
        "stat": result.stat,
        "op": result.op,
        "threshold": result.threshold,
        "observed": result.observed,
        "samples": result.samples,
        "window": result.window,
        "test": result.test,
    }
    if result.test == "sequential" and result.alpha is not None:
        out.update(
            observed=result.span_observed,
            samples=result.span_samples,
            window=f"last {result.span_s}s" if result.span_s else result.window,
            since_s=result.since_s,
            statistic=result.statistic,
            boundary=result.boundary,
            alpha=result.alpha,
            confidence=round(1.0 - result.alpha, 9),
            stage_alpha=stage_alpha,
            window_observed=result.observed,
            window_samples=result.samples,
            criterion_window=result.window,
            min_samples=min_samples,
        )
    return out


def stage_horizon(profiles: dict[str, Profile]) -> int:
    """The stage's planned length in seconds on this shard (graceful stops included)."""
    end = 0.0
    for p in profiles.values():
        end = max(end, p.end + p.longest_grace)
    return max(1, math.ceil(end))


class _StageRun:
    def __init__(self, prep: Prepared) -> None:
        self.prep = prep
        self.cfg = prep.cfg
        self.limits = self.cfg.plan.generator
        self.status = "running"
        self.exit_code: int | None = None
        self.aborted: dict[str, Any] | None = None
        self.runs: list[ScenarioRun] = []
        self.scenario_tasks: list[asyncio.Task[None]] = []
        self.evaluator = SlidingEvaluator(
            prep.live_criteria,
            scale=self.cfg.scale,
            alpha=self.cfg.plan.live_alpha,
            shards=self.cfg.shard.count,
            horizon_s=stage_horizon(prep.profiles),
        )
        self.proc = ProcessSampler()
        self.windows = 0
        self.saturated_windows = 0
        self.lag_max_ms = 0.0
        self.requests = 0
        self.failed = 0
        self.sampler: SystemSampler | None = None
        self.engine_error: str | None = None
        self.writer = open_results(self.cfg.out, self.cfg.upload_every_s)
        self.marker = AbortMarker(self.cfg.marker_dir)
        self.start_wall = 0.0
        self.plan_digest: str | None = None

    # --- meta -------------------------------------------------------------------------------

    def meta(self, ended: bool) -> dict[str, Any]:
        cfg = self.cfg
        if self.plan_digest is None:
            try:
                self.plan_digest = sha256(as_path(cfg.plan_path).read_bytes()).hexdigest()
            except OSError:
                self.plan_digest = ""
        digest = self.plan_digest or None
        fraction = self.saturated_windows / self.windows if self.windows else 0.0
        return {
            "format": FORMAT,
            "plan": {"name": cfg.plan.name, "path": cfg.plan_path, "sha256": digest},
            "stage": cfg.stage,
            "run_id": self.prep.run_id,
            "target": _public_url(cfg.target),
            "shard": {"index": cfg.shard.index, "count": cfg.shard.count},
            "scale": cfg.scale,
            "time_scale": cfg.time_scale,
            "started_at": self.start_wall,
            "ended_at": time.time() if ended else None,
            "status": self.status,
            "exit_code": self.exit_code if ended else None,
            "aborted": self.aborted,
            "error": self.engine_error,
            "users": len(cfg.users),
            "live_criteria": [c.id for c in self.prep.live_criteria],
            "scenarios": {n: p.describe() for n, p in self.prep.profiles.items()},
            # each closed-model scenario's VUs as the schedule ran them, for its planned rate
            # (loadgate.runner.summary): [[seconds to the stop request, grace, VUs], ...]
            "vu_lifetimes": {
                run.name: rows for run in self.runs if (rows := run.lifetimes()) is not None
            }
            if ended
            else None,
            "generator": {
                "pid": os.getpid(),
                "host": platform.node(),
                "python": platform.python_version(),
                "loop": type(asyncio.get_event_loop_policy()).__module__.split(".")[0],
                "limits": self.limits.model_dump(),
                "windows": self.windows,
                "saturated_windows": self.saturated_windows,
                "saturated": self.windows > 0 and fraction > self.limits.max_fraction,
                "lag_max_ms": round(self.lag_max_ms, 3),
                "cpu_max": round(self.proc.cpu_max, 3),
                "rss_max_mb": round(self.proc.rss_max_mb, 1),
            },
        }

    # --- windows ----------------------------------------------------------------------------

    def close_window(self, recorder: Recorder, next_t: int) -> dict[str, Any]:
        # when the gauges (active VUs, open connections) were read: a busy loop closes a
        # window late, and a reader comparing the gauges with a profile must know when
        sampled_at = time.time() - self.start_wall
        win = recorder.roll(next_t)
        cpu, rss = self.proc.sample()
        lag_ms = win.lag_max_s * 1000.0
        saturated = lag_ms > self.limits.loop_lag_ms or cpu > self.limits.cpu
        sys_values = self.sampler.for_window(win.t) if self.sampler else {}
        end = min(time.time(), win.t + 1.0)
        rec = window_record(
            win,
            at=end - self.start_wall,
            gen={"cpu": cpu, "rss_mb": rss, "saturated": saturated},
            sys=sys_values,
        )
        rec["sampled_at"] = round(sampled_at, 3)
        win.release()
        self.writer.append_window(rec)
        self.windows += 1
        self.saturated_windows += int(saturated)
        self.lag_max_ms = max(self.lag_max_ms, lag_ms)
        for row in rec["http"]:
            self.requests += row[4]
            self.failed += row[5]
        return rec

    def report_progress(self, rec: dict[str, Any]) -> None:
        progress = self.cfg.progress
        if progress is None or round(rec["at"]) % PROGRESS_EVERY_S:
            return
        vus = sum(v[0] for v in rec["vus"].values())
        progress(
            f"t={rec['at']:.0f}s vus={vus} requests={self.requests} failed={self.failed} "
            f"lag_max={rec['gen']['lag_max_ms']:.0f}ms cpu={rec['gen']['cpu']:.2f}"
        )

    # --- stopping ---------------------------------------------------------------------------

    def hard_stop(self) -> None:
        for run in self.runs:
            run.cancel_all()
        for task in self.scenario_tasks:
            task.cancel()

    def abort(self, info: dict[str, Any]) -> None:
        if self.status != "running":
            return
        self.status = "aborted"
        self.exit_code = EXIT_ABORTED
        self.aborted = info
        if not info.get("by_marker"):
            marker = {k: v for k, v in info.items() if k != "by_marker"}
            self.marker.write({"stage": self.cfg.stage, "at": time.time(), **marker})
        self.hard_stop()

    def on_signal(self, signum: int) -> None:
        if self.status == "running":
            self.status = "terminated"
            self.exit_code = EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
            grace = self.cfg.term_grace_s
            for run in self.runs:
                run.request_stop(grace)
            asyncio.get_running_loop().call_later(grace + 1.0, self.hard_stop)
        else:
            self.hard_stop()

    def check_criteria(self, rec: dict[str, Any]) -> None:
        if not self.prep.live_criteria:
            return
        self.evaluator.push(rec)
        results = self.evaluator.evaluate()
        breached: list[CriterionResult] = [r for r in results if r.breached]
        if breached:
            first = breached[0]
            floor = next((c.min_samples for c in self.prep.live_criteria if c.id == first.id), 0)
            self.abort(
                {
                    **abort_evidence(first, self.evaluator.alpha, floor),
                    "at_s": round(time.time() - self.start_wall, 3),
                    "shard": str(self.cfg.shard),
                    "by_marker": False,
                }
            )

    def check_marker(self) -> None:
        marker = self.marker.poll()
        if marker is None or self.status != "running":
            return
        evidence = {k: v for k, v in marker.items() if k in EVIDENCE_KEYS}
        self.abort(
            {
                **evidence,
                "criterion": marker.get("criterion"),
                "observed": marker.get("observed"),
                "at_s": round(time.time() - self.start_wall, 3),
                "shard": marker.get("shard"),
                "by_marker": True,
            }
        )

    async def ticker(self, recorder: Recorder) -> None:
        while True:
            now = time.time()
            await asyncio.sleep(math.floor(now) + 1 - now)
            next_t = max(recorder.window.t + 1, int(time.time()))
            try:
                rec = self.close_window(recorder, next_t)
                if self.status == "running":
                    self.check_criteria(rec)
                if self.status == "running":
                    self.check_marker()
                self.report_progress(rec)
            except Exception as exc:  # results that cannot be written: stop, do not load blind
                self.engine_error = f"window {next_t - 1}: {type(exc).__name__}: {exc}"
                if self.status == "running":
                    self.status, self.exit_code = "error", EXIT_ERROR
                self.hard_stop()
                return

    # --- the stage --------------------------------------------------------------------------

    async def run(self) -> StageOutcome:
        cfg, prep = self.cfg, self.prep
        loop = asyncio.get_running_loop()
        self.start_wall = time.time()
        t0 = loop.time()
        recorder = Recorder(int(self.start_wall))
        rt = StageRuntime(
            base_url=cfg.target,
            recorder=recorder,
            time_scale=cfg.time_scale,
            scale=cfg.scale,
            run_id=prep.run_id,
            shard_index=cfg.shard.index,
            users=cfg.users,
            request_timeout=cfg.request_timeout_s,
        )
        stage = cfg.plan.stages[cfg.stage]
        for name, scen in stage.scenarios.items():
            self.runs.append(
                ScenarioRun(name, prep.functions[name], prep.profiles[name], scen.options, rt, t0)
            )
        self.writer.write_meta(self.meta(ended=False))
        self.marker.start()
        if cfg.metrics is not None and not isinstance(cfg.metrics, NullSource):
            groups: dict[float, list[str]] = {}
            for name, metric in cfg.plan.system_metrics.items():
                groups.setdefault(metric.window, []).append(name)
            if groups:
                self.sampler = SystemSampler(cfg.metrics, groups)
                self.sampler.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.on_signal, signum)
        lag_task = asyncio.create_task(watch_loop_lag(recorder))
        self.scenario_tasks = [asyncio.create_task(r.run(), name=r.name) for r in self.runs]
        ticker = asyncio.create_task(self.ticker(recorder))
        try:
            results = await asyncio.gather(*self.scenario_tasks, return_exceptions=True)
            for res in results:
                if isinstance(res, Exception):
                    self.engine_error = f"{type(res).__name__}: {res}"
                    if self.status == "running":
                        self.status, self.exit_code = "error", EXIT_ERROR
        finally:
            rt.close()
            ticker.cancel()
            lag_task.cancel()
            await asyncio.gather(ticker, lag_task, return_exceptions=True)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if self.sampler is not None:
                self.sampler.stop()
            self.close_window(recorder, recorder.window.t + 1)
            if self.status == "running":
                self.status, self.exit_code = "completed", EXIT_COMPLETED
            self.marker.close()
            self.writer.write_meta(self.meta(ended=True))
            self.writer.close()
            lost = bool(getattr(self.writer, "error", None))
            if lost:
                # the results never reached the store: whatever the load did, the run failed
                self.exit_code = EXIT_ERROR
        assert self.exit_code is not None
        return StageOutcome(self.status, self.exit_code, self.aborted, cfg.out, lost)


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def run_stage(cfg: StageConfig, prepared: Prepared | None = None) -> StageOutcome:
    """Prepare (may raise EngineInputError, nothing sent) and run one stage on this shard."""
    prep = prepared or prepare(cfg)
    install_uvloop()
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return asyncio.run(_StageRun(prep).run())
    finally:
        gc.set_threshold(*thresholds)


def describe_load(prep: Prepared) -> list[str]:
    """Who gets how much load, and the request rate the plan's pacing implies (printed at the
    start of a stage, and alone by a dry run)."""
    from loadgate.runner.summary import describe_pacing

    cfg = prep.cfg
    lines = [
        f"stage {cfg.stage} of plan {cfg.plan.name}: shard {cfg.shard}, scale {cfg.scale:g}, "
        f"time scale {cfg.time_scale:g}, target {_public_url(cfg.target)}"
    ]
    for name, profile in prep.profiles.items():
        d = profile.describe()
        lines.append(
            f"  {name}: {d['executor']} peak {d['peak_this_shard']} of {d['peak_total']} "
            f"VUs on this shard, from {d['start_s']:g}s for {d['duration_s']:g}s"
        )
        lines.append(f"    {describe_pacing(profile)}")
    lines.append(
        "  live rollback criteria: " + (", ".join(c.id for c in prep.live_criteria) or "none")
    )
    rates = [c.id for c in prep.live_criteria if is_sequential(c)]
    if rates:
        each = split_alpha(cfg.plan.live_alpha, cfg.shard.count, len(rates))
        lines.append(
            f"  sequential test of {', '.join(rates)}: false-alarm probability "
            f"{cfg.plan.live_alpha:g} per stage ({each:.2g} per shard and criterion)"
        )
    return lines
