"""``loadgate gate`` without Airflow: its input is checked before any request, and each
outcome maps to its documented exit code. (Against a real Airflow: tests/deployment.)"""

from __future__ import annotations

import pytest

from loadgate import cli, client
from loadgate.config.profiles import TRIGGER_KEYS

TOKEN = "secret-jwt-value"
ENV = {client.URL_ENV: "http://127.0.0.1:1", client.TOKEN_ENV: TOKEN}


def run(argv: list[str], env: dict[str, str], monkeypatch, capsys) -> tuple[int, str]:
    for name in (client.URL_ENV, client.TOKEN_ENV, client.USERNAME_ENV, client.PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def no_request(*args, **kwargs):
        raise AssertionError("a request was sent")

    monkeypatch.setattr(client, "run_gate", no_request)
    code = cli.main(["gate", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--target", "http://t"], {client.TOKEN_ENV: TOKEN}, "no Airflow URL"),
        (["--target", "http://t"], {client.URL_ENV: "http://a"}, "no Airflow credentials"),
        (
            ["--target", "http://t"],
            {client.URL_ENV: "http://a", client.USERNAME_ENV: "admin"},
            "go together",
        ),
        (["--target", "ftp://t"], ENV, "--target must be an http(s) URL"),
        (["--target", "http://u:p@t"], ENV, "must not hold credentials"),
        (["--target", "http://t", "--url", "airflow:8080"], ENV, "Airflow URL must be"),
        (["--target", "http://t", "--scale", "0"], ENV, "--scale must be"),
        (["--target", "http://t", "--scale", "nan"], ENV, "--scale must be"),
        (["--target", "http://t", "--time-scale", "2"], ENV, "--time-scale must be"),
        (["--target", "http://t", "--stages", ","], ENV, "--stages must be"),
        (["--target", "http://t", "--stages", "api,x y"], ENV, "--stages must be"),
        (["--target", "http://t", "--profile", "../x"], ENV, "--profile must be"),
        (["--target", "http://t", "--release", " "], ENV, "--release must be"),
        (["--target", "http://t", "--timeout", "-1"], ENV, "--timeout must be"),
        (["--target", "http://t", "--poll", "0"], ENV, "--poll must be"),
        (["--target", "http://t", "--dag-id", "a b"], ENV, "--dag-id must be"),
    ],
)
def test_bad_input_is_refused_before_any_request(argv, env, message, monkeypatch, capsys):
    code, out = run(argv, env, monkeypatch, capsys)
    assert code == client.EXIT_INPUT, out
    assert message in out, out
    assert TOKEN not in out


def test_no_token_flag(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["gate", "--target", "http://t", "--token", TOKEN])
    assert exc.value.code == 2
    assert "--token" in capsys.readouterr().err


def test_a_good_request_is_the_trigger_keys_only(monkeypatch):
    request = client.build_request(
        url="http://airflow:8080/api/v2/",
        dag_id="release_gate",
        env=ENV,
        target="https://shop.example/api",
        release="abc123",
        profile="shop",
        scale=0.5,
        time_scale=0.1,
        stages="api, session",
        dry_run=True,
    )
    assert request.url == "http://airflow:8080"
    assert request.conf == {
        "target_url": "https://shop.example/api",
        "release": "abc123",
        "profile": "shop",
        "scale": 0.5,
        "time_scale": 0.1,
        "stages": ["api", "session"],
        "dry_run": True,
    }
    assert set(request.conf) <= set(TRIGGER_KEYS)
    assert TOKEN not in repr(request)
    minimal = client.build_request(url=None, dag_id="release_gate", env=ENV, target="http://t")
    assert minimal.conf == {"target_url": "http://t"}
    assert minimal.url == "http://127.0.0.1:1"


def test_username_and_password_instead_of_a_token():
    creds = client.credentials_from({client.USERNAME_ENV: "ci", client.PASSWORD_ENV: "pw"})
    assert creds.username == "ci" and creds.token is None
    assert "pw" not in repr(creds)
    # a token wins
    creds = client.credentials_from({client.TOKEN_ENV: TOKEN, client.USERNAME_ENV: "ci"})
    assert creds.token == TOKEN


@pytest.mark.parametrize(
    ("state", "verdict", "investigate", "dry_run", "code"),
    [
        ("success", "pass", "fail", False, client.EXIT_PASS),
        ("success", "investigate", "fail", False, client.EXIT_INVESTIGATE),
        ("success", "investigate", "pass", False, client.EXIT_PASS),
        ("success", "inconclusive", "fail", False, client.EXIT_INVESTIGATE),
        ("success", "inconclusive", "pass", False, client.EXIT_PASS),
        ("success", "invalid", "fail", False, client.EXIT_INVESTIGATE),  # the profile let it
        ("failed", "rollback", "fail", False, client.EXIT_ROLLBACK),
        ("failed", "rollback", "pass", False, client.EXIT_ROLLBACK),
        ("failed", "invalid", "pass", False, client.EXIT_ERROR),
        ("failed", "error", "fail", False, client.EXIT_ERROR),
        ("failed", None, "fail", False, client.EXIT_ERROR),  # e.g. prepare refused the conf
        ("failed", "pass", "fail", False, client.EXIT_ERROR),  # a task failed: never a pass
        ("success", None, "fail", False, client.EXIT_ERROR),
        ("success", None, "fail", True, client.EXIT_PASS),  # a dry run gates nothing
    ],
)
def test_exit_codes(state, verdict, investigate, dry_run, code):
    assert client.exit_code(state, verdict, investigate=investigate, dry_run=dry_run) == code


def test_exit_codes_are_distinct_and_documented():
    codes = [
        client.EXIT_PASS,
        client.EXIT_INVESTIGATE,
        client.EXIT_INPUT,
        client.EXIT_ROLLBACK,
        client.EXIT_ERROR,
        client.EXIT_TIMEOUT,
        client.EXIT_SIGINT,
        client.EXIT_SIGTERM,
    ]
    assert len(set(codes)) == len(codes)
    for code in codes:
        assert f"\n  {code} " in client.EXIT_CODES_HELP


class FakeAirflow:
    """The calls the follower makes, answered from a script of task states and XComs."""

    def __init__(self, xcoms, conf=None):
        self.xcoms = xcoms
        self.request = client.build_request(
            url="http://a", dag_id="release_gate", env=ENV, **(conf or {"target": "http://t"})
        )

    def xcom(self, run_id, task_id, key="return_value"):
        # a gate's verdict is under its own key (its return value is the branch it took)
        kept = client.GATE_KEY if task_id.endswith("gate") else "return_value"
        if task_id not in self.xcoms or key != kept:
            raise client.GateApiError("404")
        return self.xcoms[task_id]


def test_progress_lines_each_once():
    lines: list[str] = []
    figures = {"Requests": "1,234", "Error rate": "0.00%", "p95": "12 ms", "p99": "30 ms"}
    airflow = FakeAirflow(
        {
            "api.gate": {"verdict": "pass", "reasons": [], "figures": figures},
            "post_test.build_report": {"verdict": "pass", "html": "/r/report.html"},
        }
    )
    follower = client.Follower(airflow, "run-1", lines.append)  # type: ignore[arg-type]
    states = {"prepare": "success", "api.load_test": "running", "api.load_pods": "none"}
    follower.update(states)
    follower.update(states)
    # a decided stage's re-run task runs for a moment to skip itself: not "started"
    states |= {"api.load_test": "success", "api.gate": "success", "api.rerun.load_test": "running"}
    follower.update(states)
    states |= {"api.rerun.load_test": "skipped", "websocket.gate": "skipped"}
    states |= {"post_test.build_report": "success"}
    follower.update(states)
    follower.update(states)
    assert lines == [
        "prepare: success",
        "stage api: started",
        "stage api: gate pass (Requests 1,234, Error rate 0.00%, p95 12 ms, p99 30 ms)",
        "stage websocket: skipped",
        "report: /r/report.html",
    ]
    assert follower.verdict() == "pass"


def test_after_a_rollback_no_stage_starts():
    lines: list[str] = []
    reasons = ["stage aborted at 5.5 s by error-rate-rollback (observed 0.19)"]
    airflow = FakeAirflow(
        {"api.gate": {"verdict": "rollback", "reasons": reasons}},
        conf={"target": "http://t", "stages": "api,websocket,session"},
    )
    follower = client.Follower(airflow, "run-1", lines.append)  # type: ignore[arg-type]
    follower.update({"api.load_test": "success", "api.gate": "success"})
    follower.update({"websocket.load_test": "running", "session.load_test": "running"})
    follower.update({"rollback": "success", "finalize": "failed"})
    assert lines == [
        "stage api: started",
        f"stage api: gate rollback — {reasons[0]}",
        "rollback: success",
    ]
    assert follower.verdict() == "rollback"


def test_a_stage_not_chosen_never_starts():
    lines: list[str] = []
    airflow = FakeAirflow({}, conf={"target": "http://t", "stages": "session"})
    follower = client.Follower(airflow, "run-1", lines.append)  # type: ignore[arg-type]
    follower.update({"api.load_test": "running", "session.load_test": "running"})
    assert lines == ["stage session: started"]


class FakeRun:
    """A run whose state reads ``states`` in turn after each mark (then its last one)."""

    def __init__(self, *states: str):
        self.marked: list[str] = []
        self.states = list(states) or ["failed"]

    def mark_failed(self, run_id):
        self.marked.append(run_id)

    def run_state(self, run_id):
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def run_link(self, run_id):
        return f"http://airflow/dags/release_gate/runs/{run_id}"


@pytest.fixture
def short_hold(monkeypatch):
    """The watch after a mark: 0.2 s, read every 10 ms."""
    monkeypatch.setattr(client, "MARK_HOLD_S", 0.2)
    monkeypatch.setattr(client, "MARK_POLL_S", 0.01)


@pytest.mark.parametrize(("signum", "code"), [(2, client.EXIT_SIGINT), (15, client.EXIT_SIGTERM)])
@pytest.mark.parametrize("cancel", [False, True])
def test_a_signal_leaves_the_run_going_unless_asked(signum, code, cancel, short_hold):
    airflow, lines = FakeRun(), []
    options = client.WaitOptions(cancel_marks_failed=cancel)
    got = client._interrupted(airflow, "run-1", options, lines.append, signum)  # type: ignore[arg-type]
    assert got == code
    if cancel:
        assert airflow.marked == ["run-1"]
        assert lines[0].endswith("marked the run run-1 failed (--cancel-marks-failed)"), lines
    else:
        assert airflow.marked == []
        assert "goes on in Airflow" in lines[0] and "runs/run-1" in lines[0]


def test_a_mark_that_airflow_undoes_is_made_again(short_hold):
    """The scheduler ended the marked run as a success: the command marks it failed again."""
    airflow, lines = FakeRun("success", "failed"), []
    options = client.WaitOptions(cancel_marks_failed=True)
    got = client._interrupted(airflow, "run-1", options, lines.append, 15)  # type: ignore[arg-type]
    assert got == client.EXIT_SIGTERM
    assert airflow.marked == ["run-1", "run-1"]
    assert lines == [
        "SIGTERM: marked the run run-1 failed (--cancel-marks-failed, 2 times: Airflow set it "
        "success)"
    ]


def test_a_mark_undone_every_time_is_said_with_the_runs_link(short_hold):
    airflow, lines = FakeRun("success"), []
    options = client.WaitOptions(cancel_marks_failed=True)
    client._interrupted(airflow, "run-1", options, lines.append, 15)  # type: ignore[arg-type]
    assert airflow.marked == ["run-1"] * client.MARK_ATTEMPTS
    assert "failed 3 times, and Airflow set it success each time" in lines[0], lines
    assert "runs/run-1" in lines[0]


def test_a_server_error_is_retried_but_never_for_the_trigger(monkeypatch):
    """The API server answers 500 when its database reports a deadlock with the scheduler (seen
    marking a run failed on PostgreSQL): an idempotent call is sent again, a trigger never."""
    pytest.importorskip("airflow_client.client")
    slept: list[float] = []
    monkeypatch.setattr(client.time, "sleep", slept.append)
    request = client.GateRequest(
        url="http://127.0.0.1:1",
        dag_id="release_gate",
        conf={},
        credentials=client.Credentials(token=TOKEN),
    )
    api = client.Airflow(request)
    answers: list[int] = []

    def answering(*statuses: int):
        left = list(statuses)

        def fn(c, _api):
            status = left.pop(0) if left else 200
            answers.append(status)
            if status != 200:
                raise c.ApiException(status=status, reason="Internal Server Error")
            return "ok"

        return fn

    assert api.call("PATCH the run", answering(500, 503)) == "ok"
    assert answers == [500, 503, 200] and slept == list(client.RETRY_DELAYS_S[:2])
    # a lasting server error ends in a clear error after every retry
    answers.clear(), slept.clear()
    with pytest.raises(client.GateApiError, match="GET the run: 500"):
        api.call("GET the run", answering(*[500] * 10))
    assert len(answers) == 1 + len(client.RETRY_DELAYS_S)
    # a client error, and anything on the trigger, are not retried
    answers.clear(), slept.clear()
    with pytest.raises(client.GateApiError):
        api.call("GET the run", answering(400))
    with pytest.raises(client.GateApiError):
        api.call("POST /dags/release_gate/dagRuns", answering(500), idempotent=False)
    assert answers == [400, 500] and slept == []
