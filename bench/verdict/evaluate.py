"""The issue's verdict goals, measured over repeated gate runs against the reference service.

Each run is the DAG's core steps without Airflow (``prepare`` → an empty checklist → ``seed`` →
for each stage: ``run_stage_local`` → ``gate.decide``, re-run once on ``inconclusive`` as the
DAG does → ``run_verdict`` → ``record_history``), against the real ``syncbridge serve`` on
loopback (a fresh service per run, per case round for the baseline comparisons). The checklist
is skipped (an empty ``checklist.json``): its checks are not what is measured here.

Cases (``--cases``, default all):

- ``healthy``: the shipped plan (harmonyflow-10k), ``scale`` 0.002, ``time_scale`` cycling
  0.005 / 0.02 / 0.1, its stages (``--healthy-stages``), one service for the case so each run is
  also compared with the previous passing ones (same target, plan and scale). Goal: pass, and
  the offered rate within 10% of the plan's (``rates.offered_vs_planned``) in every stage
  that declares a planned rate.
- ``errors2``: the shipped plan's API stage with 2% of API requests answered 5xx from the
  start. Goal: investigate, never rollback.
- ``rollback10``: a 10% 5xx fault set live (``svc.set_faults``) ``--fault-at`` seconds into a
  stage of two shards at ``--shard-rates`` requests/s each (``basic.get`` on an API route, an
  open model) gated on the shipped plan's API rollback criteria. Goal: rollback, every shard
  stopped within 3 s of the fault (time from setting the fault to each shard's abort record).
- ``regressions``: a two-endpoint plan (``GET /api/v1/sessions/{id}`` and
  ``.../devices``, 20 ± 2 ms base latency on every API route) gated against a healthy baseline
  run recorded in the history: +40% latency on one endpoint, +2 points of errors, p99 doubled
  with p50 unchanged → investigate; +10% latency on the endpoint → pass.
- ``saturated``: one shard with far too many closed-loop VUs for one core → invalid.

Results go to ``bench/results/verdict-<time>.json`` (with the seeds and run ids used) and a
table to stdout. Everything is bounded: every stage has a planned length, the engine stops
itself, each wait here has a deadline.

    .venv/bin/python bench/verdict/evaluate.py                 # all cases (about 50 minutes)
    .venv/bin/python bench/verdict/evaluate.py --quick         # one or two runs per case
    .venv/bin/python bench/verdict/evaluate.py --cases errors2,regressions --runs 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from loadgate import pipeline
from loadgate.backends.local import run_stage_local
from loadgate.config.run import build_run_config, resolve_plan_path
from loadgate.run import folder, gate
from loadgate.verdict.outcomes import Verdict
from syncbridge.launcher import RunningService, start_syncbridge

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
SECRET = "verdict-evaluation"  # the seeded users' password secret (a test value)
CASES = ("regressions", "saturated", "errors2", "rollback10", "healthy")
ROUTE_A = "/api/v1/sessions/{id}"
ROUTE_B = "/api/v1/sessions/{id}/devices"
BASE = {"latency_ms": 20, "latency_jitter_ms": 2}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- one gate run --------------------------------------------------------------------------


def gate_run(
    svc: RunningService,
    root: Path,
    run_id: str,
    *,
    plan: str = "harmonyflow-10k",
    scale: float,
    time_scale: float,
    stages: list[str],
    during: Callable[[folder.Run, str], None] | None = None,
    record: bool = True,
) -> dict[str, Any]:
    """One gate run; ``during(run, stage)`` runs in a thread while each stage's load runs."""
    config = build_run_config(
        {
            "profile": "syncbridge",
            "target_url": svc.url,
            "release": "v1",
            "plan": plan,
            "scale": scale,
            "time_scale": time_scale,
            "stages": stages,
            "artifacts_root": str(root),
        },
        allowlist=[],
    )
    run = folder.Run(pipeline.prepare(config, run_id))
    run.artifacts.write_json("checklist.json", [])  # skipped: not what is measured
    seeded = pipeline.seed(run, secret=SECRET)
    out: dict[str, Any] = {
        "run_id": run_id,
        "scale": scale,
        "time_scale": time_scale,
        "seeded": seeded.ready,
        "stages": {},
    }
    t0 = time.time()
    for stage in config.stages:
        if pipeline.stage_skip_reason(run, stage):
            continue
        decided = _stage(run, stage, 1, during)
        if (
            decided["verdict"] == Verdict.INCONCLUSIVE
            and pipeline.attempt_skip_reason(run, stage, 2) is None
        ):
            decided = _stage(run, stage, 2, during)
        out["stages"][stage] = _stage_figures(run, stage, decided)
    verdict, reasons = pipeline.run_verdict(run)
    out.update(verdict=str(verdict), reasons=reasons, seconds=round(time.time() - t0, 1))
    if record:
        pipeline.record_history(run)
    out["run_root"] = str(run.artifacts.root)
    return out


def _stage(run: folder.Run, stage: str, attempt: int, during) -> dict[str, Any]:
    thread = None
    if during is not None:
        thread = threading.Thread(target=during, args=(run, stage), daemon=True)
        thread.start()
    outcome = run_stage_local(run, stage, lambda line: None, attempt=attempt)
    if thread is not None:
        thread.join(timeout=30)
    decided = gate.decide(run, stage, attempt=attempt).model_dump(mode="json")
    decided["_outcome"] = outcome
    return decided


def _stage_figures(run: folder.Run, stage: str, decided: dict[str, Any]) -> dict[str, Any]:
    summary = decided.get("summary") or {}
    rates = summary.get("rates") or {}
    outcome = decided.get("_outcome") or {}
    return {
        "verdict": str(decided["verdict"]),
        "attempt": decided.get("attempt", 1),
        "reasons": decided.get("reasons", []),
        "requests": summary.get("requests"),
        "error_rate": summary.get("error_rate"),
        "p50_ms": summary.get("p50_ms"),
        "p95_ms": summary.get("p95_ms"),
        "p99_ms": summary.get("p99_ms"),
        "rates": {k: rates.get(k) for k in ("planned", "offered", "achieved", "seconds")}
        | {"offered_vs_planned": rates.get("offered_vs_planned")},
        "aborted": decided.get("aborted"),
        "exit_codes": outcome.get("exit_codes"),
        "baseline_run": decided.get("baseline_run"),
        "folder": str(folder.stage_folder(run, stage, decided.get("attempt", 1))),
    }


def shard_metas(folder: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("shard-*/meta.json"))]


# --- cases ---------------------------------------------------------------------------------


def healthy_schedule(spec: str, runs: int) -> list[tuple[float, list[str]]]:
    """``0.005:4:all,0.02:4:all,0.1:2:api`` → (time_scale, stages) per run, ``runs`` at most."""
    out: list[tuple[float, list[str]]] = []
    for part in spec.split(","):
        ts, n, stages = part.split(":")
        chosen = ["api", "websocket", "session"] if stages == "all" else stages.split("+")
        out += [(float(ts), chosen)] * int(n)
    # interleave the time scales so a shortened evaluation still covers each
    by_ts: dict[float, list[tuple[float, list[str]]]] = {}
    for item in out:
        by_ts.setdefault(item[0], []).append(item)
    mixed: list[tuple[float, list[str]]] = []
    while any(by_ts.values()):
        for queue in by_ts.values():
            if queue:
                mixed.append(queue.pop(0))
    return mixed[:runs]


def case_healthy(work: Path, schedule: list[tuple[float, list[str]]]) -> list[dict[str, Any]]:
    out = []
    svc = start_syncbridge(work / "svc-healthy")
    try:
        for i, (ts, stages) in enumerate(schedule):
            log(f"healthy {i + 1}/{len(schedule)}: time_scale {ts}, stages {','.join(stages)}")
            r = gate_run(
                svc,
                work / "artifacts-healthy",
                f"healthy-{i + 1}",
                scale=0.002,
                time_scale=ts,
                stages=stages,
            )
            ratios = {
                s: f["rates"]["offered_vs_planned"]
                for s, f in r["stages"].items()
                if f["rates"]["offered_vs_planned"] is not None
            }
            r["offered_vs_planned"] = ratios
            r["goal_met"] = r["verdict"] == "pass" and all(
                abs(v - 1) <= 0.10 for v in ratios.values()
            )
            per_stage = {s: f["verdict"] for s, f in r["stages"].items()}
            log(f"  → {r['verdict']} {per_stage} offered/planned {ratios} ({r['seconds']} s)")
            if r["verdict"] != "pass":
                log(f"  reasons: {r['reasons']}")
            out.append(r)
    finally:
        svc.stop()
    return out


def case_errors2(work: Path, runs: int, scale: float, time_scale: float) -> list[dict[str, Any]]:
    out = []
    for i in range(runs):
        log(f"errors2 {i + 1}/{runs}: error_rate 0.02, scale {scale}, time_scale {time_scale}")
        svc = start_syncbridge(work / f"svc-errors2-{i + 1}", faults={"error_rate": 0.02})
        try:
            r = gate_run(
                svc,
                work / "artifacts-errors2",
                f"errors2-{i + 1}",
                scale=scale,
                time_scale=time_scale,
                stages=["api"],
                record=False,
            )
        finally:
            svc.stop()
        api = r["stages"].get("api", {})
        r["goal_met"] = r["verdict"] == "investigate" and not api.get("aborted")
        log(f"  → {r['verdict']} errors {api.get('error_rate')} of {api.get('requests')}")
        out.append(r)
    return out


def rollback_plan(path: Path, shard_rate: float, duration_s: float) -> str:
    """basic.get on an API route at ``shard_rate`` × 2 shards, an open model, gated on the
    shipped plan's rollback criteria for the API stage (as they are, copied)."""
    shipped = yaml.safe_load(resolve_plan_path("harmonyflow-10k").read_text())
    rollback = [  # the engine-measured ones (the system metrics need the plan's sources)
        c | {"stages": ["api"]}
        for c in shipped["criteria"]
        if c["level"] == "rollback"
        and "api" in c.get("stages", ["api"])
        and c["metric"].startswith("http_")
    ]
    plan = {
        "name": "verdict-rollback10",
        "stages": {
            "api": {
                "shards": 2,
                "scenarios": {
                    "probe": {
                        "exec": "basic.get",
                        "executor": "constant-arrival-rate",
                        "rate": 2 * shard_rate,
                        "duration": f"{duration_s:g}s",
                        "pre_allocated_vus": 64,
                        "max_vus": 256,
                        "options": {
                            "path": "/api/v1/sessions/probe",
                            "name": ROUTE_A,
                            "expected": [401],
                        },
                    }
                },
            }
        },
        "criteria": rollback,
        "live_alpha": shipped.get("live_alpha", 0.01),
    }
    path.write_text(yaml.safe_dump(plan))
    return str(path)


def case_rollback10(
    work: Path, runs: int, shard_rates: list[float], fault_at: float, duration: float
) -> list[dict[str, Any]]:
    out = []
    for rate in shard_rates:
        plan = rollback_plan(work / f"rollback-{rate:g}.yaml", rate, duration)
        for i in range(runs):
            log(f"rollback10 {i + 1}/{runs}: {rate:g} req/s per shard, fault at {fault_at:g} s")
            svc = start_syncbridge(work / f"svc-rb-{rate:g}-{i + 1}")
            fault: dict[str, Any] = {}

            def inject(run: folder.Run, stage: str, svc=svc, fault=fault) -> None:
                stage_dir = folder.stage_folder(run, stage)
                deadline = time.time() + 30
                starts: list[float] = []
                while time.time() < deadline:  # bounded: the shards start within seconds
                    metas = [
                        json.loads(p.read_text())
                        for p in stage_dir.glob("shard-*/meta.json")
                        if p.stat().st_size
                    ]
                    if len(metas) == 2:
                        starts = [m["started_at"] for m in metas]
                        break
                    time.sleep(0.05)
                if not starts:
                    return
                time.sleep(max(0.0, max(starts) + fault_at - time.time()))
                before = time.time()
                svc.set_faults({"error_rate": 0.10})
                fault["set_at"] = (before + time.time()) / 2

            try:
                r = gate_run(
                    svc,
                    work / "artifacts-rollback10",
                    f"rollback10-{rate:g}-{i + 1}",
                    plan=plan,
                    scale=1,
                    time_scale=1,
                    stages=["api"],
                    during=inject,
                    record=False,
                )
            finally:
                svc.stop()
            api = r["stages"]["api"]
            metas = shard_metas(api["folder"])
            stops, first = [], None
            for m in metas:
                ab = m.get("aborted") or {}
                if ab.get("at_s") is not None:
                    stops.append(m["started_at"] + ab["at_s"])
                    if not ab.get("by_marker"):
                        t = m["started_at"] + ab["at_s"]
                        first = t if first is None else min(first, t)
            set_at = fault.get("set_at")
            all_stopped = len(stops) == len(metas) == 2 and all(
                c == 3 for c in api["exit_codes"] or []
            )
            achieved = (api["rates"].get("achieved") or 0.0) / 2
            r.update(
                shard_rate=rate,
                achieved_per_shard=round(achieved, 1),
                fault_set_at=set_at,
                all_stopped=all_stopped,
                first_abort_s=round(first - set_at, 3) if first and set_at else None,
                last_stop_s=round(max(stops) - set_at, 3) if stops and set_at else None,
                abort=api.get("aborted"),
            )
            r["goal_met"] = (
                r["verdict"] == "rollback"
                and all_stopped
                and r["last_stop_s"] is not None
                and r["last_stop_s"] <= 3.0
            )
            log(
                f"  → {r['verdict']} all stopped {all_stopped}, first abort "
                f"{r['first_abort_s']} s, last shard stopped {r['last_stop_s']} s after the fault"
            )
            out.append(r)
    return out


def regression_plan(path: Path, rate: float, duration_s: float) -> str:
    """Two endpoints at ``rate`` requests/s each, one shard, an open model; criteria: the
    slowed endpoint's p95 vs the baseline (> 30%, investigate), the API error-rate target
    (>= 1%) and the live error-rate rollback (> 5% over 30 s), as the shipped plan has them."""

    def probe(path: str, name: str) -> dict[str, Any]:
        return {
            "exec": "basic.get",
            "executor": "constant-arrival-rate",
            "rate": rate,
            "duration": f"{duration_s:g}s",
            "pre_allocated_vus": 16,
            "max_vus": 64,
            "options": {"path": path, "name": name, "expected": [401]},
        }

    plan = {
        "name": "verdict-regressions",
        "stages": {
            "api": {
                "shards": 1,
                "scenarios": {
                    "sessions": probe("/api/v1/sessions/probe", ROUTE_A),
                    "devices": probe("/api/v1/sessions/probe/devices", ROUTE_B),
                },
            }
        },
        "criteria": [
            {
                "id": "sessions-p95-degradation",
                "level": "investigate",
                "metric": "http_req_duration",
                "stat": "p95",
                "scope": {"names": [f"GET {ROUTE_A}"]},
                "breach": "> 30%",
                "relative_to": "baseline",
                "min_samples": 100,
            },
            {
                "id": "api-error-rate",
                "level": "acceptance",
                "metric": "http_req_failed",
                "breach": ">= 1%",
                "min_samples": 100,
            },
            {
                "id": "error-rate-rollback",
                "level": "rollback",
                "metric": "http_req_failed",
                "breach": "> 5%",
                "window": "30s",
                "min_samples": 100,
            },
        ],
    }
    path.write_text(yaml.safe_dump(plan))
    return str(path)


REGRESSION_CASES = ("latency+40%", "latency+10%", "errors+2pp", "p99x2")
REGRESSION_EXPECTED = {
    "latency+40%": "investigate",
    "latency+10%": "pass",
    "errors+2pp": "investigate",
    "p99x2": "investigate",
}


def regression_faults(case: str, base_gate: dict[str, Any]) -> dict[str, Any]:
    """The current run's faults, sized on the baseline's measured latencies."""
    by_name = (base_gate["summary"].get("by_name") or {}) if base_gate else {}
    a = next((v for k, v in by_name.items() if k.endswith(ROUTE_A)), None) or {}
    p95_a = a.get("p95_ms") or base_gate["summary"]["p95_ms"]
    p99 = base_gate["summary"]["p99_ms"]
    if case == "latency+40%":
        return BASE | {"tail_rate": 1.0, "tail_ms": round(0.4 * p95_a, 2), "tail_routes": [ROUTE_A]}
    if case == "latency+10%":
        return BASE | {"tail_rate": 1.0, "tail_ms": round(0.1 * p95_a, 2), "tail_routes": [ROUTE_A]}
    if case == "errors+2pp":
        return BASE | {"error_rate": 0.02}
    if case == "p99x2":
        # 3% of requests p99 later: p99 about doubles, p50 and p95 (below the 97th) stay
        return BASE | {"tail_rate": 0.03, "tail_ms": round(p99, 2)}
    raise ValueError(case)


def case_regressions(work: Path, rounds: int, rate: float, duration: float) -> list[dict[str, Any]]:
    out = []
    plan = regression_plan(work / "regressions.yaml", rate, duration)
    for i in range(rounds):
        root = work / f"artifacts-regressions-{i + 1}"
        svc = start_syncbridge(work / f"svc-reg-{i + 1}", faults=BASE)
        try:
            log(f"regressions round {i + 1}/{rounds}: baseline")
            base = gate_run(
                svc, root, f"baseline-{i + 1}", plan=plan, scale=1, time_scale=1, stages=["api"]
            )
            base_gate = json.loads(Path(base["run_root"], "gates", "api.json").read_text())
            base["case"] = "baseline"
            base["goal_met"] = base["verdict"] == "pass"
            log(f"  → baseline {base['verdict']} p95 {base_gate['summary']['p95_ms']} ms")
            out.append(base)
            if base["verdict"] != "pass":
                log(f"  baseline did not pass: {base['reasons']}")
                continue
            for case in REGRESSION_CASES:
                faults = regression_faults(case, base_gate)
                svc.set_faults(faults)
                r = gate_run(
                    svc,
                    root,
                    f"{case}-{i + 1}",
                    plan=plan,
                    scale=1,
                    time_scale=1,
                    stages=["api"],
                    record=False,  # the baseline stays the healthy run
                )
                svc.set_faults(BASE)
                api = r["stages"]["api"]
                r.update(case=case, faults=faults, expected=REGRESSION_EXPECTED[case])
                r["goal_met"] = (
                    r["verdict"] == REGRESSION_EXPECTED[case]
                    and api["baseline_run"] == f"baseline-{i + 1}"
                    and not api.get("aborted")
                )
                log(f"  → {case}: {r['verdict']} (expected {r['expected']}); {r['reasons'][:3]}")
                out.append(r)
        finally:
            svc.stop()
    return out


def saturated_plan(path: Path, vus: int, duration_s: float, think_ms: float) -> str:
    plan = {
        "name": "verdict-saturated",
        "stages": {
            "api": {
                "shards": 1,
                "scenarios": {
                    "flood": {
                        "exec": "basic.get",
                        "executor": "constant-vus",
                        "vus": vus,
                        "duration": f"{duration_s:g}s",
                        "options": {"path": "/healthz", "think_time": [0, think_ms / 1000]},
                    }
                },
            }
        },
        "criteria": [
            {"id": "errors", "level": "acceptance", "metric": "http_req_failed", "breach": ">= 1%"}
        ],
    }
    path.write_text(yaml.safe_dump(plan))
    return str(path)


def case_saturated(
    work: Path, runs: int, vus: int, duration: float, think_ms: float
) -> list[dict[str, Any]]:
    out = []
    plan = saturated_plan(work / "saturated.yaml", vus, duration, think_ms)
    for i in range(runs):
        log(f"saturated {i + 1}/{runs}: one shard, {vus} closed-loop VUs, think 0-{think_ms:g} ms")
        svc = start_syncbridge(work / f"svc-sat-{i + 1}")
        try:
            r = gate_run(
                svc,
                work / "artifacts-saturated",
                f"saturated-{i + 1}",
                plan=plan,
                scale=1,
                time_scale=1,
                stages=["api"],
                record=False,
            )
        finally:
            svc.stop()
        r["goal_met"] = r["verdict"] == "invalid"
        log(f"  → {r['verdict']}; {r['reasons'][:2]}")
        out.append(r)
    return out


# --- report --------------------------------------------------------------------------------


def _dist(values: list[float]) -> str:
    if not values:
        return "—"
    v = sorted(values)
    q = statistics.quantiles(v, n=20, method="inclusive") if len(v) >= 2 else [v[0]] * 19
    return f"min {v[0]:.2f} / p50 {statistics.median(v):.2f} / p95 {q[18]:.2f} / max {v[-1]:.2f} s"


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = ["| case | runs | verdicts | key figures | goal met |", "|---|---:|---|---|---|"]

    def verdicts(rs: list[dict[str, Any]]) -> str:
        counts: dict[str, int] = {}
        for r in rs:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        return ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))

    def met(rs: list[dict[str, Any]]) -> str:
        n = sum(1 for r in rs if r.get("goal_met"))
        return f"{n}/{len(rs)}" + (" ✓" if n == len(rs) else " ✗")

    if results.get("healthy"):
        rs = results["healthy"]
        for ts in sorted({r["time_scale"] for r in rs}):
            sub = [r for r in rs if r["time_scale"] == ts]
            per: dict[str, list[float]] = {}
            for r in sub:
                for stage, v in r["offered_vs_planned"].items():
                    per.setdefault(stage, []).append(v)
            fig = "offered/planned " + (
                ", ".join(f"{st} {min(v):.2f}–{max(v):.2f}" for st, v in per.items()) or "—"
            )
            stages = sorted({st for r in sub for st in r["stages"]})
            fig += f" (stages: {', '.join(stages)})"
            rows.append(
                f"| healthy, scale 0.002, time_scale {ts:g} | {len(sub)} | {verdicts(sub)} | "
                f"{fig} | {met(sub)} |"
            )
    if results.get("errors2"):
        rs = results["errors2"]
        errs = [r["stages"]["api"]["error_rate"] or 0 for r in rs if "api" in r["stages"]]
        reqs = [r["stages"]["api"]["requests"] or 0 for r in rs if "api" in r["stages"]]
        aborted = sum(1 for r in rs if r["stages"].get("api", {}).get("aborted"))
        rows.append(
            f"| 2% 5xx (shipped plan, API stage) | {len(rs)} | {verdicts(rs)} | "
            f"error rate {min(errs):.2%}–{max(errs):.2%} of {min(reqs)}–{max(reqs)} requests; "
            f"aborted {aborted} | {met(rs)} |"
        )
    if results.get("rollback10"):
        rs = results["rollback10"]
        for rate in sorted({r["shard_rate"] for r in rs}):
            sub = [r for r in rs if r["shard_rate"] == rate]
            last = [r["last_stop_s"] for r in sub if r["last_stop_s"] is not None]
            first = [r["first_abort_s"] for r in sub if r["first_abort_s"] is not None]
            stopped = sum(1 for r in sub if r["all_stopped"])
            within = sum(1 for v in last if v <= 3.0)
            got = statistics.median(r["achieved_per_shard"] for r in sub)
            rows.append(
                f"| 10% 5xx mid-stage, {rate:g} req/s per shard × 2 (achieved {got:.0f} "
                f"until the abort) | {len(sub)} | "
                f"{verdicts(sub)} | all shards stopped {stopped}/{len(sub)}; fault → last "
                f"shard stopped: {_dist(last)}; first abort p50 "
                f"{statistics.median(first) if first else float('nan'):.2f} s; ≤ 3 s in "
                f"{within}/{len(sub)} | {met(sub)} |"
            )
    if results.get("regressions"):
        rs = results["regressions"]
        for case in ("baseline", *REGRESSION_CASES):
            sub = [r for r in rs if r.get("case") == case]
            if not sub:
                continue
            p95 = [r["stages"]["api"]["p95_ms"] for r in sub]
            p50 = [r["stages"]["api"]["p50_ms"] for r in sub]
            p99 = [r["stages"]["api"]["p99_ms"] for r in sub]
            err = [r["stages"]["api"]["error_rate"] for r in sub]
            want = REGRESSION_EXPECTED.get(case, "pass")
            rows.append(
                f"| regression: {case} (expected {want}) | {len(sub)} | {verdicts(sub)} | "
                f"p50 {statistics.median(p50):.1f} / p95 {statistics.median(p95):.1f} / "
                f"p99 {statistics.median(p99):.1f} ms, errors {statistics.median(err):.2%} "
                f"(medians) | {met(sub)} |"
            )
    if results.get("saturated"):
        rs = results["saturated"]
        rows.append(
            f"| saturated generator (1 shard) | {len(rs)} | {verdicts(rs)} | "
            f"{(rs[0]['reasons'] or [''])[-1][:90]} | {met(rs)} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--runs", type=int, default=10, help="runs per case (regressions: rounds)")
    ap.add_argument("--quick", action="store_true", help="a smoke: 2 runs per case, 1 round")
    ap.add_argument("--regression-rounds", type=int, default=3)
    ap.add_argument(
        "--healthy",
        default="0.005:4:all,0.02:4:all,0.1:2:api",
        help="time_scale:runs:stages (all, or e.g. api+session), comma-separated",
    )
    ap.add_argument("--errors-scale", type=float, default=0.01)
    ap.add_argument("--errors-time-scale", type=float, default=0.01)
    ap.add_argument("--shard-rates", default="100,600", help="rollback10: req/s per shard")
    ap.add_argument("--fault-at", type=float, default=12.0, help="rollback10: seconds in")
    ap.add_argument("--rollback-duration", type=float, default=40.0)
    ap.add_argument("--regression-rate", type=float, default=75.0, help="requests/s each")
    ap.add_argument("--regression-duration", type=float, default=20.0)
    ap.add_argument("--saturated-vus", type=int, default=16000)
    ap.add_argument("--saturated-runs", type=int, default=3)
    ap.add_argument("--saturated-think-ms", type=float, default=2.0, help="think time 0..this")
    ap.add_argument("--keep", action="store_true", help="keep the runs' artifacts")
    ap.add_argument(
        "--table", metavar="JSON", help="print the table of a results file, run nothing"
    )
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())["results"]))
        return 0
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        ap.error(f"unknown cases: {', '.join(sorted(unknown))}")
    runs = 2 if args.quick else args.runs
    rounds = 1 if args.quick else args.regression_rounds
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="verdict-eval-"))
    log(f"work folder {work}")
    results: dict[str, list[dict[str, Any]]] = {}
    t0 = time.time()
    try:
        for case in cases:
            if case == "healthy":
                results[case] = case_healthy(work, healthy_schedule(args.healthy, runs))
            elif case == "errors2":
                results[case] = case_errors2(work, runs, args.errors_scale, args.errors_time_scale)
            elif case == "rollback10":
                rates = [float(x) for x in args.shard_rates.split(",")]
                results[case] = case_rollback10(
                    work, runs, rates, args.fault_at, args.rollback_duration
                )
            elif case == "regressions":
                results[case] = case_regressions(
                    work, rounds, args.regression_rate, args.regression_duration
                )
            elif case == "saturated":
                n = 1 if args.quick else args.saturated_runs
                results[case] = case_saturated(
                    work, n, args.saturated_vus, args.rollback_duration / 2, args.saturated_think_ms
                )
            _write(RESULTS / f"verdict-{stamp}.json", args, results, t0)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = _write(RESULTS / f"verdict-{stamp}.json", args, results, t0)
    print()
    print(table(results))
    print(f"\nresults: {out} ({time.time() - t0:.0f} s)")
    return 0 if all(r.get("goal_met") for rs in results.values() for r in rs) else 1


def _write(path: Path, args, results, t0) -> Path:
    path.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "options": vars(args),
                "seeds": {
                    "users_secret": SECRET,
                    "note": "the run ids are fixed; the engine seeds each VU from run_key(run id), "
                    "which adds the start time (local_backend.run_key), and the service "
                    "draws its faults with its own unseeded generator",
                },
                "seconds": round(time.time() - t0, 1),
                "results": results,
                "table": table(results),
            },
            indent=1,
            default=str,
        )
    )
    return path


if __name__ == "__main__":
    sys.exit(main())
