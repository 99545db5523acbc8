"""Comparison benchmark: a stage of 20 shards × 45 minutes compared with its baseline's.

Generates two stages of real shard results (``meta.json`` + ``windows.jsonl``, records made by
the engine's ``Recorder`` → ``window_record``): the seed's API mix at 2,800 requests/s split over
the shards, five request names, a few 4xx/5xx, log-normal latencies around 150 ms. The current
release answers ``/api/v1/sessions/{id}`` 40% slower. Then times, in order:

1. ``load_merged`` of each stage, plain (the merge the gate does anyway: the reference), and
   ``load_merged(..., digest=True)``, the merge that also folds the stage's per-second digest in
   the same pass over the windows (what the gate does), alternately, ``--repeat`` times each
   (the fastest of each is kept);
2. ``to_dict`` + JSON of each stage's digest (the gate stores its stage's) and reading the
   baseline's back (``from_dict``): a later run reads its baseline's seconds from it;
3. ``compare`` of the current digest with the baseline's read back (B = 1,000 resamples of both
   sides);
4. for reference, ``digest_paths`` of the baseline (a digest read from the windows
   alone: a baseline with no stored digest).

"On top of the merge" is what the gate adds to the merge of its stage: (merge with digest −
merge) of the current stage + storing its digest + reading the baseline's + 3.

    .venv/bin/python bench/verdict/compare_bench.py [--shards 20] [--minutes 45] [--workers N]

Prints the comparisons found and one JSON line with the figures, wall-clock times, with the
machine's load average before and after. To keep generation short each shard reuses 240
distinct windows per stage (encoding is what is slow); every window is still read and decoded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from loadgate.engine.merge import MergedStage, digest_paths, load_merged
from loadgate.engine.results import FORMAT, META, WINDOWS
from loadgate.engine.window import Recorder, window_record
from loadgate.verdict.compare import CompareSettings, Outcome, SecondsDigest, compare

NAMES = [
    ("POST", "/api/v1/auth/login", 0.20, 201),
    ("GET", "/api/v1/sessions/{id}", 0.40, 200),
    ("POST", "/api/v1/sessions/{id}/snapshot", 0.15, 201),
    ("GET", "/api/v1/sessions/{id}/devices", 0.15, 200),
    ("POST", "/api/v1/auth/refresh", 0.10, 200),
]
SLOWER = "/api/v1/sessions/{id}"
DISTINCT = 240


def make_window(rng: random.Random, t: int, rps: float, slower: float) -> tuple[dict, int]:
    rec = Recorder(t)
    n = 0
    for method, name, share, status in NAMES:
        factor = slower if name == SLOWER else 1.0
        for _ in range(int(rps * share + rng.random())):
            roll = rng.random()
            code = status if roll > 0.004 else (503 if roll < 0.002 else 404)
            latency = rng.lognormvariate(-1.9, 0.6) * factor
            rec.http("api_mix", method, name, code, latency, code >= 400)
            n += 1
    for _ in range(100 // 5):
        rec.vu_started("api_mix")
    win = rec.roll(t + 1)
    gen = {"cpu": round(rng.uniform(0.2, 0.6), 3), "rss_mb": 80.0, "saturated": False}
    return window_record(win, at=0.0, gen=gen, sys={"cpu_utilization": 0.5}), n


def generate(root: Path, shards: int, seconds: int, seed: int, slower: float) -> int:
    rng = random.Random(seed)
    rps = 2800 / shards
    t0 = 1_800_000_000 + seed * 100_000
    total = 0
    pool = [make_window(rng, t0, rps, slower) for _ in range(DISTINCT)]
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
                rec, n = pool[rng.randrange(DISTINCT)]
                rec["t"], rec["at"] = t0 + i, float(i + 1)
                fh.write(orjson.dumps(rec) + b"\n")
                total += n
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=45)
    ap.add_argument("--workers", type=int, help="merge processes (default: as the merge picks)")
    ap.add_argument("--repeat", type=int, default=2, help="merges of each kind (fastest kept)")
    ap.add_argument("--dir", help="where to generate (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the generated results")
    args = ap.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lg-compare-"))
    seconds = int(args.minutes * 60)
    figures: dict[str, object] = {"shards": args.shards, "seconds": seconds}
    try:
        t = time.perf_counter()
        generate(root / "baseline", args.shards, seconds, seed=1, slower=1.0)
        generate(root / "current", args.shards, seconds, seed=2, slower=1.4)
        figures["generate_s"] = round(time.perf_counter() - t, 2)

        merge_s: dict[str, float] = {}
        merged: dict[str, MergedStage] = {}
        load_before = os.getloadavg()
        for _ in range(args.repeat):
            for stage in ("baseline", "current"):
                for digest in (False, True):
                    t = time.perf_counter()
                    got = load_merged([root / stage], workers=args.workers, digest=digest)
                    took = time.perf_counter() - t
                    key = f"{stage}{'+digest' if digest else ''}"
                    merge_s[key] = min(merge_s.get(key, took), took)
                    if digest:
                        merged[stage] = got
        base, cur = merged["baseline"].digest, merged["current"].digest
        assert base is not None and cur is not None

        t = time.perf_counter()
        stored = orjson.dumps(base.to_dict())
        store_base_s = time.perf_counter() - t
        t = time.perf_counter()
        orjson.dumps(cur.to_dict())
        store_s = time.perf_counter() - t
        t = time.perf_counter()
        base_again = SecondsDigest.from_dict(orjson.loads(stored))
        load_s = time.perf_counter() - t

        t = time.perf_counter()
        results = compare(cur, base_again, CompareSettings(), baseline_label="baseline")
        compare_s = time.perf_counter() - t

        t = time.perf_counter()
        digest_paths([root / "baseline"], args.workers)
        from_dirs_s = time.perf_counter() - t
        for r in results:
            print(f"{r.outcome.value:14} {r.describe()}")
        found = [r.describe() for r in results if r.outcome is Outcome.REGRESSION]
        added = merge_s["current+digest"] - merge_s["current"]
        figures |= {
            "merge_baseline_s": round(merge_s["baseline"], 2),
            "merge_with_digest_baseline_s": round(merge_s["baseline+digest"], 2),
            "merge_current_s": round(merge_s["current"], 2),
            "merge_with_digest_current_s": round(merge_s["current+digest"], 2),
            "digest_in_merge_current_s": round(added, 2),
            "stored_digest_mb": round(len(stored) / 1e6, 1),
            "store_digest_s": round(store_s, 2),
            "store_digest_baseline_s": round(store_base_s, 2),
            "load_digest_s": round(load_s, 2),
            "compare_s": round(compare_s, 2),
            "on_top_of_merge_s": round(added + store_s + load_s + compare_s, 2),
            "digest_from_dirs_baseline_s": round(from_dirs_s, 2),
            "workers": args.workers,
            "repeat": args.repeat,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "regressions": found,
        }
        print(json.dumps(figures))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
