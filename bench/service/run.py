"""Benchmark of the reference SyncBridge service on one core.

    .venv/bin/python bench/service/run.py [--quick] [--out bench/results/service.json]

The service runs pinned to one core (taskset -c 1) at the default KDF cost with its normal
logging; the load clients run in other processes pinned to the other core (taskset -c 0):

1. GET /api/v1/sessions/{id}: closed loop, 64 keep-alive connections (bench/service/httpload.py)
2. POST /api/v1/auth/login at the default KDF cost, 16 connections
3. GET /healthz for reference (the framework's floor: no auth, no storage)
4. 10,000 WebSocket connections opened, authenticated, one heartbeat each, held
   (bench/service/wsload.py); the service's resident memory is read while they are held.

For each HTTP phase: requests/s, latency percentiles, and the service's CPU seconds (from
/proc), so requests per service CPU-second is reported too. Bounded: about 75 s in all
(--quick: about 25 s, 2,000 WebSockets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

from syncbridge.auth import DEFAULT_KDF_COST
from syncbridge.launcher import start_syncbridge

HERE = Path(__file__).resolve().parent
PY = sys.executable
SERVER_CORE = 1
CLIENT_CORE = 0


def _pin(cmd: list[str], core: int) -> list[str]:
    cores = os.sched_getaffinity(0)
    if len(cores) >= 2 and core in cores:
        return ["taskset", "-c", str(core), *cmd]
    return cmd


def _cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def http_phase(name: str, server: psutil.Process, args: list[str], timeout: float) -> dict:
    cmd = _pin([PY, str(HERE / "httpload.py"), *args], CLIENT_CORE)
    cpu0 = _cpu_seconds(server)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    cpu = _cpu_seconds(server) - cpu0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["phase"] = name
    result["server_cpu_s"] = round(cpu, 2)
    result["requests_per_server_cpu_s"] = round(result["requests"] / cpu, 1) if cpu else None
    print(
        f"{name:>12}: {result['requests_per_s']:>9.1f} req/s  "
        f"p50 {result['latency_ms']['p50']} ms  p99 {result['latency_ms']['p99']} ms  "
        f"server CPU {cpu:.1f} s  statuses {result['statuses']}",
        flush=True,
    )
    return result


def ws_phase(server: psutil.Process, url: str, token: str, n: int, hold: float) -> dict:
    rss0 = server.memory_info().rss
    cmd = _pin(
        [
            PY,
            str(HERE / "wsload.py"),
            "--url",
            url,
            "--token",
            token,
            "--connections",
            str(n),
            "--hold",
            str(hold),
        ],
        CLIENT_CORE,
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # {"held": N} once every socket is open
        held = json.loads(first)["held"]
        time.sleep(min(2.0, hold / 2))
        rss = server.memory_info().rss
        gauge = None
        metrics = requests.get(url + "/metrics", timeout=30).text
        for line in metrics.splitlines():
            if line.startswith("syncbridge_websocket_connections "):
                gauge = float(line.split()[1])
        client_rss = psutil.Process(proc.pid).memory_info().rss
        rest = proc.stdout.read()
        proc.wait(hold + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    result = json.loads(rest.strip().splitlines()[-1])
    result.update(
        {
            "phase": "websocket",
            "held": held,
            "server_gauge": gauge,
            "server_rss_idle_mb": round(rss0 / 2**20, 1),
            "server_rss_mb": round(rss / 2**20, 1),
            "server_kb_per_connection": round((rss - rss0) / 1024 / max(held, 1), 1),
            "client_rss_mb": round(client_rss / 2**20, 1),
        }
    )
    print(
        f"{'websocket':>12}: {held} held, server RSS {result['server_rss_mb']} MB "
        f"(idle {result['server_rss_idle_mb']} MB, {result['server_kb_per_connection']} KB/conn), "
        f"ramp {result['ramp_s']} s, heartbeat RTT p50 {result['heartbeat_rtt_ms']['p50']} ms "
        f"p99 {result['heartbeat_rtt_ms']['p99']} ms",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter phases, 2,000 WebSockets")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--kdf-cost", type=int, default=DEFAULT_KDF_COST)
    args = p.parse_args(argv)
    d_get, d_login, d_health, n_ws, hold = (15, 10, 5, 10_000, 6)
    if args.quick:
        d_get, d_login, d_health, n_ws, hold = (5, 4, 3, 2_000, 3)

    results: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "python": platform.python_version(),
            "load_avg_before": os.getloadavg(),
        },
        "service": {"cores": [SERVER_CORE], "kdf_cost": args.kdf_cost, "access_log": True},
        "phases": [],
    }
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp:
        svc = start_syncbridge(
            tmp, kdf_cost=args.kdf_cost, cpu_affinity=[SERVER_CORE], start_timeout=60
        )
        try:
            server = psutil.Process(svc.proc.pid)
            if server.name() == "taskset":  # exec'd into python by now, but be sure
                server = server.children()[0]
            email, password = "bench@example.com", "LoadTest123!"
            reg = requests.post(
                svc.url + "/api/v1/auth/register",
                json={"email": email, "password": password, "name": "bench"},
                timeout=30,
            ).json()
            token = reg["accessToken"]
            auth = f"Authorization: Bearer {token}"
            state = {
                "data": "initial-state-1",
                "cursor": {"line": 120, "column": 8},
                "openFiles": ["a.txt", "b.txt", "c.txt"],
                "timestamp": 1_770_000_000_000,
            }
            requests.post(
                svc.url + "/api/v1/sessions",
                json={"sessionId": "session-1", "state": state},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ).raise_for_status()
            login_body = json.dumps({"email": email, "password": password})
            phases = results["phases"]
            phases.append(
                http_phase(
                    "GET session",
                    server,
                    [
                        "--url",
                        svc.url + "/api/v1/sessions/session-1",
                        "--header",
                        auth,
                        "--connections",
                        "64",
                        "--duration",
                        str(d_get),
                    ],
                    d_get + 60,
                )
            )
            phases.append(
                http_phase(
                    "login",
                    server,
                    [
                        "--url",
                        svc.url + "/api/v1/auth/login",
                        "--method",
                        "POST",
                        "--body",
                        login_body,
                        "--connections",
                        "16",
                        "--duration",
                        str(d_login),
                    ],
                    d_login + 60,
                )
            )
            phases.append(
                http_phase(
                    "healthz",
                    server,
                    [
                        "--url",
                        svc.url + "/healthz",
                        "--connections",
                        "64",
                        "--duration",
                        str(d_health),
                    ],
                    d_health + 60,
                )
            )
            phases.append(ws_phase(server, svc.url, token, n_ws, hold))
            results["service"]["peak_rss_mb"] = round(server.memory_info().rss / 2**20, 1)
        finally:
            results["service"]["exit_code"] = svc.stop()
    results["machine"]["load_avg_after"] = os.getloadavg()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"results: {args.out}")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
