"""The pacing each built-in scenario declares: requests and idle seconds per iteration."""

from __future__ import annotations

import pytest

from loadgate.plan import load_plan
from loadgate.scenarios import declared_pacing, pacing_of, scenario

from ..conftest import PLAN_FILE  # type: ignore[misc]


def test_the_seed_plans_scenarios_declare_their_pacing() -> None:
    plan = load_plan(PLAN_FILE)
    api = plan.stages["api"].scenarios["api_mix"]
    # mix 0.2 + 0.4 + 0.15 + 0.15 + 0.1 = 1 request per iteration, think 0-3 s: 1.5 s
    assert pacing_of(api.exec, api.options) == pytest.approx((1.0, 1.5))
    session = plan.stages["session"].scenarios
    state = session["session_state"]
    # a create, 10 updates and a snapshot; 10 × 0.5 s apart and a think of 0-2 s
    assert pacing_of(state.exec, state.options) == pytest.approx((12.0, 6.0))
    handoff = session["handoff"]
    assert pacing_of(handoff.exec, handoff.options) == pytest.approx((1.0, 1.5))
    ws = plan.stages["websocket"].scenarios["ws_connections"]
    assert pacing_of(ws.exec, ws.options) is None  # a held connection: no per-request pacing


def test_pacing_follows_the_options() -> None:
    mix = {"login": 0, "get_session": 1, "snapshot": 0.5, "devices": 0, "refresh": 0}
    assert pacing_of("syncbridge.api_mix", {"mix": mix, "think_time": ["1s", "2s"]}) == (1.5, 1.5)
    assert pacing_of(
        "syncbridge.session_state", {"updates": 3, "update_interval": "100ms", "think_time": [0, 0]}
    ) == pytest.approx((5.0, 0.3))
    assert pacing_of("basic.get", {}) == (1.0, 0.0)
    assert pacing_of("basic.get", {"think_time": [0, 3]}) == (1.0, 1.5)


def test_no_declaration_or_one_that_does_not_fit_is_no_pacing() -> None:
    assert pacing_of("no.such.module:fn", {}) is None

    @scenario()
    async def silent(vu) -> None:
        return None

    @scenario(pacing=lambda options: (1, options["missing"]))
    async def misfit(vu) -> None:
        return None

    @scenario(pacing=lambda options: (-1, 2))
    async def negative(vu) -> None:
        return None

    assert declared_pacing(silent, {}) is None
    assert declared_pacing(misfit, {}) is None
    assert declared_pacing(negative, {}) is None
