"""``syncbridge serve``: run the reference HarmonyFlow SyncBridge service."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import orjson

from .auth import DEFAULT_KDF_COST
from .config import Config, default_cpu_limit, default_memory_limit
from .faults import FaultError, parse_faults
from .storage import parse_db_url


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncbridge", description="The HarmonyFlow SyncBridge reference service."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the service")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    s.add_argument("--port-file", help="write the bound port to this file once listening")
    s.add_argument("--db", default="sqlite:///syncbridge.db", help="sqlite:///PATH")
    s.add_argument("--release", default="v1", help="release id (build info)")
    s.add_argument(
        "--previous-release",
        default=None,
        help="with an empty release history, record this release as the one before --release"
        " (what POST /admin/rollback restores)",
    )
    s.add_argument("--faults", default=None, help='fault set as JSON, e.g. {"error_rate": 0.1}')
    s.add_argument(
        "--admin-token-file",
        default=None,
        help="file holding the bearer token of /admin (else env SYNCBRIDGE_ADMIN_TOKEN;"
        " neither: the admin API is disabled)",
    )
    s.add_argument(
        "--admin-token",
        default=None,
        help="refused: a token on the command line shows in ps; use SYNCBRIDGE_ADMIN_TOKEN or"
        " --admin-token-file",
    )
    s.add_argument("--log-file", default=None, help="JSON-lines log file (default: stdout)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.add_argument(
        "--no-access-log", action="store_true", help="do not log every request (info level)"
    )
    s.add_argument(
        "--kdf-cost",
        type=int,
        default=DEFAULT_KDF_COST,
        help=f"scrypt cost as log2(N), r=8, p=1 (default {DEFAULT_KDF_COST})",
    )
    s.add_argument("--token-ttl", type=_positive_float, default=900.0, help="access token TTL, s")
    s.add_argument(
        "--refresh-ttl", type=_positive_float, default=7 * 86400.0, help="refresh token TTL, s"
    )
    s.add_argument("--pool-size", type=_positive_int, default=8, help="storage connections")
    s.add_argument(
        "--pool-timeout", type=_positive_float, default=5.0, help="max wait for a connection, s"
    )
    s.add_argument(
        "--memory-limit-mb",
        type=_positive_float,
        default=None,
        help="memory limit, like a container's (default: the machine's memory); resident"
        " memory above it kills the process like an OOM kill (exit 137)",
    )
    s.add_argument(
        "--cpu-limit-cores",
        type=_positive_float,
        default=None,
        help="CPU limit in cores (default: the CPUs this process may run on)",
    )
    s.add_argument(
        "--max-body-bytes", type=_positive_int, default=1024 * 1024, help="request body limit"
    )
    s.add_argument(
        "--shutdown-timeout", type=_positive_float, default=10.0, help="graceful shutdown, s"
    )
    return parser


def admin_token(args: argparse.Namespace) -> str | None:
    """The admin API's bearer token: from ``--admin-token-file`` or ``SYNCBRIDGE_ADMIN_TOKEN``,
    never from the command line (any user of the machine sees it in ``ps``)."""
    if args.admin_token is not None:
        raise SystemExit(
            "syncbridge: --admin-token is refused: a token on the command line shows in ps;"
            " give it in the environment (SYNCBRIDGE_ADMIN_TOKEN) or a file (--admin-token-file)"
        )
    if args.admin_token_file:
        try:
            with open(args.admin_token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise SystemExit(f"syncbridge: --admin-token-file: {exc.strerror}") from None
        if not token:
            raise SystemExit(f"syncbridge: --admin-token-file {args.admin_token_file} is empty")
        return token
    return os.environ.get("SYNCBRIDGE_ADMIN_TOKEN") or None


def config_from_args(args: argparse.Namespace) -> Config:
    faults = parse_faults({})
    if args.faults:
        try:
            faults = parse_faults(orjson.loads(args.faults))
        except orjson.JSONDecodeError as exc:
            raise SystemExit(f"syncbridge: --faults is not valid JSON: {exc}") from None
        except FaultError as exc:
            raise SystemExit(f"syncbridge: --faults: {exc}") from None
    if not 1 <= args.kdf_cost <= 20:
        raise SystemExit("syncbridge: --kdf-cost must be between 1 and 20")
    try:
        db_path = parse_db_url(args.db)
    except ValueError as exc:
        raise SystemExit(f"syncbridge: --db: {exc}") from None
    return Config(
        db_path=db_path,
        host=args.host,
        port=args.port,
        port_file=args.port_file,
        release=args.release,
        previous_release=args.previous_release,
        faults=faults,
        admin_token=admin_token(args),
        log_file=args.log_file,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        kdf_cost=args.kdf_cost,
        token_ttl=args.token_ttl,
        refresh_ttl=args.refresh_ttl,
        pool_size=args.pool_size,
        pool_timeout=args.pool_timeout,
        memory_limit_bytes=int(args.memory_limit_mb * 1024 * 1024)
        if args.memory_limit_mb
        else default_memory_limit(),
        cpu_limit_cores=args.cpu_limit_cores or default_cpu_limit(),
        max_body_bytes=args.max_body_bytes,
        shutdown_timeout=args.shutdown_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        config = config_from_args(args)
        import uvloop

        from .app import run_server

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(run_server(config))
    return 2


if __name__ == "__main__":
    sys.exit(main())
