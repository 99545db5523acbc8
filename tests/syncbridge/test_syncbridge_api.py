"""The HTTP API of the reference service, against the real server over real HTTP."""

from __future__ import annotations

import pytest

from tests.support.helpers import wait_for
from tests.syncbridge.sbtestlib import PASSWORD, Api

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------------------------ auth


def test_register_returns_tokens_and_user(api: Api):
    r = api.post(
        "/api/v1/auth/register",
        {"email": "Alice@Example.com", "password": PASSWORD, "name": "Alice"},
    )
    assert r.status_code == 201
    body = r.json()
    assert body["accessToken"] and body["refreshToken"]
    assert body["accessToken"] != body["refreshToken"]
    assert body["user"]["email"] == "alice@example.com"
    assert body["user"]["name"] == "Alice"
    assert isinstance(body["user"]["id"], int)
    assert body["expiresIn"] == 900
    assert r.headers["Content-Type"].startswith("application/json")


def test_register_existing_email_is_409(api: Api):
    user = api.register()
    r = api.post(
        "/api/v1/auth/register", {"email": user["email"].upper(), "password": PASSWORD, "name": "x"}
    )
    assert r.status_code == 409
    assert "error" in r.json()


@pytest.mark.parametrize(
    "body",
    [
        {"password": PASSWORD},
        {"email": "no-at-sign", "password": PASSWORD},
        {"email": "a@b.c", "password": "short"},
        {"email": 5, "password": PASSWORD},
        {"email": "a@b.c", "password": ["x"] * 9},
        {"email": "a@b.c", "password": PASSWORD, "name": {"n": 1}},
    ],
)
def test_register_rejects_bad_fields(api: Api, body):
    r = api.post("/api/v1/auth/register", body)
    assert r.status_code == 400
    assert isinstance(r.json()["error"], str)


def test_login_ok_and_bad_credentials(api: Api):
    user = api.register()
    ok = api.post("/api/v1/auth/login", {"email": user["email"], "password": PASSWORD})
    assert ok.status_code == 200
    body = ok.json()
    assert body["user"]["id"] == user["user"]["id"]
    # the new access token works
    assert api.get("/api/v1/sessions/none", token=body["accessToken"]).status_code == 404
    bad = api.post("/api/v1/auth/login", {"email": user["email"], "password": PASSWORD + "x"})
    assert bad.status_code == 401
    unknown = api.post("/api/v1/auth/login", {"email": "ghost@example.com", "password": PASSWORD})
    assert unknown.status_code == 401
    assert bad.json() == unknown.json()  # does not reveal which emails exist


def test_refresh_rotates_and_old_token_is_single_use(api: Api):
    user = api.register()
    r1 = api.post("/api/v1/auth/refresh", {"refreshToken": user["refresh"]})
    assert r1.status_code == 200
    t1 = r1.json()
    assert t1["refreshToken"] != user["refresh"]
    assert api.get("/api/v1/sessions/x", token=t1["accessToken"]).status_code == 404
    # the old refresh token was rotated away
    again = api.post("/api/v1/auth/refresh", {"refreshToken": user["refresh"]})
    assert again.status_code == 401
    # the new one works once
    r2 = api.post("/api/v1/auth/refresh", {"refreshToken": t1["refreshToken"]})
    assert r2.status_code == 200


def test_refresh_rejects_access_tokens_and_garbage(api: Api):
    user = api.register()
    assert api.post("/api/v1/auth/refresh", {"refreshToken": user["access"]}).status_code == 401
    assert api.post("/api/v1/auth/refresh", {"refreshToken": "x.y.z"}).status_code == 401
    assert api.post("/api/v1/auth/refresh", {}).status_code == 400


def test_refresh_token_is_not_an_access_token(api: Api):
    user = api.register()
    r = api.get("/api/v1/sessions/s", token=user["refresh"])
    assert r.status_code == 401


# -------------------------------------------------------------------------- auth enforcement


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/sessions"),
        ("GET", "/api/v1/sessions/s1"),
        ("PUT", "/api/v1/sessions/s1"),
        ("POST", "/api/v1/sessions/s1/snapshot"),
        ("GET", "/api/v1/sessions/s1/devices"),
        ("POST", "/api/v1/sessions/s1/handoff"),
    ],
)
def test_session_routes_need_a_valid_access_token(api: Api, method, path):
    body = {"sessionId": "s1", "state": {}}
    none = api.call(method, path, json_body=body)
    assert none.status_code == 401
    assert none.json()["error"] == "missing bearer token"
    bad = api.call(method, path, json_body=body, token="not-a-jwt")
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid token"
    scheme = api.call(method, path, json_body=body, headers={"Authorization": "Basic abc"})
    assert scheme.status_code == 401


def test_tampered_token_is_rejected(api: Api):
    user = api.register()
    head, payload, sig = user["access"].split(".")
    tampered = f"{head}.{payload}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    assert api.get("/api/v1/sessions/s", token=tampered).status_code == 401


def test_expired_token_is_rejected(start_syncbridge, tmp_path):
    svc = start_syncbridge(tmp_path, token_ttl=1)
    api = Api(svc.url)
    user = api.register()
    api.create_session(user["access"], "s1")
    assert api.get("/api/v1/sessions/s1", token=user["access"]).status_code == 200
    # a TTL of 1 s, in whole seconds: refused within 2 s
    wait_for(
        lambda: api.get("/api/v1/sessions/s1", token=user["access"]).status_code == 401,
        timeout=2.1,
    )
    r = api.get("/api/v1/sessions/s1", token=user["access"])
    assert r.status_code == 401
    assert r.json()["error"] == "token expired"
    # the refresh token still gives a fresh access token
    fresh = api.post("/api/v1/auth/refresh", {"refreshToken": user["refresh"]}).json()
    assert api.get("/api/v1/sessions/s1", token=fresh["accessToken"]).status_code == 200


def test_other_users_session_is_404_and_ids_are_per_user(api: Api):
    alice, bob = api.register("alice"), api.register("bob")
    api.create_session(alice["access"], "shared-name", {"owner": "alice"})
    for method, path in [
        ("GET", "/api/v1/sessions/shared-name"),
        ("PUT", "/api/v1/sessions/shared-name"),
        ("POST", "/api/v1/sessions/shared-name/snapshot"),
        ("GET", "/api/v1/sessions/shared-name/devices"),
        ("POST", "/api/v1/sessions/shared-name/handoff"),
    ]:
        body = {
            "state": {"owner": "bob"},
            "fromDeviceId": "a",
            "toDeviceId": "b",
            "handoffToken": "t",
        }
        r = api.call(method, path, json_body=body, token=bob["access"])
        assert r.status_code == 404, (method, path, r.text)
    # bob may use the same id for his own session; alice's is untouched
    api.create_session(bob["access"], "shared-name", {"owner": "bob"})
    got = api.get("/api/v1/sessions/shared-name", token=alice["access"]).json()
    assert got["state"] == {"owner": "alice"}
    assert got["version"] == 1


# ---------------------------------------------------------------------------------- sessions


def test_session_lifecycle(api: Api):
    user = api.register()
    tok = user["access"]
    created = api.post(
        "/api/v1/sessions", {"sessionId": "session-1", "state": {"data": "a"}}, token=tok
    )
    assert created.status_code == 201
    assert created.json()["version"] == 1
    assert created.json()["sessionId"] == "session-1"

    dup = api.post("/api/v1/sessions", {"sessionId": "session-1", "state": {}}, token=tok)
    assert dup.status_code == 409

    got = api.get("/api/v1/sessions/session-1", token=tok)
    assert got.status_code == 200
    body = got.json()
    assert set(body) == {"sessionId", "state", "version", "activeDeviceId", "updatedAt"}
    assert body["state"] == {"data": "a"}
    assert body["activeDeviceId"] is None

    versions = []
    for i in range(3):
        put = api.put("/api/v1/sessions/session-1", {"state": {"data": i}}, token=tok)
        assert put.status_code == 200
        assert put.json()["sessionId"] == "session-1"
        versions.append(put.json()["version"])
    assert versions == [2, 3, 4]
    got = api.get("/api/v1/sessions/session-1", token=tok).json()
    assert got["state"] == {"data": 2}
    assert got["version"] == 4
    assert got["updatedAt"] >= body["updatedAt"]

    assert api.get("/api/v1/sessions/missing", token=tok).status_code == 404
    assert api.put("/api/v1/sessions/missing", {"state": {}}, token=tok).status_code == 404


def test_session_validation(api: Api):
    tok = api.register()["access"]
    for body in [
        {},
        {"sessionId": ""},
        {"sessionId": "a/b"},
        {"sessionId": "x" * 129},
        {"sessionId": 7},
        {"sessionId": "ok", "state": [1, 2]},
        {"sessionId": "ok", "state": "s"},
    ]:
        r = api.post("/api/v1/sessions", body, token=tok)
        assert r.status_code == 400, body
    api.create_session(tok, "v")
    assert api.put("/api/v1/sessions/v", {"state": 3}, token=tok).status_code == 400
    assert api.put("/api/v1/sessions/v", {}, token=tok).status_code == 400


def test_snapshot(api: Api):
    tok = api.register()["access"]
    api.create_session(tok, "snap")
    api.put("/api/v1/sessions/snap", {"state": {"n": 1}}, token=tok)
    r = api.post(
        "/api/v1/sessions/snap/snapshot",
        {"state": {"timestamp": 1, "data": "x"}, "metadata": {"label": "load-test-snapshot"}},
        token=tok,
    )
    assert r.status_code == 201
    body = r.json()
    assert body["sessionId"] == "snap"
    assert body["version"] == 2
    assert body["snapshotId"] and body["createdAt"]
    r2 = api.post("/api/v1/sessions/snap/snapshot", {"state": {}}, token=tok)
    assert r2.status_code == 201
    assert r2.json()["snapshotId"] != body["snapshotId"]
    assert api.post("/api/v1/sessions/snap/snapshot", {}, token=tok).status_code == 400
    assert (
        api.post(
            "/api/v1/sessions/snap/snapshot", {"state": {}, "metadata": "m"}, token=tok
        ).status_code
        == 400
    )
    assert api.post("/api/v1/sessions/nope/snapshot", {"state": {}}, token=tok).status_code == 404


def test_handoff_and_devices(api: Api):
    tok = api.register()["access"]
    api.create_session(tok, "h")
    devices = api.get("/api/v1/sessions/h/devices", token=tok)
    assert devices.status_code == 200
    assert devices.json() == {"sessionId": "h", "activeDeviceId": None, "devices": []}

    def handoff(frm, to):
        return api.post(
            "/api/v1/sessions/h/handoff",
            {"fromDeviceId": frm, "toDeviceId": to, "handoffToken": "tok"},
            token=tok,
        )

    # no active device yet: any fromDeviceId is accepted
    r = handoff("phone", "laptop")
    assert r.status_code == 200
    assert r.json() == {"sessionId": "h", "activeDeviceId": "laptop"}
    # only the active device can hand over
    bad = handoff("phone", "tablet")
    assert bad.status_code == 409
    assert bad.json()["activeDeviceId"] == "laptop"
    assert handoff("laptop", "tablet").status_code == 200

    got = api.get("/api/v1/sessions/h", token=tok).json()
    assert got["activeDeviceId"] == "tablet"
    listed = api.get("/api/v1/sessions/h/devices", token=tok).json()
    assert listed["activeDeviceId"] == "tablet"
    ids = [d["deviceId"] for d in listed["devices"]]
    assert sorted(ids) == ["laptop", "phone", "tablet"]
    for d in listed["devices"]:
        assert d["connected"] is False
        assert d["lastSeen"].endswith("Z")

    for body in [
        {"fromDeviceId": "tablet", "toDeviceId": "x"},
        {"fromDeviceId": "tablet", "toDeviceId": "x", "handoffToken": ""},
        {"fromDeviceId": 1, "toDeviceId": "x", "handoffToken": "t"},
    ]:
        assert api.post("/api/v1/sessions/h/handoff", body, token=tok).status_code == 400
    assert (
        api.post(
            "/api/v1/sessions/none/handoff",
            {"fromDeviceId": "a", "toDeviceId": "b", "handoffToken": "t"},
            token=tok,
        ).status_code
        == 404
    )


# ------------------------------------------------------------------------------- bad input


def test_bad_input_gets_clear_4xx_json(api: Api):
    tok = api.register()["access"]
    cases = [
        ("POST", "/api/v1/auth/login", b"{not json", 400),
        ("POST", "/api/v1/auth/login", b"[1,2]", 400),
        ("POST", "/api/v1/auth/login", b"", 400),
        ("POST", "/api/v1/auth/login", b'"str"', 400),
        ("POST", "/api/v1/auth/register", b"\xff\xfe", 400),
        ("POST", "/api/v1/sessions", b'{"sessionId": NaN}', 400),
        ("GET", "/api/v1/nothing", None, 404),
        ("GET", "/", None, 404),
        ("DELETE", "/api/v1/sessions/x", None, 405),
        ("GET", "/api/v1/auth/login", None, 405),
        ("PATCH", "/healthz", None, 405),
    ]
    for method, path, data, status in cases:
        r = api.call(method, path, data=data, token=tok)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/json")
        assert isinstance(r.json()["error"], str)
    assert "GET" in api.call("DELETE", "/api/v1/sessions/x").headers["Allow"]


def test_oversized_body_is_413(api: Api):
    tok = api.register()["access"]
    api.create_session(tok, "big")
    big = b'{"state": {"x": "' + b"a" * (1024 * 1024 + 10) + b'"}}'
    r = api.call("PUT", "/api/v1/sessions/big", data=big, token=tok)
    assert r.status_code == 413
    assert r.json()["error"] == "request body too large"


def test_oversized_chunked_body_is_413(api: Api):
    tok = api.register()["access"]

    def gen():
        yield b'{"state": {"x": "'
        for _ in range(20):
            yield b"a" * 65536
        yield b'"}}'

    r = api.http.put(
        api.url + "/api/v1/sessions/big2",
        data=gen(),
        headers={"Authorization": f"Bearer {tok}"},
        timeout=10,
    )
    assert r.status_code == 413


def test_malformed_http_gets_json_400(shared_service):
    import socket

    host, port = "127.0.0.1", shared_service.port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Header: y\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400"
    assert b"application/json" in head
    assert b'"error":"bad HTTP request' in body
