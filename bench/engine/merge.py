"""Merge benchmark: 20 shards × 45 minutes of one-second windows, merged and summarized.

Generates realistic shard results (the seed's API mix at 2,800 requests/s split over the
shards: five request names, a few 4xx/5xx, checks, VU gauges, the generator's loop-lag
histogram, seven system samples; histograms recorded from log-normal latencies and encoded
exactly as the engine encodes them), then times ``load_merged`` + ``summarize`` — what
``loadgate summarize DIR`` does — and checks the merged counts against what was generated.

    .venv/bin/python bench/engine/merge.py [--shards 20] [--minutes 45] [--workers N] [--keep]

Prints one JSON line with the figures. Generation reuses 240 distinct windows per shard (the
encoding is what is slow, not the merge); every window is still read and decoded by the merge.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from loadgate.engine.merge import load_merged
from loadgate.engine.results import FORMAT, META, WINDOWS
from loadgate.engine.window import Recorder, window_record
from loadgate.runner.summary import summarize

NAMES = [
    ("POST", "/api/v1/auth/login", 0.20, 201),
    ("GET", "/api/v1/sessions/{id}", 0.40, 200),
    ("POST", "/api/v1/sessions/{id}/snapshot", 0.15, 201),
    ("GET", "/api/v1/sessions/{id}/devices", 0.15, 200),
    ("POST", "/api/v1/auth/refresh", 0.10, 200),
]
DISTINCT = 240
SYSTEM = (
    "up",
    "cpu_utilization",
    "memory_utilization",
    "pod_restarts",
    "db_connection_errors",
    "db_connection_utilization",
    "ws_server_connections",
)


def make_window(rng: random.Random, t: int, rps: float, vus: int) -> tuple[dict, int]:
    rec = Recorder(t)
    n = 0
    for method, name, share, status in NAMES:
        for _ in range(int(rps * share + rng.random())):
            roll = rng.random()
            code = status if roll > 0.004 else (503 if roll < 0.002 else 404)
            rec.http("api_mix", method, name, code, rng.lognormvariate(-1.9, 0.6), code >= 400)
            rec.check("api_mix", f"{name} status", code < 400)
            n += 1
    for _ in range(20):
        rec.loop_lag(rng.expovariate(1 / 0.002))
    for _ in range(vus):
        rec.vu_started("api_mix")
    win = rec.roll(t + 1)
    sys_values = {k: round(rng.random(), 4) for k in SYSTEM}
    gen = {"cpu": round(rng.uniform(0.2, 0.6), 3), "rss_mb": 80.0, "saturated": False}
    return window_record(win, at=0.0, gen=gen, sys=sys_values), n


def generate(root: Path, shards: int, seconds: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    rps = 2800 / shards
    t0 = 1_800_000_000
    total = 0
    pool = [make_window(rng, t0, rps, 2000 // shards * 5) for _ in range(DISTINCT)]
    for s in range(shards):
        out = root / f"shard-{s}"
        out.mkdir(parents=True)
        meta = {
            "format": FORMAT,
            "stage": "api",
            "plan": {"name": "bench"},
            "shard": {"index": s, "count": shards},
            "started_at": float(t0),
            "ended_at": float(t0 + seconds),
            "status": "completed",
            "aborted": None,
            "generator": {"limits": {"loop_lag_ms": 200, "cpu": 0.9, "max_fraction": 0.05}},
        }
        (out / META).write_bytes(orjson.dumps(meta))
        with open(out / WINDOWS, "wb") as fh:
            for i in range(seconds):
                rec, n = pool[(i * 7 + s * 13) % DISTINCT]
                rec["t"], rec["at"] = t0 + i, float(i + 1)
                fh.write(orjson.dumps(rec) + b"\n")
                total += n
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=45)
    ap.add_argument("--dir", help="where to generate (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the generated results")
    ap.add_argument("--workers", type=int, help="merge processes (default: as summarize does)")
    args = ap.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lg-merge-"))
    seconds = int(args.minutes * 60)
    try:
        t = time.perf_counter()
        expected = generate(root, args.shards, seconds)
        gen_s = time.perf_counter() - t
        size = sum(p.stat().st_size for p in root.rglob(WINDOWS))
        t = time.perf_counter()
        merged = load_merged([root], workers=args.workers)
        merge_s = time.perf_counter() - t
        summary = summarize(merged)
        total_s = time.perf_counter() - t
        assert summary["requests"] == expected, (summary["requests"], expected)
        print(
            json.dumps(
                {
                    "shards": args.shards,
                    "workers": args.workers or "auto",
                    "windows": args.shards * seconds,
                    "requests": summary["requests"],
                    "windows_mb": round(size / 1e6, 1),
                    "generate_s": round(gen_s, 2),
                    "read_and_merge_s": round(merge_s, 2),
                    "merge_and_summarize_s": round(total_s, 2),
                    "p95_ms": summary["p95_ms"],
                }
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
