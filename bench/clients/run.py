"""Protocol-client benchmark: loadgate's HttpConnection / WebSocket against their peers.

    .venv/bin/python bench/clients/run.py            # everything, ~6 minutes
    .venv/bin/python bench/clients/run.py --only http --rounds 3
    .venv/bin/python bench/clients/run.py --quick    # small smoke run (~1 minute)

Side by side in one run, generator pinned to core 0 and the target to core 1 (``taskset``):

1. ``http``: requests per generator CPU-second, 64 VUs in a closed loop (``--window`` s
   measured after a warm-up): ours vs aiohttp ClientSession (uvloop) vs Locust FastHttpUser
   vs k6, interleaved over ``--rounds`` rounds, medians reported.
2. ``seed``: 10,000 VUs of the seed's API pattern (one GET, then sleep uniform 0–3 s): peak
   RSS and requests per CPU-second: ours vs aiohttp vs k6 vs Locust.
3. ``ws``: 10,000 WebSockets (target in its own process), heartbeat every 5 s, 1,000 of them
   sending a state update every 5 s, held ``--ws-hold`` s: peak RSS, CPU seconds, heartbeat
   RTT p50/p99 and event-loop lag: ours vs Node ``ws`` vs aiohttp vs picows.

Throughput is read from the target's own counter (the same for every client); CPU from
``/proc/PID/stat`` (utime+stime, the generator's process tree); peak RSS from
``/proc/PID/status`` VmHWM read just before the generator is stopped. A peer that is not
installed is skipped with a message; ``bench/clients/setup_peers.sh`` installs them (outside
the project's environment: they are never dependencies of loadgate). Results are printed as
Markdown and saved under ``bench/clients/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")
PEERS = HERE / ".peers" / "bin"
CLK = os.sysconf("SC_CLK_TCK")
GEN_CORE, TARGET_CORE = "0", "1"


# --- process helpers ----------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """pid and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK


def peak_rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Proc:
    """A child process pinned to a core, its stdout read line by line in a thread."""

    def __init__(self, name: str, cmd: list[str], core: str, env: dict | None = None) -> None:
        self.name = name
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.all: list[str] = []
        log = open(HERE / "results" / f"{name}.stderr.log", "w")  # noqa: SIM115
        self.p = subprocess.Popen(
            ["taskset", "-c", core, *cmd],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=HERE,
            env={**os.environ, **(env or {})},
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.all.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, prefix: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            if line.startswith(prefix):
                return line
        return None

    @property
    def pid(self) -> int:
        return self.p.pid

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)

    def last_json(self) -> dict | None:
        time.sleep(0.2)
        for line in reversed(self.all):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    return None
        return None


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


COUNTER = Path("/dev/shm" if os.path.isdir("/dev/shm") else "/tmp") / f"lg-bench-{os.getpid()}"


def served() -> int:
    """Requests served so far by the HTTP target (its mmap'd counter)."""
    with open(COUNTER, "rb") as f:
        return struct.unpack("=Q", f.read(8))[0]


def start_target(kind: str) -> tuple[Proc, int]:
    if kind == "http":
        cmd = [PY, "target_http.py", "--counter", str(COUNTER)]
    else:
        cmd = [PY, "target_ws.py"]
    t = Proc(f"target_{kind}", cmd, TARGET_CORE)
    line = t.wait_line("READY", 20)
    if line is None:
        t.stop()
        raise SystemExit(f"target {kind} did not start; see results/target_{kind}.stderr.log")
    return t, int(line.split()[1])


# --- peers --------------------------------------------------------------------------------


def find_exe(name: str) -> str | None:
    local = PEERS / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def http_cmd(client: str, url: str, vus: int, pattern: str) -> tuple[list[str], dict, int] | None:
    """(command, extra env, stop signal) for a generator, or None when not installed."""
    if client in ("ours", "aiohttp"):
        cmd = [PY, "gen_http.py", "--client", client, "--url", url, "--vus", str(vus)]
        return [*cmd, "--pattern", pattern, "--max-seconds", "300"], {}, signal.SIGTERM
    if client == "locust":
        exe = find_exe("locust")
        if exe is None:
            return None
        cmd = [exe, "-f", "locustfile.py", "--headless", "-u", str(vus), "-r", str(vus)]
        cmd += ["-t", "300s", "--host", url, "--only-summary", "--loglevel", "WARNING"]
        return cmd, {"LG_PATTERN": pattern}, signal.SIGINT
    if client == "k6":
        exe = find_exe("k6")
        if exe is None:
            return None
        cmd = [exe, "run", "--quiet", "--vus", str(vus), "--duration", "300s", "k6_script.js"]
        env = {"BASE_URL": url, "LG_PATTERN": pattern, "K6_NO_USAGE_REPORT": "true"}
        return cmd, env, signal.SIGINT
    raise ValueError(client)


def bench_http(
    clients: list[str], vus: int, pattern: str, warmup: float, window: float, rounds: int
) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {c: [] for c in clients}
    for rnd in range(rounds):
        order = clients[rnd % len(clients) :] + clients[: rnd % len(clients)]
        for client in order:
            target, port = start_target("http")
            url = f"http://127.0.0.1:{port}"
            try:
                spec = http_cmd(client, url, vus, pattern)
                if spec is None:
                    print(f"  [{client}] not installed: skipped (bench/clients/setup_peers.sh)")
                    results.pop(client, None)
                    continue
                cmd, env, sig = spec
                res = measure_http(client, cmd, env, sig, url, warmup, window)
                print(f"  [{pattern} {vus} VUs round {rnd + 1}] {client}: {fmt(res)}", flush=True)
                results[client].append(res)
            finally:
                target.stop()
        clients = [c for c in clients if c in results]
    return results


def measure_http(
    client: str, cmd: list[str], env: dict, sig: int, url: str, warmup: float, window: float
) -> dict:
    gen = Proc(f"gen_{client}", cmd, GEN_CORE, env)
    t_start = time.monotonic()
    count = served
    try:
        # wait for traffic (k6 initialises 10,000 VUs for a while), then warm up
        while count() < 100:
            if time.monotonic() - t_start > 180 or gen.p.poll() is not None:
                return {"error": "no traffic (see results/*.stderr.log)"}
            time.sleep(0.2)
        startup_s = time.monotonic() - t_start
        time.sleep(warmup)
        c0, n0, t0 = cpu_seconds(gen.pid), count(), time.monotonic()
        time.sleep(window)
        c1, n1, t1 = cpu_seconds(gen.pid), count(), time.monotonic()
        rss = peak_rss_mb(gen.pid)
    finally:
        gen.stop(sig)
    own = gen.last_json() or {}
    dn, dc, dt = n1 - n0, c1 - c0, t1 - t0
    errors = sum(v for k, v in own.items() if k.startswith("err_") or k == "bad_status")
    return {
        "requests": dn,
        "rps": dn / dt,
        "cpu_s": dc,
        "cpu_util": dc / dt,
        "req_per_cpu_s": dn / dc if dc > 0 else float("nan"),
        "peak_rss_mb": rss,
        "startup_s": startup_s,
        "errors": errors if own else None,
        "p50_ms": own.get("p50_ms"),
        "p99_ms": own.get("p99_ms"),
    }


def fmt(res: dict) -> str:
    if "error" in res:
        return res["error"]
    return (
        f"{res['req_per_cpu_s']:,.0f} req/CPU-s, {res['rps']:,.0f} req/s, "
        f"CPU {res['cpu_util']:.0%}, peak RSS {res['peak_rss_mb']:,.0f} MB"
        + (f", errors {res['errors']}" if res.get("errors") is not None else "")
    )


# --- WebSocket ----------------------------------------------------------------------------


def ws_cmd(client: str, url: str, conns: int, rate: int, hold: float) -> list[str] | None:
    if client in ("ours", "aiohttp"):
        return [PY, "gen_ws.py", "--client", client, "--url", url, "--conns", str(conns),
                "--rate", str(rate), "--hold", str(hold)]  # fmt: skip
    if client == "picows":
        py = PEERS / "python"
        ok = (
            py.exists()
            and subprocess.run(
                [str(py), "-c", "import picows, uvloop, orjson"], capture_output=True
            ).returncode
            == 0
        )
        if not ok:
            return None
        return [str(py), "gen_ws_picows.py", "--url", url, "--conns", str(conns),
                "--rate", str(rate), "--hold", str(hold)]  # fmt: skip
    if client == "node":
        node = shutil.which("node")
        if node is None or not (HERE / "node_modules" / "ws").is_dir():
            return None
        return [node, "gen_ws.js", url, str(conns), str(rate), str(hold)]
    raise ValueError(client)


def bench_ws(clients: list[str], conns: int, rate: int, hold: float) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for client in clients:
        target, port = start_target("ws")
        url = f"ws://127.0.0.1:{port}/ws"
        try:
            cmd = ws_cmd(client, url, conns, rate, hold)
            if cmd is None:
                print(f"  [{client}] not installed: skipped (bench/clients/setup_peers.sh)")
                continue
            gen = Proc(f"ws_{client}", cmd, GEN_CORE)
            try:
                ready = gen.wait_line("READY", conns / rate * 3 + 60)
                if ready is None:
                    results[client] = {"error": "ramp did not finish"}
                    continue
                cpu_ready = cpu_seconds(gen.pid)
                out = gen.wait_line("{", hold + 60)
                cpu_end = cpu_seconds(gen.pid)
                rss = peak_rss_mb(gen.pid)
                try:
                    server = json.loads(http_get(f"http://127.0.0.1:{port}/__stats"))
                except (OSError, ValueError):
                    server = {"peak": None}
            finally:
                gen.stop()
            res = json.loads(out) if out else {"error": "no result"}
            res.update(
                cpu_total_s=cpu_end,
                cpu_hold_s=cpu_end - cpu_ready,
                peak_rss_mb=rss,
                server_peak_conns=server["peak"],
                server_rss_mb=peak_rss_mb(target.pid),
            )
            results[client] = res
            print(
                f"  [ws] {client}: {res.get('connected')} conns ({res.get('failed')} failed), "
                f"peak RSS {rss:,.0f} MB, CPU {cpu_end:.1f} s (hold {cpu_end - cpu_ready:.1f} s), "
                f"RTT p50 {res.get('rtt_p50_ms')} / p99 {res.get('rtt_p99_ms')} ms, "
                f"lag p99 {res.get('lag_p99_ms')} ms",
                flush=True,
            )
        finally:
            target.stop()
    return results


# --- report (the Markdown helpers are shared with bench/engine/compare.py) -------------------


def table_head(title: str, columns: str) -> list[str]:
    """A report section's title, then the head of its Markdown table (``columns``: the
    column names separated by " | ")."""
    return [title, "", f"| {columns} |", "|" + "---|" * len(columns.split(" | "))]


def table_row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def median(rs: list[dict], key: str) -> float:
    vals = [r[key] for r in rs if key in r and r[key] is not None]
    return statistics.median(vals) if vals else float("nan")


def report(out: dict) -> str:
    lines: list[str] = []
    if "http" in out:
        res = out["http"]
        ours = median(res.get("ours", []), "req_per_cpu_s")
        lines += table_head(
            f"#### 1. HTTP closed loop, 64 VUs, {out['args']['window']:.0f} s measured, "
            f"median of {out['args']['rounds']} rounds",
            "client | requests per client CPU-second | ours ÷ it | requests/s | client CPU",
        )
        for c, rs in res.items():
            v = median(rs, "req_per_cpu_s")
            lines.append(
                f"| {LABEL[c]} | {v:,.0f} | {ours / v:.2f}× | {median(rs, 'rps'):,.0f} | "
                f"{median(rs, 'cpu_util'):.0%} |"
            )
        lines.append("")
    if "seed" in out:
        res = out["seed"]
        o = res.get("ours", [{}])[0]
        lines += table_head(
            f"#### 2. {out['args']['seed_vus']:,} VUs, seed pattern (GET, sleep U(0,3) s), "
            f"{out['args']['seed_window']:.0f} s measured",
            "client | peak RSS | ours ÷ it (RSS) | requests/s | requests per CPU-second "
            "| client CPU",
        )
        for c, rs in res.items():
            r = rs[0]
            if "error" in r:
                lines.append(f"| {LABEL[c]} | {r['error']} | | | | |")
                continue
            lines.append(
                f"| {LABEL[c]} | {r['peak_rss_mb']:,.0f} MB | "
                f"{o.get('peak_rss_mb', float('nan')) / r['peak_rss_mb']:.3f} | "
                f"{r['rps']:,.0f} | {r['req_per_cpu_s']:,.0f} | {r['cpu_util']:.0%} |"
            )
        lines.append("")
    if "ws" in out:
        res = out["ws"]
        o = res.get("ours", {})
        a = out["args"]
        lines += table_head(
            f"#### 3. {a['ws_conns']:,} WebSockets (ramp {a['ws_rate']}/s), heartbeat every 5 s, "
            f"1,000 sending a state update every 5 s, held {a['ws_hold']:.0f} s",
            "client | connected | peak RSS | CPU s total (hold) | ours ÷ it: RSS, CPU "
            "| heartbeat RTT p50 / p99 | loop lag p99",
        )
        for c, r in res.items():
            if "error" in r:
                lines.append(f"| {LABEL[c]} | {r['error']} | | | | | |")
                continue
            lines.append(
                f"| {LABEL[c]} | {r['connected']:,} ({r['failed']} failed) | "
                f"{r['peak_rss_mb']:,.0f} MB | {r['cpu_total_s']:.1f} ({r['cpu_hold_s']:.1f}) | "
                f"{o.get('peak_rss_mb', float('nan')) / r['peak_rss_mb']:.2f}, "
                f"{o.get('cpu_total_s', float('nan')) / r['cpu_total_s']:.2f} | "
                f"{r['rtt_p50_ms']} / {r['rtt_p99_ms']} ms | {r['lag_p99_ms']} ms |"
            )
        lines.append("")
    return "\n".join(lines)


LABEL = {
    "ours": "loadgate HttpConnection / WebSocket (uvloop)",
    "aiohttp": "aiohttp 3 client (uvloop)",
    "locust": "Locust FastHttpUser",
    "k6": "k6",
    "node": "Node + `ws`",
    "picows": "picows (2 KiB read buffer, uvloop)",
}


# --- command line (shared with bench/engine/compare.py) ------------------------------------


def add_size_args(ap: argparse.ArgumentParser, seed_window: float) -> None:
    """The sizes of a run: rounds, the HTTP windows, the seed VUs and the WebSocket hold."""
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--seed-vus", type=int, default=10_000)
    ap.add_argument("--seed-window", type=float, default=seed_window)
    ap.add_argument("--ws-conns", type=int, default=10_000)
    ap.add_argument("--ws-hold", type=float, default=30.0)


def parse_args(
    ap: argparse.ArgumentParser, quick_help: str, quick_seed_window: float
) -> argparse.Namespace:
    """Parse with ``--quick`` (a smoke run: one round, 1,000 VUs and sockets, short windows),
    then check the machine: ``taskset`` and two cores."""
    ap.add_argument("--quick", action="store_true", help=quick_help)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.window, args.seed_vus = 1, 3.0, 1000
        args.seed_window, args.ws_conns, args.ws_hold = quick_seed_window, 1000, 10.0
    if not shutil.which("taskset"):
        raise SystemExit("taskset is required (util-linux)")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores: generator on core 0, target on core 1")
    return args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", default="http,seed,ws", help="comma list of: http, seed, ws")
    ap.add_argument("--clients", default="ours,aiohttp,locust,k6,node,picows")
    add_size_args(ap, seed_window=15.0)
    ap.add_argument("--ws-rate", type=int, default=1000)
    args = parse_args(ap, "small smoke run", quick_seed_window=5.0)
    (HERE / "results").mkdir(exist_ok=True)
    only = args.only.split(",")
    clients = args.clients.split(",")
    out: dict = {"args": vars(args), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if "http" in only:
        print("1. HTTP closed loop, 64 VUs", flush=True)
        http_clients = [c for c in clients if c in ("ours", "aiohttp", "locust", "k6")]
        out["http"] = bench_http(http_clients, 64, "closed", args.warmup, args.window, args.rounds)
    if "seed" in only:
        print(f"2. {args.seed_vus} VUs, seed pattern", flush=True)
        seed_clients = [c for c in clients if c in ("ours", "aiohttp", "k6", "locust")]
        out["seed"] = bench_http(seed_clients, args.seed_vus, "seed", 5.0, args.seed_window, 1)
    if "ws" in only:
        print(f"3. {args.ws_conns} WebSockets", flush=True)
        ws_clients = [c for c in clients if c in ("ours", "node", "aiohttp", "picows")]
        out["ws"] = bench_ws(ws_clients, args.ws_conns, args.ws_rate, args.ws_hold)
    path = HERE / "results" / f"clients-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    COUNTER.unlink(missing_ok=True)
    print()
    print(report(out))
    print(f"(raw results: {path.relative_to(ROOT)})")


if __name__ == "__main__":
    sys.exit(main())
