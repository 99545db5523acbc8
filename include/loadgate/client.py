"""``loadgate gate``: a deploy pipeline's one step. Trigger the release gate of a release through
Airflow's REST API v2 (the official client, ``apache-airflow-client``), follow the run, print
each stage and its gate's verdict as they happen and where the report is, and exit with a code
that says what to do with the release.

    loadgate gate --target URL [--release R] [--url AIRFLOW_URL] [--dag-id release_gate]
                  [--profile P] [--scale S] [--time-scale T] [--stages a,b] [--dry-run]
                  [--unpause] [--investigate fail|pass] [--timeout S] [--poll S]
                  [--cancel-marks-failed]

The Airflow URL comes from ``--url`` or ``LOADGATE_AIRFLOW_URL``; the credentials only from the
environment, never from the command line (a command line shows in ``ps`` and in CI logs):
``LOADGATE_AIRFLOW_TOKEN`` (a JWT), or ``LOADGATE_AIRFLOW_USERNAME`` and
``LOADGATE_AIRFLOW_PASSWORD``, for which a token is obtained from ``POST /auth/token`` (the
SimpleAuthManager's documented way; again when the token expires). The token is never printed.

The trigger's conf is what a trigger may set (``loadgate.config.profiles.TRIGGER_KEYS``); it is
checked here before any request, and the DAG's ``prepare`` checks it again against the profile.

A paused gate is not unpaused unless ``--unpause`` says so: pausing the gate is an operator's
decision (a maintenance, a broken target), and a run triggered on a paused DAG would wait
forever; without the flag the command says so and exits with the error code, sending nothing.

This module is a top layer of the core: only ``loadgate.cli`` imports it, and it imports the
client package lazily (the load image has no need of it).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import quote, urlsplit

# --- exit codes ----------------------------------------------------------------------------------

EXIT_PASS = 0  # the release passed (investigate/inconclusive too with --investigate=pass)
EXIT_INVESTIGATE = 1  # investigate, inconclusive, or invalid that the profile lets pass
EXIT_INPUT = 2  # bad input (no URL, no credentials, bad conf): nothing was sent
EXIT_ROLLBACK = 3  # a gate decided rollback: the release was rolled back, the run failed
EXIT_ERROR = 4  # the gate could not decide: refused by Airflow, a failed run, error, invalid
EXIT_TIMEOUT = 5  # --timeout passed; the run goes on in Airflow
EXIT_SIGINT = 130  # interrupted (Ctrl-C); the run goes on unless --cancel-marks-failed
EXIT_SIGTERM = 143  # the pipeline cancelled the job; the same

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_PASS}    pass (and investigate, inconclusive with --investigate=pass)
  {EXIT_INVESTIGATE}    investigate or inconclusive (the run succeeded, flagged), with
       --investigate=fail (the default); also invalid when the profile lets it pass
  {EXIT_INPUT}    bad input: no Airflow URL, no credentials, a bad conf value; nothing was sent
  {EXIT_ROLLBACK}    rollback: a gate found the release faulty; it was rolled back, the run failed
  {EXIT_ERROR}    error: Airflow unreachable or refused the request (bad token, unknown or paused
       DAG), the run failed without a rollback verdict (error, invalid, a failed task)
  {EXIT_TIMEOUT}    timeout: --timeout passed before the run ended; the run goes on in Airflow
  {EXIT_SIGINT}  interrupted (SIGINT, Ctrl-C): the run goes on (marked failed with
       --cancel-marks-failed)
  {EXIT_SIGTERM}  terminated (SIGTERM, a pipeline's cancel): the same
"""

URL_ENV = "LOADGATE_AIRFLOW_URL"
TOKEN_ENV = "LOADGATE_AIRFLOW_TOKEN"
USERNAME_ENV = "LOADGATE_AIRFLOW_USERNAME"
PASSWORD_ENV = "LOADGATE_AIRFLOW_PASSWORD"
DEFAULT_DAG_ID = "release_gate"
DEFAULT_TIMEOUT_S = 6 * 3600.0
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_SCALE = 1000.0

INVESTIGATE_VERDICTS = {"investigate", "inconclusive"}
TERMINAL_STATES = {"success", "failed"}
DONE_TI_STATES = {"success", "failed", "skipped", "upstream_failed", "removed"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,249}$")


class GateInputError(ValueError):
    """A bad argument or environment: reported before any request is sent."""


class GateApiError(RuntimeError):
    """Airflow refused a request or could not be reached."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while the client waited."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# --- the request: validated before anything is sent ----------------------------------------------


@dataclass(frozen=True)
class Credentials:
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GateRequest:
    url: str
    dag_id: str
    conf: dict[str, Any]
    credentials: Credentials = field(repr=False)


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GateInputError(f"{what} must be an http(s) URL, not {value!r}")
    if parts.username or parts.password:
        raise GateInputError(f"{what} must not hold credentials")
    return value


def credentials_from(env: Mapping[str, str]) -> Credentials:
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        return Credentials(token=token)
    username = env.get(USERNAME_ENV, "").strip()
    password = env.get(PASSWORD_ENV, "")
    if username and password:
        return Credentials(username=username, password=password)
    if username or password:
        raise GateInputError(f"{USERNAME_ENV} and {PASSWORD_ENV} go together; one is missing")
    raise GateInputError(
        f"no Airflow credentials: set {TOKEN_ENV} (a token), or {USERNAME_ENV} and "
        f"{PASSWORD_ENV} to obtain one (never on the command line)"
    )


def _positive(value: float | None, name: str, upper: float) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0 or value > upper:
        raise GateInputError(f"--{name} must be a number in (0, {upper:g}], not {value}")
    return value


def build_conf(
    *,
    target: str,
    release: str | None = None,
    profile: str | None = None,
    scale: float | None = None,
    time_scale: float | None = None,
    stages: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The trigger's conf: only the keys a trigger may set, each checked for its shape (the
    DAG's ``prepare`` checks them against the profile: allowlist, limits, the plan's stages)."""
    conf: dict[str, Any] = {"target_url": _http_url(target, "--target")}
    if release is not None:
        if not release.strip() or len(release) > 250 or any(c in release for c in "\r\n\0"):
            raise GateInputError(f"--release must be a release name, not {release!r}")
        conf["release"] = release.strip()
    if profile is not None:
        if not _NAME.match(profile):
            raise GateInputError(f"--profile must be a profile's name, not {profile!r}")
        conf["profile"] = profile
    if (s := _positive(scale, "scale", MAX_SCALE)) is not None:
        conf["scale"] = s
    if (t := _positive(time_scale, "time-scale", 1.0)) is not None:
        conf["time_scale"] = t
    if stages is not None:
        names = [s.strip() for s in stages.split(",") if s.strip()]
        bad = [s for s in names if not _NAME.match(s)]
        if not names or bad:
            raise GateInputError(f"--stages must be stage names separated by commas: {stages!r}")
        conf["stages"] = names
    if dry_run:
        conf["dry_run"] = True
    from loadgate.config.profiles import TRIGGER_KEYS

    unknown = set(conf) - set(TRIGGER_KEYS)
    assert not unknown, unknown  # the flags above are trigger keys, nothing else
    return conf


def build_request(
    *, url: str | None, dag_id: str, env: Mapping[str, str], **conf: Any
) -> GateRequest:
    """The whole request from the command's arguments and the environment, or GateInputError."""
    url = (url or env.get(URL_ENV, "")).strip()
    if not url:
        raise GateInputError(f"no Airflow URL: pass --url or set {URL_ENV}")
    url = _http_url(url, "the Airflow URL").rstrip("/")
    if url.endswith("/api/v2"):
        url = url[: -len("/api/v2")]
    if not _NAME.match(dag_id):
        raise GateInputError(f"--dag-id must be a DAG id, not {dag_id!r}")
    return GateRequest(
        url=url, dag_id=dag_id, conf=build_conf(**conf), credentials=credentials_from(env)
    )


# --- the outcome --------------------------------------------------------------------------------


def exit_code(
    state: str, verdict: str | None, *, investigate: str = "fail", dry_run: bool = False
) -> int:
    """The exit code of a run that ended in ``state`` with the release verdict ``verdict``."""
    if verdict == "rollback":
        return EXIT_ROLLBACK
    if state != "success":
        return EXIT_ERROR
    if verdict == "pass" or (dry_run and verdict is None):
        return EXIT_PASS
    if verdict in INVESTIGATE_VERDICTS or verdict == "invalid":  # succeeded: the run flags it
        return EXIT_INVESTIGATE if investigate == "fail" else EXIT_PASS
    return EXIT_ERROR  # succeeded without a verdict the client knows: never read as a pass


# --- the REST API, through apache-airflow-client -------------------------------------------------


def _client_module() -> Any:
    try:
        import airflow_client.client as client
    except ImportError:  # pragma: no cover: the message is the point
        raise GateApiError(
            "loadgate gate needs the Airflow REST client: pip install apache-airflow-client "
            "(the version of your Airflow, e.g. apache-airflow-client==3.3.2)"
        ) from None
    return client


TRANSIENT = frozenset({500, 502, 503, 504})  # server errors an idempotent call is sent again on
RETRY_DELAYS_S = (0.5, 1.0, 2.0)


class Airflow:
    """The few calls the gate needs, each turned into a GateApiError that names what failed
    (never the token)."""

    def __init__(self, request: GateRequest, http_timeout: float = 30.0) -> None:
        self.request = request
        self.http_timeout = http_timeout
        self._client = _client_module()
        self._token = request.credentials.token
        self._api: Any = None

    # authentication
    def _obtain_token(self) -> str:
        import requests

        creds = self.request.credentials
        try:
            resp = requests.post(
                f"{self.request.url}/auth/token",
                json={"username": creds.username, "password": creds.password},
                timeout=self.http_timeout,
            )
        except requests.RequestException as exc:
            raise GateApiError(f"cannot reach Airflow at {self.request.url}: {exc}") from None
        if resp.status_code != 201 and resp.status_code != 200:
            raise GateApiError(
                f"POST /auth/token refused the credentials of {USERNAME_ENV} "
                f"({resp.status_code} {resp.reason})"
            )
        token = resp.json().get("access_token")
        if not isinstance(token, str) or not token:
            raise GateApiError("POST /auth/token answered without an access_token")
        return token

    def _apis(self) -> Any:
        if self._api is None:
            if self._token is None:
                self._token = self._obtain_token()
            config = self._client.Configuration(host=self.request.url, access_token=self._token)
            config.retries = 2
            self._api = self._client.ApiClient(config)
        return self._api

    def call(self, what: str, fn: Callable[[Any, Any], Any], *, idempotent: bool = True) -> Any:
        """``fn(client_module, api_client)``; a 401 with username/password fetches a new token
        once (tokens expire during a long gate). An ``idempotent`` call answered with a server
        error (``TRANSIENT``) is sent again after each of ``RETRY_DELAYS_S``: the API server
        answers 500 when its database reports a deadlock with the scheduler (seen on
        PostgreSQL when a run is marked failed while its tasks end), and one such answer
        must not end a deploy pipeline's wait. A trigger is never sent twice."""
        renewed = False
        delays = list(RETRY_DELAYS_S) if idempotent else []
        while True:
            try:
                return fn(self._client, self._apis())
            except self._client.ApiException as exc:
                if exc.status == 401 and self.request.credentials.username and not renewed:
                    renewed = True
                    self._token, self._api = None, None
                    continue
                if exc.status in TRANSIENT and delays:
                    time.sleep(delays.pop(0))
                    continue
                raise GateApiError(self._describe(what, exc)) from None
            except GateApiError:
                raise
            except Exception as exc:  # urllib3's connection errors, a body that did not parse
                raise GateApiError(self._scrub(f"{what}: {type(exc).__name__}: {exc}")) from None

    def _describe(self, what: str, exc: Any) -> str:
        detail: Any = ""
        try:
            body = json.loads(exc.body or "{}")
            detail = body.get("detail") if isinstance(body, dict) else ""
            if not isinstance(detail, str):
                detail = json.dumps(detail)[:500]
        except ValueError:
            detail = str(exc.body or "")[:300]
        hint = {
            401: f" (the token is not valid: check {TOKEN_ENV} or {USERNAME_ENV}/{PASSWORD_ENV})",
            403: f" (the token is not valid, or its user may not do this: check {TOKEN_ENV})",
            404: f" (is the DAG id right, and is {self.request.url} the Airflow API server?)",
        }.get(exc.status, "")
        return self._scrub(f"{what}: {exc.status} {exc.reason}{hint}: {detail}".rstrip(": "))

    def _scrub(self, text: str) -> str:
        for secret in (self._token, self.request.credentials.password):
            if secret:
                text = text.replace(secret, "***")
        return text

    # the calls
    def is_paused(self) -> bool:
        dag_id = self.request.dag_id
        dag = self.call(
            f"GET /dags/{dag_id}", lambda c, api: c.DAGApi(api).get_dag(dag_id, **self._t)
        )
        return bool(dag.is_paused)

    def unpause(self) -> None:
        dag_id = self.request.dag_id
        self.call(
            f"PATCH /dags/{dag_id}",
            lambda c, api: c.DAGApi(api).patch_dag(
                dag_id, c.DAGPatchBody(is_paused=False), update_mask=["is_paused"], **self._t
            ),
        )

    def trigger(self) -> str:
        dag_id, conf = self.request.dag_id, self.request.conf
        run = self.call(
            f"POST /dags/{dag_id}/dagRuns",
            lambda c, api: c.DagRunApi(api).trigger_dag_run(
                dag_id, c.TriggerDAGRunPostBody(conf=conf, logical_date=None), **self._t
            ),
            idempotent=False,  # a second POST would start a second run
        )
        return str(run.dag_run_id)

    def run_state(self, run_id: str) -> str:
        dag_id = self.request.dag_id
        run = self.call(
            "GET the run",
            lambda c, api: c.DagRunApi(api).get_dag_run(dag_id, run_id, **self._t),
        )
        return str(getattr(run.state, "value", run.state))

    def mark_failed(self, run_id: str) -> None:
        dag_id = self.request.dag_id
        self.call(
            "PATCH the run",
            lambda c, api: c.DagRunApi(api).patch_dag_run(
                dag_id,
                run_id,
                c.DAGRunPatchBody(state=c.DagRunMutableStates("failed")),
                update_mask=["state"],
                **self._t,
            ),
        )

    def task_states(self, run_id: str) -> dict[str, str]:
        """Each task's state (a mapped task: its worst-known, i.e. any running one)."""
        dag_id = self.request.dag_id
        states: dict[str, str] = {}
        offset = 0
        while True:

            def listing(c: Any, api: Any, offset: int = offset) -> Any:
                return c.TaskInstanceApi(api).get_task_instances_without_preload_content(
                    dag_id, run_id, limit=100, offset=offset, **self._t
                )

            page = self._json("GET the run's task instances", listing)
            items = page.get("task_instances") or []
            for ti in items:
                state = ti.get("state") or "none"
                if states.get(ti["task_id"]) == "running":
                    continue  # a mapped task: one running instance makes it running
                states[ti["task_id"]] = state
            offset += len(items)
            if not items or offset >= int(page.get("total_entries") or 0):
                return states

    def xcom(self, run_id: str, task_id: str, key: str = "return_value") -> Any:
        dag_id = self.request.dag_id
        entry = self._json(
            f"GET the XCom {key} of {task_id}",
            lambda c, api: c.XComApi(api).get_xcom_entry_without_preload_content(
                dag_id, task_id, run_id, key, **self._t
            ),
        )
        value = entry.get("value")
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def _json(self, what: str, fn: Callable[[Any, Any], Any]) -> dict[str, Any]:
        def read(c: Any, api: Any) -> Any:
            resp = fn(c, api)
            if resp.status >= 400:
                raise c.ApiException(http_resp=resp)
            return json.loads(resp.data)

        data = self.call(what, read)
        return data if isinstance(data, dict) else {}

    @property
    def _t(self) -> dict[str, Any]:
        return {"_request_timeout": self.http_timeout}

    def run_link(self, run_id: str) -> str:
        return f"{self.request.url}/dags/{quote(self.request.dag_id)}/runs/{quote(run_id, safe='')}"


# --- following the run --------------------------------------------------------------------------

_LOAD = re.compile(r"^(?P<stage>[^.]+)\.(?P<rerun>rerun\.)?(?P<task>load_test|load_pods)$")
GATE_KEY = "verdict"  # the XCom key under which a gate task puts its verdict and key figures
_GATE = re.compile(r"^(?P<stage>[^.]+)\.(?P<rerun>rerun\.)?gate$")
STEPS = ("prepare", "checklist", "seed_users", "rollback")
FIGURES = ("Requests", "Error rate", "p95", "p99")  # a gate's key figures, in this order


@dataclass
class Follower:
    """Turns successive task states into progress lines, each said once."""

    airflow: Airflow
    run_id: str
    say: Callable[[str], None]
    said: set[str] = field(default_factory=set)
    gates: dict[str, str] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    _values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _once(self, key: str, line: str) -> None:
        if key not in self.said:
            self.said.add(key)
            self.say(line)

    def _value(self, task_id: str, key: str = "return_value") -> Any:
        try:
            return self.airflow.xcom(self.run_id, task_id, key)
        except GateApiError:
            return None

    def update(self, states: Mapping[str, str]) -> None:
        for task_id in STEPS:
            state = states.get(task_id)
            if state in DONE_TI_STATES:
                self._once(task_id, f"{task_id}: {state}")
        for task_id, state in states.items():  # the gates decided so far, before the loads
            if (m := _GATE.match(task_id)) and not m["rerun"] and state == "success":
                self._gate_value(task_id)
        for task_id, state in states.items():
            if m := _LOAD.match(task_id):
                label = f"stage {m['stage']}" + (" (re-run)" if m["rerun"] else "")
                if state == "success" or (state == "running" and self._will_load(m)):
                    self._once(f"start:{label}", f"{label}: started")
            elif m := _GATE.match(task_id):
                self._gate(m["stage"], bool(m["rerun"]), task_id, state)
        build = states.get("post_test.build_report")
        if build == "success" and self.report is None:
            value = self._value("post_test.build_report")
            self.report = value if isinstance(value, dict) else {}
            where = self.report.get("html") or self.report.get("md") or "(no path in its XCom)"
            self._once("report", f"report: {where}")
        elif build in ("failed", "upstream_failed"):
            self._once("report", f"report: not built (post_test.build_report {build})")

    def _will_load(self, m: re.Match[str]) -> bool:
        """Whether a running load task sends load, or is about to skip itself (a stage not
        chosen, one after a rollback or error verdict, a re-run of a decided stage): the task
        runs for a moment either way, and only the first deserves "started"."""
        stage = m["stage"]
        if m["rerun"]:
            return self.gates.get(stage) == "inconclusive"
        chosen = self.airflow.request.conf.get("stages")
        if chosen and stage not in chosen:
            return False
        return not any(v in ("rollback", "error") for v in self.gates.values())

    def _gate_value(self, task_id: str) -> dict[str, Any]:
        if task_id not in self._values:
            value = self._value(task_id, GATE_KEY)
            self._values[task_id] = value if isinstance(value, dict) else {}
            stage = task_id.split(".", 1)[0]
            if task_id == f"{stage}.gate":
                self.gates[stage] = str(self._values[task_id].get("verdict") or "unknown")
        return self._values[task_id]

    def _gate(self, stage: str, rerun: bool, task_id: str, state: str) -> None:
        label = f"stage {stage}" + (" (re-run)" if rerun else "")
        if state == "success":
            value = self._gate_value(task_id)
            verdict = str(value.get("verdict") or "unknown")
            if rerun:
                self.gates[stage] = verdict  # the stage's decision, on both attempts
            reasons = [str(r) for r in value.get("reasons") or []]
            figures = value.get("figures") or {}
            line = f"{label}: gate {verdict}"
            if isinstance(figures, dict) and figures:
                names = sorted(figures, key=lambda k: (FIGURES.index(k) if k in FIGURES else 9, k))
                line += " (" + ", ".join(f"{k} {figures[k]}" for k in names) + ")"
            if reasons:
                line += " — " + "; ".join(reasons[:4])
                if len(reasons) > 4:
                    line += f" (+{len(reasons) - 4} more)"
            self._once(f"gate:{label}", line)
        elif state in ("failed", "upstream_failed"):
            self._once(f"gate:{label}", f"{label}: gate task {state}")
        elif state == "skipped" and not rerun:
            self._once(f"gate:{label}", f"{label}: skipped")

    def verdict(self) -> str | None:
        """The release's verdict: the report's, else the finalize task's, else the gates'."""
        if self.report and isinstance(self.report.get("verdict"), str):
            return str(self.report["verdict"])
        final = self._value("finalize")
        if isinstance(final, str) and final:
            return final
        if "rollback" in self.gates.values():
            return "rollback"
        return None


# --- signals ------------------------------------------------------------------------------------


@contextmanager
def _signals_raise() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --- the command --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaitOptions:
    unpause: bool = False
    investigate: str = "fail"
    timeout_s: float = DEFAULT_TIMEOUT_S
    poll_s: float = 5.0
    cancel_marks_failed: bool = False


def run_gate(
    request: GateRequest,
    options: WaitOptions,
    out: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Trigger the gate, follow it to its end, say what happened; the exit code."""
    started = clock()

    def say(line: str) -> None:
        text = f"[{clock() - started:6.0f}s] {line}"
        (out or _print)(text)

    airflow = Airflow(request)
    run_id: str | None = None
    with _signals_raise():
        try:
            if airflow.is_paused():
                if not options.unpause:
                    say(
                        f"error: the DAG {request.dag_id} is paused, so a run would wait; an "
                        "operator paused it, or pass --unpause to unpause it"
                    )
                    return EXIT_ERROR
                airflow.unpause()
                say(f"unpaused {request.dag_id} (--unpause)")
            run_id = airflow.trigger()
            conf = request.conf
            say(
                f"triggered {request.dag_id} run {run_id}: target {conf['target_url']}, "
                f"release {conf.get('release', '(any)')}; {airflow.run_link(run_id)}"
            )
            return _follow(airflow, run_id, options, say, clock, started)
        except GateApiError as exc:
            say(f"error: {exc}")
            if run_id:
                say(f"the run {run_id} may still be going: {airflow.run_link(run_id)}")
            return EXIT_ERROR
        except Interrupted as sig:
            return _interrupted(airflow, run_id, options, say, sig.signum)


def _follow(
    airflow: Airflow,
    run_id: str,
    options: WaitOptions,
    say: Callable[[str], None],
    clock: Callable[[], float],
    started: float,
) -> int:
    follower = Follower(airflow, run_id, say)
    state = "queued"
    said_state = ""
    transient = 0
    while True:
        try:
            state = airflow.run_state(run_id)
            follower.update(airflow.task_states(run_id))
            transient = 0
        except GateApiError as exc:
            if "401" in str(exc) or "403" in str(exc) or "404" in str(exc):
                raise
            transient += 1  # an API server restarting: a few misses are not the run's end
            if transient >= 6:
                raise
            say(f"warning: {exc} (trying again)")
        if state != said_state:
            if state not in TERMINAL_STATES:
                say(f"run {state}")
            said_state = state
        if state in TERMINAL_STATES:
            follower.update(airflow.task_states(run_id))  # the last tasks' lines
            verdict = follower.verdict()
            code = exit_code(
                state,
                verdict,
                investigate=options.investigate,
                dry_run=bool(airflow.request.conf.get("dry_run")),
            )
            link = airflow.run_link(run_id)
            say(f"run {state}: verdict {verdict or 'none'} (exit {code}); {link}")
            return code
        if clock() - started >= options.timeout_s:
            say(
                f"timeout: the run did not end within {options.timeout_s:g} s; it goes on in "
                f"Airflow ({state}): {airflow.run_link(run_id)}"
            )
            return EXIT_TIMEOUT
        time.sleep(max(0.0, min(options.poll_s, options.timeout_s - (clock() - started))))


def _interrupted(
    airflow: Airflow,
    run_id: str | None,
    options: WaitOptions,
    say: Callable[[str], None],
    signum: int,
) -> int:
    name = signal.Signals(signum).name
    code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
    if run_id is None:
        say(f"{name}: stopped before a run was triggered")
        return code
    if options.cancel_marks_failed:
        try:
            held = _mark_failed(airflow, run_id)
        except GateApiError as exc:
            say(f"{name}: could not mark the run failed ({exc}); it goes on")
        except Interrupted:
            say(f"{name}: marked the run {run_id} failed, then signalled again: not watched")
        else:
            if held.state == "failed":
                again = f", {held.marks} times: Airflow set it {held.undone}" if held.undone else ""
                say(f"{name}: marked the run {run_id} failed (--cancel-marks-failed{again})")
            else:
                say(
                    f"{name}: marked the run {run_id} failed {held.marks} times, and Airflow "
                    f"set it {held.state} each time: {airflow.run_link(run_id)}"
                )
    else:
        say(
            f"{name}: stopped waiting; the run {run_id} goes on in Airflow: "
            f"{airflow.run_link(run_id)}"
        )
    return code


# A run marked failed can still end as a success: a scheduler loop that took the run before the
# mark counts its tasks, all ended or skipped by the mark, and marks it successful (seen with
# Airflow 3 1.3 s after the mark, in 1 of 12 cancels timed to land while a task ran). The
# command watches the run this long after marking it, and marks it again if it left failed.
MARK_HOLD_S = 5.0
MARK_POLL_S = 0.5
MARK_ATTEMPTS = 3


@dataclass(frozen=True)
class MarkHeld:
    state: str  # the run's state when the watch ended ("failed" unless Airflow undid every mark)
    marks: int  # PATCHes sent
    undone: str = ""  # the state Airflow set after a mark, if it did


def _mark_failed(airflow: Airflow, run_id: str) -> MarkHeld:
    """Mark the run failed and watch it ``MARK_HOLD_S`` seconds, marking it again (up to
    ``MARK_ATTEMPTS`` marks in all) when Airflow ends it otherwise."""
    airflow.mark_failed(run_id)
    marks, undone, state = 1, "", "failed"
    deadline = time.monotonic() + MARK_HOLD_S
    while time.monotonic() < deadline:
        time.sleep(min(MARK_POLL_S, max(0.0, deadline - time.monotonic())))
        state = airflow.run_state(run_id)
        if state != "failed":
            undone = state
            if marks >= MARK_ATTEMPTS:
                break
            airflow.mark_failed(run_id)
            marks, state = marks + 1, "failed"
    return MarkHeld(state=state, marks=marks, undone=undone)


def _print(line: str) -> None:
    print(line, flush=True)


def main_gate(args: Any, env: Mapping[str, str] | None = None) -> int:
    """The ``loadgate gate`` command, from its parsed arguments."""
    env = os.environ if env is None else env
    try:
        request = build_request(
            url=args.url,
            dag_id=args.dag_id,
            env=env,
            target=args.target,
            release=args.release,
            profile=args.profile,
            scale=args.scale,
            time_scale=args.time_scale,
            stages=args.stages,
            dry_run=args.dry_run,
        )
        if args.poll <= 0 or not math.isfinite(args.poll) or args.poll > 300:
            raise GateInputError(f"--poll must be in (0, 300] seconds, not {args.poll}")
        timeout = _positive(args.timeout, "timeout", MAX_TIMEOUT_S)
        _client_module()
    except (GateInputError, GateApiError) as exc:
        print(f"loadgate gate: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    options = WaitOptions(
        unpause=args.unpause,
        investigate=args.investigate,
        timeout_s=timeout or DEFAULT_TIMEOUT_S,
        poll_s=args.poll,
        cancel_marks_failed=args.cancel_marks_failed,
    )
    return run_gate(request, options)
