"""Profiles and triggers: operators configure, a trigger only picks a release to gate (#10).

Property-based (Hypothesis) over a trigger's ``conf``: nothing outside the allowed keys and the
profile's bounds is accepted, every refusal is a clear RunConfigError, and nothing is written
(the run folder is created only by ``pipeline.prepare`` after the config resolved).
"""

from __future__ import annotations

import json
import math

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from loadgate import pipeline
from loadgate.config.profiles import (
    TRIGGER_KEYS,
    Limits,
    ProfileError,
    load_profiles,
    load_profiles_file,
    shipped_profiles,
)
from loadgate.config.run import RunConfigError, resolve_trigger
from tests.support.helpers import one_stage_plan, reference_run, scenario

SHOP = {
    "plan": "harmonyflow-10k",
    "allowlist": ["https://shop.example.com"],
    "default_target": "https://shop.example.com",
    "limits": {"max_scale": 0.5, "min_time_scale": 0.01, "max_time_scale": 1},
    "scale": 0.1,
    "rollback": {"type": "webhook", "url": "https://deploy.example.com/rollback"},
    "artifacts_root": "s3://gate-runs/shop",
    "slack_channel": "#shop-deploys",
}


def profiles():
    return load_profiles({"shop": SHOP})


def test_the_shipped_profile_is_the_documented_default_run() -> None:
    config = resolve_trigger({}, profiles=shipped_profiles())
    assert config.profile == "syncbridge" and config.target_url == "http://127.0.0.1:8080"
    assert config.plan == "harmonyflow-10k" and config.rollback.type == "syncbridge"
    assert config.stages == ["api", "websocket", "session"]


def test_a_profile_supplies_everything_a_trigger_does_not() -> None:
    config = resolve_trigger(
        {"profile": "shop", "release": "v42", "scale": 0.1, "time_scale": 0.5},
        profiles=profiles(),
    )
    assert config.target_url == "https://shop.example.com" and config.release == "v42"
    assert config.artifacts_root == "s3://gate-runs/shop"
    assert str(config.rollback.url) == "https://deploy.example.com/rollback"
    assert config.slack_channel == "#shop-deploys" and config.limits.max_scale == 0.5
    # the deploy event fills in what the trigger left empty, never over it
    event = {"release": "v43", "target_url": "https://shop.example.com/"}
    assert resolve_trigger({"profile": "shop"}, profiles=profiles(), asset_extra=event).release == (
        "v43"
    )
    assert (
        resolve_trigger(
            {"profile": "shop", "release": "v44"}, profiles=profiles(), asset_extra=event
        ).release
        == "v44"
    )


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"rollback": {"type": "command", "command": ["sh", "-c", "id"]}}, "may not set rollback"),
        ({"target_log": "/proc/self/environ"}, "may not set target_log"),
        ({"plan": "/tmp/evil.yaml"}, "may not set plan"),
        ({"kubernetes": {"image": "evil:latest"}}, "may not set kubernetes"),
        ({"artifacts_root": "s3://someone-elses-bucket"}, "may not set artifacts_root"),
        ({"profile": "nope"}, "unknown profile 'nope' (profiles: shop, syncbridge)"),
        ({"profile": "shop", "target_url": "https://evil.example.com"}, "not on the allowlist"),
        ({"profile": "shop", "scale": 0.6}, "above profile 'shop''s limit (0.5)"),
        ({"profile": "shop", "time_scale": 0.001}, "outside profile 'shop''s bounds"),
        ({"profile": "syncbridge", "time_scale": 2}, "outside profile 'syncbridge''s bounds"),
        ({}, "name a profile: there are several (shop, syncbridge)"),
        ({"scale": math.inf}, "finite"),
        ({"scale": 0}, "greater than 0"),
        ({"profile": "shop", "stages": []}, "stages"),
        ({"profile": "shop", "stages": ["api", "checkout"]}, "stages: 'checkout' not in plan"),
    ],
)
def test_refused_with_a_clear_message(conf, message) -> None:
    with pytest.raises(RunConfigError) as caught:
        resolve_trigger(conf, profiles=profiles())
    assert message in str(caught.value)


def test_the_refusal_lists_what_a_trigger_may_set() -> None:
    with pytest.raises(RunConfigError) as caught:
        resolve_trigger({"backend": "kubernetes", "shards": 3}, profiles=profiles())
    text = str(caught.value)
    assert "may not set backend, shards" in text
    assert all(key in text for key in TRIGGER_KEYS)


KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)
VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.text(max_size=40),
    st.lists(st.text(max_size=10), max_size=3),
)


@pytest.mark.slow
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(conf=st.dictionaries(KEY, VALUE, max_size=6))
def test_any_conf_is_accepted_only_within_the_allowed_set(conf) -> None:
    """300 confs (derandomized: the same examples every run); each either resolves within the
    profile or is refused with a RunConfigError that says why."""
    try:
        config = resolve_trigger(conf, profiles=profiles())
    except RunConfigError as exc:
        assert str(exc)
        return
    given_keys = {k for k, v in conf.items() if v is not None}
    assert given_keys <= set(TRIGGER_KEYS)
    profile = profiles()[config.profile]
    assert 0 < config.scale <= profile.limits.max_scale
    assert profile.limits.min_time_scale <= config.time_scale <= profile.limits.max_time_scale
    assert config.artifacts_root == profile.artifacts_root
    assert config.rollback == profile.rollback and config.plan == profile.plan


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    scale=st.floats(allow_nan=True, allow_infinity=True),
    time_scale=st.floats(allow_nan=True, allow_infinity=True),
)
def test_scales_outside_the_profile_are_refused(scale, time_scale) -> None:
    limits = Limits(max_scale=0.5, min_time_scale=0.01, max_time_scale=1)
    inside = (
        math.isfinite(scale)
        and 0 < scale <= limits.max_scale
        and math.isfinite(time_scale)
        and limits.min_time_scale <= time_scale <= limits.max_time_scale
    )
    conf = {"profile": "shop", "scale": scale, "time_scale": time_scale}
    if inside:
        assert resolve_trigger(conf, profiles=profiles()).scale == scale
    else:
        with pytest.raises(RunConfigError):
            resolve_trigger(conf, profiles=profiles())


def test_profiles_from_yaml_or_json_and_bad_keys_named(tmp_path) -> None:
    from_json = load_profiles(json.dumps({"shop": SHOP}))
    from_yaml = load_profiles(yaml.safe_dump({"shop": SHOP}))
    assert from_json == from_yaml and set(from_json) == {"shop", "syncbridge"}
    path = tmp_path / "profiles.yaml"
    path.write_text(
        yaml.safe_dump({"syncbridge": {"plan": "harmonyflow-10k", "allowlist": ["10.0.0.0/8"]}})
    )
    assert load_profiles_file(path)["syncbridge"].allowlist == ["10.0.0.0/8"]  # replaced
    for data, message in [
        ({"shop": {**SHOP, "limits": {"max_scale": 50}}}, "profiles.shop.limits.max_scale"),
        ({"shop": {**SHOP, "rollbak": {}}}, "profiles.shop.rollbak: Extra inputs"),
        ({"shop": {**SHOP, "plan": None}}, "profiles.shop.plan: Input should be a valid string"),
        ({"shop": {k: v for k, v in SHOP.items() if k != "plan"}}, "shop.plan: Field required"),
        ({"Shop!": SHOP}, "'Shop!' is not a profile name"),
        ({"shop": ["not", "a", "mapping"]}, "profiles.shop: must be a mapping"),
        ("[1, 2]", "must be a mapping of profile name"),
        ("{unclosed", "not JSON or YAML"),
        ({"shop": {**SHOP, "limits": {"max_stage_s": float("inf")}}}, "max_stage_s"),
        ({"shop": {**SHOP, "scale": 0.8}}, "scale 0.8 is above limits.max_scale"),
        ({"shop": {**SHOP, "allowlist": ["api.example.com:8443"]}}, "profiles.shop.allowlist"),
    ]:
        with pytest.raises(ProfileError) as caught:
            load_profiles(data)
        assert message in str(caught.value), (message, str(caught.value))
    with pytest.raises(ProfileError, match="profiles file"):
        load_profiles_file(tmp_path / "missing.yaml")


def test_a_trigger_naming_no_profile_gets_the_only_one_for_the_dags_plan(
    tmp_path, monkeypatch
) -> None:
    assert set(shipped_profiles()) == {"syncbridge"}  # the example's, by entry point
    assert resolve_trigger({}, profiles=shipped_profiles()).profile == "syncbridge"
    with pytest.raises(RunConfigError, match=r"name a profile: there are several \(shop, sync"):
        resolve_trigger({}, profiles=profiles())  # both run harmonyflow-10k
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "shop.yaml").write_text(yaml.safe_dump(one_stage_plan({}, name="shop")))
    monkeypatch.setenv("LOADGATE_PLANS_DIR", str(plans))
    both = load_profiles({"shop": {**SHOP, "plan": "shop"}})
    assert resolve_trigger({}, profiles=both, plan="harmonyflow-10k").profile == "syncbridge"
    with pytest.raises(RunConfigError) as caught:
        resolve_trigger({"profile": "shop"}, profiles=both, plan="harmonyflow-10k")
    assert "profile 'shop' runs plan 'shop', not this DAG's plan 'harmonyflow-10k'" in str(
        caught.value
    )
    with pytest.raises(RunConfigError, match="no profile for plan 'other'"):
        resolve_trigger({}, profiles=both, plan="other")


def _plan_file(tmp_path, **probe) -> str:
    plan = one_stage_plan({"probe": scenario("constant-vus", **probe)}, stage="api")
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ({"vus": 10**7, "duration": "10s"}, "users, above the limit of 20,000"),
        ({"vus": 1, "duration": "100h"}, "s long, above the limit"),
    ],
)
def test_load_beyond_the_profile_is_refused_before_anything_is_written(
    tmp_path, probe, message
) -> None:
    from loadgate.config.run import build_run_config

    config = build_run_config(
        {
            **reference_run(),
            "target_url": "http://127.0.0.1:9",
            "plan": _plan_file(tmp_path, **probe),
            "stages": ["api"],
            "artifacts_root": str(tmp_path / "artifacts"),
        }
    )
    with pytest.raises(ValueError) as caught:
        pipeline.prepare(config, "r1")
    assert message in str(caught.value)
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize(
    "probe",
    [{"vus": 1, "duration": math.inf}, {"vus": 1, "duration": ".inf"}, {"vus": math.nan}],
)
def test_plans_refuse_infinite_or_nan_numbers(tmp_path, probe) -> None:
    from loadgate.plan import load_plan
    from loadgate.plan.errors import PlanError

    plan = one_stage_plan({"probe": scenario("constant-vus", **probe)}, stage="api")
    text = yaml.safe_dump(plan).replace("'.inf'", ".inf")
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises((PlanError, ValueError)):
        load_plan(path)


def test_a_plan_naming_a_module_outside_the_allowed_packages_imports_nothing(
    tmp_path, monkeypatch
) -> None:
    """The module would write a file when imported: it is refused before any import."""
    package = tmp_path / "sideeffect_pkg"
    package.mkdir()
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from loadgate.config.run import build_run_config

    plan = one_stage_plan(
        {"probe": scenario("constant-vus", vus=1, duration="1s", exec="sideeffect_pkg:fn")},
        stage="api",
    )
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    config = build_run_config(
        {
            **reference_run(),
            "target_url": "http://127.0.0.1:9",
            "plan": str(path),
            "stages": ["api"],
            "artifacts_root": str(tmp_path / "artifacts"),
        }
    )
    with pytest.raises(ValueError, match="not in an allowed package"):
        pipeline.prepare(config, "r1")
    assert not marker.exists() and not (tmp_path / "artifacts").exists()
    # an operator allows the package: then (and only then) it is imported
    monkeypatch.setenv("LOADGATE_SCENARIO_PACKAGES", "sideeffect_pkg")
    from loadgate.scenarios import ScenarioError, resolve

    with pytest.raises(ScenarioError, match="has no fn"):
        resolve("sideeffect_pkg:fn")
    assert marker.exists()


NUMBER = st.one_of(
    st.integers(min_value=-5, max_value=10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([".inf", "-.inf", ".nan", "1e400", "0", "-1"]),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(vus=NUMBER, duration=NUMBER, shards=NUMBER)
@example(vus=5, duration=10, shards=2)  # accepted: planned within the caps
@example(vus=20_001, duration=10, shards=1)  # one user above the cap
def test_any_plan_numbers_are_bounded_or_refused_before_anything_is_written(
    tmp_path_factory, vus, duration, shards
) -> None:
    """150 plans (derandomized) with any users, duration and shards: each is refused with a
    clear error before the run folder exists, or prepared within the default profile's caps."""
    from loadgate.config.run import build_run_config
    from loadgate.plan.errors import PlanError

    tmp = tmp_path_factory.mktemp("plan")
    plan = one_stage_plan(
        {"probe": scenario("constant-vus", vus="VUS", duration="DURATION")},
        stage="api",
        shards="SHARDS",
    )
    text = yaml.safe_dump(plan)
    for key, value in (("VUS", vus), ("DURATION", duration), ("SHARDS", shards)):
        literal = value if isinstance(value, str) else repr(value)
        literal = {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}.get(literal, literal)
        text = text.replace(key, literal)
    path = tmp / "plan.yaml"
    path.write_text(text)
    artifacts = tmp / "artifacts"
    try:
        config = build_run_config(
            {
                **reference_run(),
                "target_url": "http://127.0.0.1:9",
                "plan": str(path),
                "stages": ["api"],
                "artifacts_root": str(artifacts),
            }
        )
        record = pipeline.prepare(config, "r1")
    except (PlanError, RunConfigError, ValueError) as exc:
        assert str(exc)
        assert not artifacts.exists()
        return
    limits = config.limits
    for row in record.load:
        assert math.isfinite(row.duration_s) and row.start_s + row.duration_s <= (
            limits.max_stage_s
        )
        assert row.peak_total <= limits.max_vus
    assert len({row.shard for row in record.load}) <= limits.max_shards


def test_run_json_and_xcom_hold_a_webhook_as_scheme_and_host_only(tmp_path) -> None:
    secret_path = "/hooks/T000/B000/s3cr3t-path?token=abc"
    shop = {
        **SHOP,
        "rollback": {"type": "webhook", "url": f"https://deploy.example.com{secret_path}"},
    }
    config = resolve_trigger(
        {"profile": "shop", "release": "v1"}, profiles=load_profiles({"shop": shop})
    )
    assert str(config.rollback.url).endswith("token=abc")  # the action itself keeps it
    dumped = config.model_dump(mode="json")
    assert dumped["rollback"]["url"] == "https://deploy.example.com"
    assert "s3cr3t" not in json.dumps(dumped) and "s3cr3t" not in config.model_dump_json()
