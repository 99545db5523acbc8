"""Bad plans are refused with the file, the field path and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loadgate.plan import PlanError, load_plan, parse_duration

GOOD = {
    "name": "t",
    "stages": {
        "api": {
            "scenarios": {
                "probe": {
                    "exec": "basic.get",
                    "executor": "constant-vus",
                    "vus": 2,
                    "duration": "5s",
                }
            }
        }
    },
    "criteria": [{"id": "err", "level": "rollback", "metric": "http_req_failed", "breach": "> 5%"}],
}


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _error(tmp_path: Path, data) -> PlanError:
    path = _write(tmp_path, data)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(path) in str(info.value)
    return info.value


def test_good_plan_loads(tmp_path: Path) -> None:
    plan = load_plan(_write(tmp_path, GOOD))
    assert plan.stages["api"].scenarios["probe"].duration == 5.0
    assert plan.criteria[0].threshold == pytest.approx(0.05)


def _with(path: str, value):
    import copy

    data = copy.deepcopy(GOOD)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if value is None:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "field", "reason"),
    [
        ("stages.api.scenarios.probe.vus", -1, "stages.api.scenarios.probe.vus", "greater than"),
        ("stages.api.scenarios.probe.duration", "5 parsecs", "probe.duration", "not a duration"),
        ("stages.api.scenarios.probe.executor", "warp", "probe", "unknown executor"),
        ("stages.api.scenarios.probe.exec", "not a function!", "probe.exec", "module:function"),
        ("stages.api.scenarios.probe.typo", 3, "probe.typo", "Extra inputs"),
        ("criteria.0.breach", "about 5", "criteria[0].breach", "operator and a number"),
        ("criteria.0.level", "panic", "criteria[0].level", "acceptance"),
        ("criteria.0.metric", "vibes", "criteria[0].metric", "unknown metric"),
        ("criteria.0.stat", "p101", "criteria[0].stat", "has stats"),
        ("name", None, "name", "Field required"),
    ],
)
def test_bad_field_is_named(tmp_path, path, value, field, reason) -> None:
    err = _error(tmp_path, _with(path, value))
    assert field in str(err)
    assert reason in str(err)


def test_unknown_stage_in_criterion(tmp_path: Path) -> None:
    err = _error(tmp_path, _with("criteria.0.stages", ["websocket"]))
    assert "criteria[0].stages" in str(err) and "unknown stage 'websocket'" in str(err)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    err = _error(tmp_path, "name: x\nstages: [\n  - {a: 1\n")
    assert "not valid YAML" in str(err) and "line" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(tmp_path / "nope.yaml")


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in str(_error(tmp_path, "- 1\n- 2\n"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2m", 120),
        ("30s", 30),
        ("10ms", 0.01),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        (7, 7),
        ("0.5", 0.5),
    ],
)
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 parsecs", "m", "1x", True, None])
def test_bad_durations(text) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
