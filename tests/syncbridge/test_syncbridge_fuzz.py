"""Property-based fuzz of the API: random methods, paths, headers and bodies never get a 5xx
(no fault set), and every 4xx is a JSON {error}."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.syncbridge.sbtestlib import API_ROUTES, Api, metric, scrape, ws_url

pytestmark = pytest.mark.timeout(300)

ROUTES = [
    *API_ROUTES,
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/admin/faults",
    "/admin/release",
    "/ws",
]
FIELDS = [
    "email",
    "password",
    "name",
    "refreshToken",
    "sessionId",
    "state",
    "metadata",
    "fromDeviceId",
    "toDeviceId",
    "handoffToken",
    "operations",
    "version",
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
# Bodies shaped like the API's, with random values, to get past the first checks.
api_shaped = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5)
ids = st.one_of(
    st.sampled_from(["s1", "session-1", "", "a" * 200, "..", "%00", "x/y"]),
    st.text(max_size=30),
)


@st.composite
def requests_(draw):
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]))
    if draw(st.integers(0, 9)) == 0:
        path = "/" + "/".join(
            quote(p, safe="") for p in draw(st.lists(st.text(max_size=8), max_size=4))
        )
    else:
        path = draw(st.sampled_from(ROUTES)).replace("{id}", quote(draw(ids), safe=""))
    kind = draw(st.sampled_from(["shaped", "json", "bytes", "none"]))
    if kind == "shaped":
        body = json.dumps(draw(api_shaped), allow_nan=True).encode()
    elif kind == "json":
        body = json.dumps(draw(json_values), allow_nan=True).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
    else:
        body = None
    auth = draw(st.sampled_from(["valid", "none", "garbage", "basic"]))
    return method, path, body, auth


@pytest.fixture(scope="module")
def token(api: Api) -> str:
    tok = api.register("fuzz")["access"]
    api.create_session(tok, "s1", {"data": 1})
    return tok


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(req=requests_())
def test_http_fuzz_never_5xx(api: Api, token: str, req):
    method, path, body, auth = req
    headers = {"Content-Type": "application/json"}
    if auth == "valid":
        headers["Authorization"] = f"Bearer {token}"
    elif auth == "garbage":
        headers["Authorization"] = "Bearer \x01garbage"
    elif auth == "basic":
        headers["Authorization"] = "Basic Zm9vOmJhcg=="
    r = api.http.request(method, api.url + path, data=body, headers=headers, timeout=10)
    assert r.status_code < 500, (method, path, body, r.status_code, r.text[:300])
    if 400 <= r.status_code < 500 and method != "HEAD":
        assert isinstance(r.json()["error"], str)


ws_messages = st.one_of(
    st.dictionaries(
        st.sampled_from(["type", "token", "deviceId", "sessionId", "delta", "timestamp"]),
        json_values,
        max_size=5,
    ).map(json.dumps),
    st.fixed_dictionaries(
        {
            "type": st.just("state_update"),
            "sessionId": st.sampled_from(["s1", "nope", ""]),
            "delta": st.dictionaries(
                st.sampled_from(["operations", "version"]), json_values, max_size=2
            ),
        }
    ).map(json.dumps),
    st.text(max_size=50),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(first=ws_messages, rest=st.lists(ws_messages, max_size=6))
def test_ws_fuzz_never_crashes(shared_service, token: str, first, rest):
    async def scenario():
        async with aiohttp.ClientSession() as s:
            # a random first message: answered with auth_ok only if it really was a valid auth
            ws = await s.ws_connect(ws_url(shared_service.url))
            await ws.send_str(first)
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.TEXT)
            if msg.type == aiohttp.WSMsgType.CLOSE:
                assert ws.close_code == 1008
            await ws.close()
            # random messages after a good auth: every one gets exactly one JSON reply
            ws = await s.ws_connect(ws_url(shared_service.url))
            await ws.send_json({"type": "auth", "token": token, "deviceId": "fuzz"})
            assert (await ws.receive_json(timeout=5))["type"] == "auth_ok"
            for text in rest:
                await ws.send_str(text)
                reply = await ws.receive_json(timeout=5)
                assert reply["type"] in ("heartbeat_ack", "state_ack", "error"), reply
            await ws.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_after_fuzzing_no_5xx_was_counted_and_nothing_unhandled(shared_service, api: Api):
    text = scrape(api)
    for status in ("500", "502", "503", "504"):
        if f'status="{status}"' in text:
            assert metric(text, "syncbridge_http_requests_total", status=status) == 0
    assert not [r for r in shared_service.log_records() if r["level"] == "error"]
    assert api.get("/readyz").status_code == 200
