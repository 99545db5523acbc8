"""The ``loadgate`` command.

    loadgate run-stage --plan PLAN --stage NAME --target URL --out DIR|URL
                       [--shard I/N] [--scale S] [--time-scale T] [--users FILE|URL]
                       [--run-id ID] [--metrics-url URL | --prometheus-url URL]
                       [--abort-dir DIR|URL] [--allow ENTRY ...] [--term-grace S]
                       [--upload-every S] [--dry-run]
    loadgate summarize DIR|URL [DIR|URL ...] [--json] [--plan PLAN]
    loadgate seed --target URL --count N --out FILE|URL [--concurrency C] [--allow ENTRY ...]
    loadgate history KEY [--root ROOT] [--limit N] [--json] [--pin RUN_ID | --unpin]
    loadgate gate --target URL [--release R] [--url AIRFLOW_URL] [--dag-id ID] [--profile P]
                  [--scale S] [--time-scale T] [--stages a,b] [--dry-run] [--unpause]
                  [--investigate fail|pass] [--timeout S] [--poll S] [--cancel-marks-failed]

``loadgate gate`` (``loadgate.client``) triggers the release gate through Airflow's REST API and
waits for its verdict; its exit codes are its own (``loadgate gate --help``).

Every DIR or FILE may be an object-store URL (``s3://bucket/prefix/…``); credentials come from
the environment the standard boto way (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL) or the machine's role, never from
the command line.

Exit codes (run-stage; summarize uses 0 and 2):

    0    completed
    2    engine or input error: bad plan, arguments, users file, target not allowed, results
         unreadable; for run-stage nothing was sent when the error is in the input
    3    aborted by a criterion (this shard's rollback criterion, or another shard's abort
         marker); results are written
    130  interrupted (SIGINT), results written
    143  terminated (SIGTERM): VUs were asked to finish their iteration within --term-grace
         seconds, then cancelled; results written
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from loadgate.engine.exitcodes import EXIT_ABORTED, EXIT_ERROR
from loadgate.storage import as_path

EXIT_CODES_HELP = """exit codes:
  0    completed
  2    engine or input error (bad plan, arguments, users file, target); nothing sent
  3    aborted by a criterion (own rollback criterion or another shard's abort marker)
  130  interrupted by SIGINT, results written
  143  terminated by SIGTERM after a graceful stop (--term-grace), results written
"""

RUN_STAGE_EPILOG = (
    EXIT_CODES_HELP
    + """
results (--out DIR): meta.json (rewritten at the end) and windows.jsonl (one line a second).
--out s3://bucket/prefix/shard-0: the same written to a local scratch folder
($LOADGATE_RESULTS_DIR or the system's temporary folder) and shipped by a background thread:
meta.json at the start and the end, the windows as segments windows/000001.jsonl, … every
--upload-every seconds (a killed generator loses at most those) and a last one at the end.
--time-scale T multiplies durations, start offsets and graceful stops only: think times,
intervals and arrival rates stay the plan's, so the request rate follows the VUs (a shorter run
sends fewer requests, never faster ones). The abort marker is DIR/../ABORT unless --abort-dir
is given (on S3 created by a conditional PUT: the first abort wins); every shard looks for it
once a second.
AWS credentials for s3:// come from the environment (AWS_ACCESS_KEY_ID, …, AWS_ENDPOINT_URL).
"""
)

Command = Callable[[argparse.Namespace], int]


def _err(message: str) -> int:
    print(f"loadgate: error: {message}", file=sys.stderr)
    return EXIT_ERROR


# Bounds of the numeric options: argparse refuses anything else before a file is created or a
# request sent. A plan's own numbers (VUs, rates, durations) are checked by the plan's model.
MAX_SECONDS = 3600.0  # --term-grace, --request-timeout, --upload-every
MAX_SEED_USERS = 1_000_000
MAX_SEED_CONCURRENCY = 10_000
MAX_HISTORY_LIMIT = 1_000_000


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _seconds(*, zero: bool) -> Callable[[str], float]:
    """Seconds from 0 (``zero``) or just above it to MAX_SECONDS."""

    def parse(text: str) -> float:
        value = _finite(text)
        if value < 0 or (value == 0 and not zero) or value > MAX_SECONDS:
            low = "0" if zero else "more than 0"
            raise argparse.ArgumentTypeError(
                f"must be {low} to {MAX_SECONDS:g} seconds, got {text}"
            )
        return value

    return parse


def _whole(low: int, high: int) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be a whole number from {low} to {high:,}, got {text}"
            )
        return value

    return parse


def _shard(text: str) -> Any:
    from loadgate.engine.shard import Shard

    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _metrics_source(args: argparse.Namespace, plan: Any) -> Any:
    """The system-metrics source the arguments ask for (imported lazily; None without one)."""
    if args.prometheus_url:
        from loadgate.metrics.prometheus import PrometheusSource

        return PrometheusSource(
            args.prometheus_url, {n: m.promql for n, m in plan.system_metrics.items()}
        )
    if args.metrics_url:
        from loadgate.metrics.scrape import ScrapeSource

        specs = {n: m.scrape for n, m in plan.system_metrics.items() if m.scrape is not None}
        return ScrapeSource(args.metrics_url, specs)
    return None


def cmd_run_stage(args: argparse.Namespace) -> int:
    from loadgate.engine.users import UsersError, load_users
    from loadgate.plan import PlanError, load_plan
    from loadgate.runner.stage import (
        AlreadyAborted,
        EngineInputError,
        StageConfig,
        describe_load,
        prepare,
        run_stage,
    )
    from loadgate.runner.summary import render_text, summarize

    try:
        plan = load_plan(args.plan)
    except PlanError as exc:
        return _err(str(exc))
    try:
        users = load_users(args.users) if args.users else []
    except UsersError as exc:
        return _err(str(exc))
    allow = list(args.allow or [])
    allow += [e for e in os.environ.get("LOADGATE_TARGET_ALLOWLIST", "").split(",") if e.strip()]
    from loadgate.safety import TargetNotAllowed, check_target

    try:
        check_target(args.target, allow)
    except (TargetNotAllowed, ValueError) as exc:
        return _err(str(exc))
    out = as_path(args.out)
    progress_prefix = f"[{args.stage} {args.shard}]"
    cfg = StageConfig(
        plan=plan,
        plan_path=str(args.plan),
        stage=args.stage,
        target=args.target,
        out=out,
        shard=args.shard,
        scale=args.scale,
        time_scale=args.time_scale,
        users=users,
        abort_dir=as_path(args.abort_dir) if args.abort_dir else None,
        run_id=args.run_id,
        term_grace_s=args.term_grace,
        request_timeout_s=args.request_timeout,
        progress=None if args.quiet else (lambda line: print(progress_prefix, line, flush=True)),
        upload_every_s=args.upload_every,
    )
    if not args.dry_run:
        cfg.metrics = _metrics_source(args, plan)  # (nothing is read before the stage starts)
    try:
        prepared = prepare(cfg)
    except EngineInputError as exc:
        return _err(str(exc))
    except OSError as exc:  # the store holding the abort marker does not answer
        return _err(f"cannot read the abort marker in {cfg.marker_dir}: {exc}")
    except AlreadyAborted as exc:
        print(f"loadgate: {exc}", file=sys.stderr)
        if not args.dry_run:
            exc.write_results()
        return EXIT_ABORTED
    if args.dry_run or not args.quiet:
        print("\n".join(describe_load(prepared)), flush=True)
    if args.dry_run:
        print("dry run: nothing sent")
        return 0
    outcome = run_stage(cfg, prepared)
    if outcome.results_lost:
        return outcome.exit_code  # said where they are instead: nothing to read back
    if not args.quiet:
        from loadgate.engine.merge import load_merged

        try:
            print(render_text(summarize(load_merged([out]))), flush=True)
        except Exception as exc:  # the results are written; a summary failure is no run failure
            print(f"loadgate: cannot summarize {out}: {exc}", file=sys.stderr)
    if outcome.aborted:
        a = outcome.aborted
        print(
            f"loadgate: stage {args.stage} aborted by criterion {a.get('criterion')} "
            f"(observed {a.get('observed')}) at {a.get('at_s')}s",
            file=sys.stderr,
        )
    return outcome.exit_code


def cmd_summarize(args: argparse.Namespace) -> int:
    from loadgate.engine.merge import load_merged
    from loadgate.engine.results import ResultsError
    from loadgate.runner.summary import render_text, summarize

    try:
        merged = load_merged(args.dirs)
    except (ResultsError, OSError) as exc:
        return _err(str(exc))
    summary = summarize(merged)
    if args.plan:
        from loadgate.plan import PlanError, load_plan
        from loadgate.verdict.criteria import evaluate_stage

        try:
            plan = load_plan(args.plan)
        except PlanError as exc:
            return _err(str(exc))
        if merged.stage in plan.stages:
            results = evaluate_stage(plan, merged.stage, merged.aggregate)
            summary["criteria"] = [r.to_dict() for r in results]
    if args.json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        text = render_text(summary)
        for r in summary.get("criteria", []):
            text += (
                f"  criterion {r['id']} ({r['level']}): {r['status']} — {r['metric']} "
                f"{r['stat']} = {r['observed']} (breach {r['op']} {r['threshold']})\n"
            )
        sys.stdout.write(text)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    """Register (or log in) N test users and write the users file the engine reads."""
    import asyncio

    from loadgate.run.seeding import SeedingError, load_or_create_secret, seed_users
    from loadgate.safety import check_target

    allow = list(args.allow or []) + [
        e for e in os.environ.get("LOADGATE_TARGET_ALLOWLIST", "").split(",") if e
    ]
    try:
        check_target(args.target, allow)
    except ValueError as exc:
        return _err(str(exc))
    out = as_path(args.out)
    secret = os.environ.get("LOADGATE_SEED_SECRET") or load_or_create_secret(
        out.parent / ".seed-secret"
    )

    def progress(result: Any) -> None:
        print(
            f"seeding: {result.ready}/{result.requested} ready "
            f"({result.registered} registered, {result.existing} existing, "
            f"{result.failed} failed)",
            file=sys.stderr,
        )

    try:
        result = asyncio.run(
            seed_users(
                args.target.rstrip("/"),
                args.count,
                out,
                secret=secret,
                concurrency=args.concurrency,
                progress=progress,
            )
        )
    except SeedingError as exc:
        return _err(str(exc))
    sys.stdout.write(orjson.dumps(result.as_dict()).decode() + "\n")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from loadgate.run import history

    try:
        args.key = history.find_key(args.root, args.key)
        if args.pin:
            history.pin(args.root, args.key, args.pin)
            print(f"pinned {args.pin} as the baseline of {args.key}")
            return 0
        if args.unpin:
            removed = history.unpin(args.root, args.key)
            print(f"unpinned {args.key}" if removed else f"nothing was pinned in {args.key}")
            return 0
        found = history.entries(args.root, args.key, limit=args.limit)
        pin_id = history.pinned(args.root, args.key)
        newest = found[-1] if found else None
        base = (
            history.baseline(
                args.root,
                args.key,
                plan=newest.plan,
                scale=newest.scale,
            )
            if newest
            else None
        )
    except (history.HistoryError, OSError) as exc:
        return _err(str(exc))
    if args.json:
        out = {
            "key": args.key,
            "pinned": pin_id,
            "baseline": base.run_id if base else None,
            "entries": [e.model_dump(mode="json") for e in found],
        }
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    sys.stdout.write(history.render_table(found, pin_id, base.run_id if base else None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadgate",
        description="Release-gated load testing: the load engine and its results.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run-stage",
        help="run one stage of a plan on this shard and write its results",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=RUN_STAGE_EPILOG,
    )
    run.add_argument("--plan", required=True, help="plan YAML file (a path or s3:// URL)")
    run.add_argument("--stage", required=True, help="stage name in the plan")
    run.add_argument("--target", required=True, help="base URL of the service under test")
    run.add_argument(
        "--out", required=True, help="results directory of this shard, or an s3:// URL"
    )
    run.add_argument(
        "--shard", type=_shard, default=_shard("0/1"), help="this shard, I/N, 0 <= I < N (0/1)"
    )
    run.add_argument(
        "--scale", type=_positive_float, default=1.0, help="VUs, connections, rates ×S"
    )
    run.add_argument(
        "--time-scale",
        type=_positive_float,
        default=1.0,
        help="durations ×T (never think times or rates)",
    )
    run.add_argument(
        "--users", help="seeded users, JSON Lines (email, password, sessionId, ...); or s3://"
    )
    run.add_argument("--run-id", help="identifies the run in unique ids (default: time + random)")
    metrics = run.add_mutually_exclusive_group()
    metrics.add_argument("--metrics-url", help="scrape system metrics from the target's /metrics")
    metrics.add_argument("--prometheus-url", help="read system metrics from Prometheus")
    run.add_argument(
        "--abort-dir", help="where the stage's ABORT marker lives (default: OUT/..); or s3://"
    )
    run.add_argument(
        "--allow",
        action="append",
        metavar="ENTRY",
        help="allow a non-loopback target (host, *.suffix, network, URL prefix); also "
        "LOADGATE_TARGET_ALLOWLIST (comma-separated)",
    )
    run.add_argument(
        "--term-grace",
        type=_seconds(zero=True),
        default=10.0,
        help="seconds VUs get to finish on SIGTERM (0 to 3600; 10)",
    )
    run.add_argument(
        "--request-timeout",
        type=_seconds(zero=False),
        default=60.0,
        help="per request, seconds (up to 3600; 60)",
    )
    run.add_argument(
        "--upload-every",
        type=_seconds(zero=False),
        default=None,
        metavar="S",
        help="an s3:// --out: seconds between window uploads (5)",
    )
    run.add_argument("--dry-run", action="store_true", help="show the load per scenario; send none")
    run.add_argument("--quiet", action="store_true", help="no progress lines and no summary")
    run.set_defaults(func=cmd_run_stage)

    summ = sub.add_parser(
        "summarize",
        help="merge shard results of one stage and print the summary",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Each DIR is a shard's --out directory or a stage directory holding them,\n"
        "local or an s3:// URL.\n"
        "exit codes: 0 summarized, 2 unreadable or mixed results",
    )
    summ.add_argument("dirs", nargs="+", metavar="DIR")
    summ.add_argument("--json", action="store_true", help="print the summary as JSON")
    summ.add_argument("--plan", help="also evaluate this plan's criteria over the merged stage")
    summ.set_defaults(func=cmd_summarize)

    seed = sub.add_parser(
        "seed",
        help="register the test users (existing ones log in) and write the users file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The users file (JSON Lines, mode 0600) holds credentials: never print it.\n"
        "Passwords derive from LOADGATE_SEED_SECRET, or from a secret made once beside FILE.\n"
        "exit codes: 0 seeded, 2 bad input or more than 1% of the users failed",
    )
    seed.add_argument("--target", required=True, help="base URL of the service")
    seed.add_argument(
        "--count",
        required=True,
        type=_whole(1, MAX_SEED_USERS),
        help=f"number of users (1 to {MAX_SEED_USERS:,})",
    )
    seed.add_argument("--out", required=True, help="users file to write (JSON Lines)")
    seed.add_argument(
        "--concurrency",
        type=_whole(1, MAX_SEED_CONCURRENCY),
        default=64,
        help=f"requests in flight (1 to {MAX_SEED_CONCURRENCY:,}; 64)",
    )
    seed.add_argument(
        "--allow",
        action="append",
        metavar="ENTRY",
        help="allow a non-loopback target (as for run-stage)",
    )
    seed.set_defaults(func=cmd_seed)

    hist = sub.add_parser(
        "history",
        help="list a profile's release history; pin or unpin its baseline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="PROFILE names the history: a profile (shop), or its key with the plan\n"
        "(shop--checkout-smoke: loadgate.run.history.history_key).\n"
        "The table lists entries oldest first: * marks the pinned run, B the baseline.\n"
        "exit codes: 0 listed (or pinned), 2 unknown key, run or unreadable root",
    )
    hist.add_argument("key", metavar="PROFILE")
    hist.add_argument(
        "--root",
        default=os.environ.get("LOADGATE_ARTIFACTS_ROOT", "artifacts"),
        help="artifacts root, a folder or s3:// URL ($LOADGATE_ARTIFACTS_ROOT or ./artifacts)",
    )
    hist.add_argument(
        "--limit", type=_whole(1, MAX_HISTORY_LIMIT), help="only the newest N entries"
    )
    hist.add_argument("--json", action="store_true", help="print the entries as JSON")
    pinning = hist.add_mutually_exclusive_group()
    pinning.add_argument("--pin", metavar="RUN_ID", help="pin this run as the baseline")
    pinning.add_argument("--unpin", action="store_true", help="remove the pinned baseline")
    hist.set_defaults(func=cmd_history)

    _add_gate_parser(sub)
    return parser


def cmd_gate(args: argparse.Namespace) -> int:
    from loadgate.client import main_gate

    return main_gate(args)


def _add_gate_parser(sub: Any) -> None:
    from loadgate.client import (
        DEFAULT_DAG_ID,
        PASSWORD_ENV,
        TOKEN_ENV,
        URL_ENV,
        USERNAME_ENV,
    )
    from loadgate.client import (
        EXIT_CODES_HELP as GATE_EXIT_CODES,
    )

    gate = sub.add_parser(
        "gate",
        help="trigger the release gate in Airflow for a release and wait for its verdict",
        description="Trigger the release-gate DAG through Airflow's REST API v2, print each "
        "stage and its gate's verdict as the run goes and where the report is, and exit with "
        "the outcome's code (a deploy pipeline's one step).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=GATE_EXIT_CODES
        + f"""
credentials, from the environment only (never a flag): {TOKEN_ENV} (a JWT), or
{USERNAME_ENV} and {PASSWORD_ENV} to obtain one from POST /auth/token.
A paused DAG is left paused (exit 4, nothing triggered) unless --unpause.
Ctrl-C (SIGINT) or a pipeline's cancel (SIGTERM) stops waiting and leaves the run going;
--cancel-marks-failed marks it failed instead (PATCH dagRuns state=failed), then
watches it 5 s and marks it again if Airflow ends it otherwise.
""",
    )
    gate.add_argument("--target", required=True, help="the deployed service's base URL")
    gate.add_argument("--release", help="the release the target must report (e.g. a git SHA)")
    gate.add_argument("--url", help=f"the Airflow API server's URL (default ${URL_ENV})")
    gate.add_argument("--dag-id", default=DEFAULT_DAG_ID, help="the gate's DAG (%(default)s)")
    gate.add_argument("--profile", help="the gated service's profile (default: the DAG's)")
    gate.add_argument("--scale", type=float, help="load multiplier (default: the profile's)")
    gate.add_argument("--time-scale", type=float, help="schedule multiplier, (0, 1]")
    gate.add_argument("--stages", help="a subset of the plan's stages, comma-separated")
    gate.add_argument("--dry-run", action="store_true", help="plan the load, send none")
    gate.add_argument("--unpause", action="store_true", help="unpause the DAG if it is paused")
    gate.add_argument(
        "--investigate",
        choices=("fail", "pass"),
        default="fail",
        help="exit code of an investigate or inconclusive verdict: 1 (fail, the default) or 0",
    )
    gate.add_argument(
        "--timeout", type=float, help="seconds to wait for the run's end (default 6 h); exit 5"
    )
    gate.add_argument("--poll", type=float, default=5.0, help="seconds between looks (5)")
    gate.add_argument(
        "--cancel-marks-failed",
        action="store_true",
        help="on SIGINT/SIGTERM mark the run failed instead of leaving it going",
    )
    gate.set_defaults(func=cmd_gate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
