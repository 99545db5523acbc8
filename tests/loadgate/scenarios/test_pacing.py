"""The pacing each built-in scenario declares: requests and idle seconds per iteration, the
idle seconds between an iteration's requests, and the idle time's standard deviation."""

from __future__ import annotations

import math

import pytest

from loadgate.plan import load_plan
from loadgate.scenarios import declared_pacing, pacing_of, scenario

from ..conftest import PLAN_FILE  # type: ignore[misc]


def test_the_seed_plans_scenarios_declare_their_pacing() -> None:
    plan = load_plan(PLAN_FILE)
    api = plan.stages["api"].scenarios["api_mix"]
    # mix 0.2 + 0.4 + 0.15 + 0.15 + 0.1 = 1 request per iteration, then think 0-3 s: 1.5 s on
    # average, all of it after the requests, standard deviation 3 / √12
    sd3 = 3 / math.sqrt(12)
    assert pacing_of(api.exec, api.options) == pytest.approx((1.0, 1.5, 0.0, sd3))
    session = plan.stages["session"].scenarios
    state = session["session_state"]
    # a create, 10 updates and a snapshot; 10 × 0.5 s apart (between the first request and the
    # last: fixed) and a think of 0-2 s after them
    assert pacing_of(state.exec, state.options) == pytest.approx(
        (12.0, 6.0, 5.0, 2 / math.sqrt(12))
    )
    handoff = session["handoff"]
    assert pacing_of(handoff.exec, handoff.options) == pytest.approx((1.0, 1.5, 0.0, sd3))
    ws = plan.stages["websocket"].scenarios["ws_connections"]
    assert pacing_of(ws.exec, ws.options) is None  # a held connection: no per-request pacing


def test_pacing_follows_the_options() -> None:
    mix = {"login": 0, "get_session": 1, "snapshot": 0.5, "devices": 0, "refresh": 0}
    assert pacing_of(
        "syncbridge.api_mix", {"mix": mix, "think_time": ["1s", "2s"]}
    ) == pytest.approx((1.5, 1.5, 0.0, 1 / math.sqrt(12)))
    assert pacing_of(
        "syncbridge.session_state", {"updates": 3, "update_interval": "100ms", "think_time": [0, 0]}
    ) == pytest.approx((5.0, 0.3, 0.3, 0.0))
    # basic.get: one request, then a think time uniform in [a, b] (sd (b - a) / √12)
    assert pacing_of("basic.get", {}) == (1.0, 0.0, 0.0, 0.0)
    assert pacing_of("basic.get", {"think_time": [0, 3]}) == pytest.approx(
        (1.0, 1.5, 0.0, 3 / math.sqrt(12))
    )


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

    @scenario(pacing=lambda options: (2, 1, 1.5))  # more seconds between requests than idle
    async def overspread(vu) -> None:
        return None

    @scenario(pacing=lambda options: (2, 1, 0.5, -0.1))
    async def negative_sd(vu) -> None:
        return None

    @scenario(pacing=lambda options: (2, 1, 0.5, 0.1, 7))
    async def too_long(vu) -> None:
        return None

    for fn in (silent, misfit, negative, overspread, negative_sd, too_long):
        assert declared_pacing(fn, {}) is None, fn.__name__


def test_a_declaration_may_name_its_spread_and_standard_deviation() -> None:
    @scenario(pacing=lambda options: (3, 2.5, 2))
    async def spread(vu) -> None:
        return None

    @scenario(pacing=lambda options: (3, 2.5, 2, 0.25))
    async def full(vu) -> None:
        return None

    assert declared_pacing(spread, {}) == (3.0, 2.5, 2.0, None)
    pacing = declared_pacing(full, {})
    assert pacing == (3.0, 2.5, 2.0, 0.25)
    assert pacing is not None and (pacing.requests, pacing.idle) == (3.0, 2.5)
    assert (pacing.spread, pacing.idle_sd) == (2.0, 0.25)
