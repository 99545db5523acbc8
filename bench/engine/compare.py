"""The load engine (``loadgate run-stage``) against k6 and Locust, side by side in one run.

    .venv/bin/python bench/engine/compare.py                # everything, 2 rounds, ~6 minutes
    .venv/bin/python bench/engine/compare.py --only http    # one part: http, seed or ws
    .venv/bin/python bench/engine/compare.py --quick        # smoke run (~1.5 minutes)

Where ``bench/clients/run.py`` measures the raw protocol clients, this measures the whole engine:
the real ``loadgate run-stage`` command with the bench plan ``bench/engine/plan.yaml`` (VU
context, executors, one-second windows with HDR histograms written to ``windows.jsonl``, the
loop-lag probe, the generator's own health samples), generator pinned to core 0 and target to
core 1 (``taskset``), rounds interleaved, medians reported:

1. ``http``: 64 VUs in a closed loop (``basic.get``, no think time): requests per generator
   CPU-second, engine vs k6 vs Locust (FastHttpUser) vs the raw ``HttpConnection`` loop of
   ``bench/clients/gen_http.py``. Goal: the engine at least 2× k6.
2. ``seed``: 10,000 VUs of the seed's pattern (one GET, then think uniform 0-3 s): peak RSS,
   engine vs k6 vs Locust. Goal: the engine at most 1/20 of k6.
3. ``ws``: 10,000 WebSockets (2,000 new a second), a heartbeat every 5 s each and a state update
   every 5 s from 1,000 of them, held ``--ws-hold`` s: peak RSS and CPU, engine
   (``bench_scenarios:ws_hold``) vs Node ``ws`` (``bench/clients/gen_ws.js``). Goal: no more
   memory and no more CPU than Node.

The targets, peers and measuring helpers are those of ``bench/clients`` (imported from
``bench/clients/run.py``, not copied): throughput from the target's own counter, CPU from
``/proc/PID/stat`` of the generator's process tree over the measured window, peak RSS from
``VmHWM`` just before the generator is stopped. Install the peers once with
``bench/clients/setup_peers.sh``; a missing peer is skipped. The engine's own results land in
``bench/results/engine/`` (its summary gives its error count, latency and loop lag), raw figures
in ``bench/results/engine/compare-*.json``. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LOADGATE = str(ROOT / ".venv" / "bin" / "loadgate")
PLAN = HERE / "plan.yaml"
RESULTS = ROOT / "bench" / "results" / "engine"
PLAN_VUS = {
    "closed": 64,
    "seed": 10_000,
    "ws": 10_000,
}  # as in plan.yaml; --scale for others


def _clients_bench() -> ModuleType:
    """bench/clients/run.py as a module (its targets, peers and /proc helpers)."""
    spec = importlib.util.spec_from_file_location(
        "bench_clients_run", HERE.parent / "clients" / "run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cb = _clients_bench()


# --- the engine as a generator --------------------------------------------------------------


def engine_cmd(stage: str, url: str, out: Path, scale: float = 1.0) -> tuple[list[str], dict, int]:
    """(command, extra env, stop signal): ``loadgate run-stage`` on the bench plan; the plan's
    durations are upper bounds, the bench stops it with SIGTERM once it has measured."""
    cmd = [LOADGATE, "run-stage", "--plan", str(PLAN), "--stage", stage, "--target", url]
    cmd += ["--out", str(out), "--scale", f"{scale:g}", "--term-grace", "1", "--quiet"]
    pythonpath = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    return (
        cmd,
        {"PYTHONPATH": pythonpath, "LOADGATE_SCENARIO_PACKAGES": "bench_scenarios"},
        signal.SIGTERM,
    )


def engine_summary(out: Path) -> dict:
    """The engine's own merged summary of a run (``loadgate summarize --json``)."""
    proc = subprocess.run(
        [LOADGATE, "summarize", "--json", str(out)], capture_output=True, text=True, timeout=60
    )
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {"error": (proc.stderr or proc.stdout).strip()[-300:]}


def gen_cmd(
    client: str, url: str, vus: int, pattern: str, stage: str, out: Path
) -> tuple[list[str], dict, int] | None:
    if client == "engine":
        return engine_cmd(stage, url, out, vus / PLAN_VUS[stage])
    spec = cb.http_cmd("ours" if client == "raw" else client, url, vus, pattern)
    if spec is not None and client in ("k6", "locust"):
        # nothing of theirs is read after the measurement: kill rather than wait for their
        # graceful stop (Locust takes 10 s with 10,000 users)
        return spec[0], spec[1], signal.SIGKILL
    return spec


# --- 1 and 2: HTTP ----------------------------------------------------------------------------


def bench_http(
    clients: list[str],
    stage: str,
    vus: int,
    pattern: str,
    warmup: float,
    window: float,
    rounds: int,
    run_dir: Path,
    raw_rounds: int = 0,
) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {c: [] for c in clients}
    for rnd in range(rounds):
        order = clients[rnd % len(clients) :] + clients[: rnd % len(clients)]
        for client in order:
            if client == "raw" and rnd >= raw_rounds:
                continue
            out = run_dir / f"{stage}-r{rnd + 1}" / "shard"
            target, port = cb.start_target("http")
            url = f"http://127.0.0.1:{port}"
            try:
                spec = gen_cmd(client, url, vus, pattern, stage, out)
                if spec is None:
                    print(f"  [{client}] not installed: skipped (bench/clients/setup_peers.sh)")
                    results.pop(client, None)
                    continue
                cmd, env, sig = spec
                began = time.monotonic()
                res = cb.measure_http(client, cmd, env, sig, url, warmup, window)
                res["wall_s"] = round(time.monotonic() - began, 1)
            finally:
                target.stop()
            if client == "engine":
                s = engine_summary(out)
                res["engine"] = {k: s.get(k) for k in ENGINE_KEYS}
                res["engine"]["lag_p99_ms"] = (s.get("generator") or {}).get("lag_p99_ms")
                res["errors"], res["p50_ms"], res["p99_ms"] = s.get("failed"), *_p(s)
            print(f"  [{stage} round {rnd + 1}] {client}: {cb.fmt(res)}", flush=True)
            results[client].append(res)
        clients = [c for c in clients if c in results]
    return results


ENGINE_KEYS = ("status", "requests", "failed", "p50_ms", "p99_ms", "max_vus", "generator_saturated")


def _p(s: dict) -> tuple[float | None, float | None]:
    return s.get("p50_ms"), s.get("p99_ms")


# --- 3: WebSockets ----------------------------------------------------------------------------

WS_STAGE = {"engine": "ws"}
WS_RATE = 2000  # new connections a second: the plan's interval (0.5 ms), and Node's rate


def target_ws_stats(port: int) -> dict:
    try:
        return json.loads(cb.http_get(f"http://127.0.0.1:{port}/__stats"))
    except (OSError, ValueError, urllib.error.URLError):
        return {}


def measure_ws(
    client: str, cmd: list[str], env: dict, port: int, conns: int, rate: int, hold: float
) -> dict:
    """Start the generator, wait until the target holds every connection (its own count, the
    same test for every client), then measure CPU over ``hold`` seconds and peak RSS."""
    gen = cb.Proc(f"ws_{client}", cmd, cb.GEN_CORE, env)
    started = time.monotonic()
    deadline = started + conns / rate * 3 + 30
    try:
        while (opened := target_ws_stats(port).get("open", 0)) < conns:
            if time.monotonic() > deadline or gen.p.poll() is not None:
                break
            time.sleep(0.25)
        ramp_s = time.monotonic() - started
        cpu_ready = cb.cpu_seconds(gen.pid)
        time.sleep(hold)
        cpu_end = cb.cpu_seconds(gen.pid)
        rss = cb.peak_rss_mb(gen.pid)
        held = target_ws_stats(port).get("open", 0)
        own_line = gen.wait_line("{", 10) if client == "node" else None
    finally:
        gen.stop(signal.SIGTERM, grace=15)
    res = {
        "connected": opened,
        "held_at_end": held,
        "ramp_s": ramp_s,
        "cpu_total_s": cpu_end,
        "cpu_hold_s": cpu_end - cpu_ready,
        "peak_rss_mb": rss,
    }
    if own_line:
        own = json.loads(own_line)
        res.update(
            failed=own.get("failed"),
            rtt_p50_ms=own.get("rtt_p50_ms"),
            rtt_p99_ms=own.get("rtt_p99_ms"),
            lag_p99_ms=own.get("lag_p99_ms"),
        )
    return res


def bench_ws(clients: list[str], conns: int, rate: int, hold: float, rounds: int, run_dir: Path):
    results: dict[str, list[dict]] = {c: [] for c in clients}
    for rnd in range(rounds):
        order = clients[rnd % len(clients) :] + clients[: rnd % len(clients)]
        for client in order:
            out = run_dir / f"{WS_STAGE.get(client, client)}-r{rnd + 1}" / "shard"
            target, port = cb.start_target("ws")
            url = f"http://127.0.0.1:{port}"
            try:
                if client.startswith("engine"):
                    stage = WS_STAGE[client]
                    cmd, env, _ = engine_cmd(stage, url, out, conns / PLAN_VUS[stage])
                else:
                    node = cb.ws_cmd(client, "ws" + url[4:] + "/ws", conns, rate, hold)
                    if node is None:
                        print(f"  [{client}] not installed: skipped (bench/clients/setup_peers.sh)")
                        results.pop(client, None)
                        continue
                    cmd, env = node, {}
                began = time.monotonic()
                res = measure_ws(client, cmd, env, port, conns, rate, hold)
                res["wall_s"] = round(time.monotonic() - began, 1)
            finally:
                target.stop()
            if client.startswith("engine"):
                s = engine_summary(out)
                ws = s.get("ws") or {}
                res.update(
                    failed=ws.get("connect_failed"),
                    rtt_p50_ms=ws.get("rtt_p50_ms"),
                    rtt_p99_ms=ws.get("rtt_p99_ms"),
                    lag_p99_ms=(s.get("generator") or {}).get("lag_p99_ms"),
                    engine={
                        "status": s.get("status"),
                        "max_connections": ws.get("max_connections"),
                        "messages_sent": ws.get("messages_sent"),
                        "messages_received": ws.get("messages_received"),
                        "ws_errors": ws.get("errors"),
                        "iteration_errors": s.get("iteration_errors"),
                        "generator_saturated": s.get("generator_saturated"),
                    },
                )
            print(
                f"  [ws round {rnd + 1}] {client}: {res['connected']:,} connected "
                f"({res.get('failed')} failed, {res['held_at_end']:,} at the end) in "
                f"{res['ramp_s']:.1f} s, peak RSS {res['peak_rss_mb']:,.0f} MB, CPU "
                f"{res['cpu_total_s']:.1f} s (hold {res['cpu_hold_s']:.1f} s), RTT p50 "
                f"{res.get('rtt_p50_ms')} / p99 {res.get('rtt_p99_ms')} ms, "
                f"lag p99 {res.get('lag_p99_ms')} ms",
                flush=True,
            )
            results[client].append(res)
        clients = [c for c in clients if c in results]
    return results


# --- report -----------------------------------------------------------------------------------

LABEL = {
    "engine": "**loadgate run-stage** (engine)",
    "raw": "raw `HttpConnection` loop (bench/clients)",
    "k6": "k6",
    "locust": "Locust FastHttpUser",
    "node": "Node + `ws`",
}


def med(rs: list[dict], key: str) -> float:
    return cb.median(rs, key) if rs else float("nan")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3g}×" if b and not math.isnan(a) and not math.isnan(b) else "–"


def _generator_rows(
    res: dict[str, list[dict]], key: str, unit: str, eng: float, cols: tuple[tuple[str, str], ...]
) -> list[str]:
    """A row per generator: the median of ``key``, engine ÷ it, the medians of ``cols`` (key,
    format) and each round's ``key``."""
    rows = []
    for c, rs in res.items():
        v = med(rs, key)
        each = ", ".join(f"{r[key]:,.0f}" for r in rs if key in r)
        medians = [format(med(rs, k), spec) for k, spec in cols]
        rows.append(cb.table_row(LABEL[c], f"{v:,.0f}{unit}", _ratio(eng, v), *medians, each))
    return rows


def _goal(text: str, ok: bool) -> str:
    return f"{text}: {'met' if ok else 'MISSED'}"


def report(out: dict) -> str:
    a = out["args"]
    lines: list[str] = []
    goals: list[str] = []
    if "http" in out:
        res = out["http"]
        eng = med(res.get("engine", []), "req_per_cpu_s")
        lines += cb.table_head(
            f"#### 1. 64 VUs, closed loop, {a['window']:.0f} s measured, "
            f"median of {a['rounds']} rounds",
            "generator | requests per generator CPU-second | engine ÷ it | requests/s "
            "| generator CPU | rounds",
        )
        lines += _generator_rows(
            res, "req_per_cpu_s", "", eng, (("rps", ",.0f"), ("cpu_util", ".0%"))
        )
        lines.append("")
        if "k6" in res:
            k6 = med(res["k6"], "req_per_cpu_s")
            what = f"requests per generator CPU-second: engine {_ratio(eng, k6)} k6's (goal ≥ 2×)"
            goals.append(_goal(what, eng >= 2 * k6))
    if "seed" in out:
        res = out["seed"]
        eng = med(res.get("engine", []), "peak_rss_mb")
        lines += cb.table_head(
            f"#### 2. {a['seed_vus']:,} VUs, seed pattern (GET, think U(0,3) s), "
            f"{a['seed_window']:.0f} s measured, median of {a['rounds']} rounds",
            "generator | peak RSS | engine ÷ it (RSS) | requests/s | requests per CPU-second "
            "| generator CPU | rounds (RSS)",
        )
        cols = (("rps", ",.0f"), ("req_per_cpu_s", ",.0f"), ("cpu_util", ".0%"))
        lines += _generator_rows(res, "peak_rss_mb", " MB", eng, cols)
        lines.append("")
        if "k6" in res and a["seed_vus"] == 10_000:  # the goal is for 10,000
            k6 = med(res["k6"], "peak_rss_mb")
            what = f"memory at {a['seed_vus']:,} VUs: engine {_ratio(eng, k6)} k6's (goal ≤ 0.05×)"
            goals.append(_goal(what, eng <= k6 / 20))
    if "ws" in out:
        res = out["ws"]
        e_rss = med(res.get("engine", []), "peak_rss_mb")
        e_cpu = med(res.get("engine", []), "cpu_total_s")
        e_hold = med(res.get("engine", []), "cpu_hold_s")
        lines += cb.table_head(
            f"#### 3. {a['ws_conns']:,} WebSockets (ramp {WS_RATE:,}/s), heartbeat every 5 s, "
            f"1,000 sending a state update every 5 s, held {a['ws_hold']:.0f} s, median of "
            f"{a['rounds']} rounds",
            "generator | connected | peak RSS | CPU s total (hold) "
            "| engine ÷ it: RSS, CPU total (hold) | heartbeat RTT p50 / p99 | loop lag p99",
        )
        for c, rs in res.items():
            rss, cpu, hold = med(rs, "peak_rss_mb"), med(rs, "cpu_total_s"), med(rs, "cpu_hold_s")
            lines.append(
                f"| {LABEL[c]} | {med(rs, 'connected'):,.0f} | {rss:,.0f} MB | {cpu:.1f} "
                f"({hold:.1f}) | {_ratio(e_rss, rss)}, {_ratio(e_cpu, cpu)} "
                f"({_ratio(e_hold, hold)}) | {med(rs, 'rtt_p50_ms'):.2f} / "
                f"{med(rs, 'rtt_p99_ms'):.1f} ms | {med(rs, 'lag_p99_ms'):.1f} ms |"
            )
        lines.append("")
        if "node" in res and a["ws_conns"] == 10_000:
            n_rss = med(res["node"], "peak_rss_mb")
            n_cpu = med(res["node"], "cpu_total_s")
            n_hold = med(res["node"], "cpu_hold_s")
            what = (
                f"{a['ws_conns']:,} WebSockets: engine {_ratio(e_rss, n_rss)} Node's memory, "
                f"{_ratio(e_cpu, n_cpu)} its CPU ({_ratio(e_hold, n_hold)} in the hold) "
                "(goal ≤ 1×, ≤ 1×)"
            )
            goals.append(_goal(what, e_rss <= n_rss and e_cpu <= n_cpu))
    if goals:
        lines += ["Goals (ratios in this run):", ""] + [f"- {g}" for g in goals] + [""]
    if a["seed_vus"] != 10_000 or a["ws_conns"] != 10_000:
        lines += ["(smaller than the goals' 10,000 VUs and sockets: no verdict on those)", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", default="http,seed,ws", help="comma list of: http, seed, ws")
    ap.add_argument("--http-clients", default="engine,k6,locust,raw")
    ap.add_argument("--seed-clients", default="engine,k6,locust")
    ap.add_argument("--ws-clients", default="engine,node")
    cb.add_size_args(ap, seed_window=12.0)
    ap.add_argument("--raw-rounds", type=int, default=1, help="rounds with the raw client (http)")
    ap.add_argument("--seed-warmup", type=float, default=4.0)
    args = cb.parse_args(ap, "smoke run: 1 round, 1,000 VUs/sockets", quick_seed_window=4.0)
    (HERE.parent / "clients" / "results").mkdir(exist_ok=True)  # the helpers' stderr logs
    # byte-compile the engine as an installed package or the load image has it: without the
    # .pyc files (PYTHONDONTWRITEBYTECODE) every start would compile loadgate's modules anew
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "include"), str(HERE)], check=True
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",")
    began = time.monotonic()
    out: dict = {"args": vars(args), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        with open("/proc/loadavg") as f:
            out["loadavg_before"] = f.read().split()[:3]
    except OSError:
        pass
    try:
        if "http" in only:
            print("1. 64 VUs, closed loop", flush=True)
            clients = args.http_clients.split(",")
            out["http"] = bench_http(
                clients,
                "closed",
                64,
                "closed",
                args.warmup,
                args.window,
                args.rounds,
                run_dir,
                args.raw_rounds,
            )
        if "seed" in only:
            print(f"2. {args.seed_vus:,} VUs, seed pattern", flush=True)
            clients = args.seed_clients.split(",")
            out["seed"] = bench_http(
                clients,
                "seed",
                args.seed_vus,
                "seed",
                args.seed_warmup,
                args.seed_window,
                args.rounds,
                run_dir,
            )
        if "ws" in only:
            print(f"3. {args.ws_conns:,} WebSockets", flush=True)
            clients = args.ws_clients.split(",")
            out["ws"] = bench_ws(
                clients, args.ws_conns, WS_RATE, args.ws_hold, args.rounds, run_dir
            )
    finally:
        cb.COUNTER.unlink(missing_ok=True)
    out["elapsed_s"] = round(time.monotonic() - began, 1)
    path = RESULTS / f"compare-{stamp}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print()
    print(report(out))
    print(
        f"(raw results: {path.relative_to(ROOT)}; engine results: {run_dir.relative_to(ROOT)}; "
        f"{out['elapsed_s']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
