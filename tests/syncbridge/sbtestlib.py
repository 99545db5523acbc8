"""Helpers for the reference-service tests: a small HTTP client, users, metrics parsing."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable
from typing import Any

import aiohttp
import requests
from prometheus_client.parser import text_string_to_metric_families

_counter = itertools.count()
PASSWORD = "LoadTest123!"
# the API's routes as the seed names them (written out here, not taken from the service)
API_ROUTES = [
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/sessions",
    "/api/v1/sessions/{id}",
    "/api/v1/sessions/{id}/snapshot",
    "/api/v1/sessions/{id}/devices",
    "/api/v1/sessions/{id}/handoff",
]


class Api:
    """requests against one service, with an optional bearer token."""

    def __init__(self, url: str):
        self.url = url
        self.http = requests.Session()

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> requests.Response:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body)
            h.setdefault("Content-Type", "application/json")
        return self.http.request(
            method, self.url + path, data=data, headers=h, timeout=timeout, allow_redirects=False
        )

    def get(self, path: str, **kw) -> requests.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw) -> requests.Response:
        return self.call("POST", path, json_body=body, **kw)

    def put(self, path: str, body: Any = None, **kw) -> requests.Response:
        return self.call("PUT", path, json_body=body, **kw)

    def register(self, prefix: str = "user") -> dict[str, Any]:
        email = f"{prefix}{next(_counter)}-{id(self)}@example.com"
        r = self.post(
            "/api/v1/auth/register", {"email": email, "password": PASSWORD, "name": prefix}
        )
        assert r.status_code == 201, r.text
        body = r.json()
        return {
            "email": email,
            "password": PASSWORD,
            "access": body["accessToken"],
            "refresh": body["refreshToken"],
            "user": body["user"],
        }

    def create_session(self, token: str, sid: str, state: dict | None = None) -> dict:
        r = self.post("/api/v1/sessions", {"sessionId": sid, "state": state or {}}, token=token)
        assert r.status_code == 201, r.text
        return r.json()


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a text exposition, parsed by prometheus_client's own parser."""
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def metric(text: str, name: str, *, absent: float | None = None, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``; ``absent`` if given when
    there is none (a labelled counter has no sample before its first count)."""
    total = 0.0
    found = False
    for n, lab, value in parse_metrics(text):
        if n == name and all(lab.get(k) == v for k, v in labels.items()):
            total += value
            found = True
    if not found and absent is not None:
        return absent
    assert found, f"no sample {name}{labels}"
    return total


def scrape(api: Api) -> str:
    r = api.get("/metrics")
    assert r.status_code == 200
    return r.text


def run(coro: Awaitable) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws"


async def ws_connect(
    session: aiohttp.ClientSession,
    base: str,
    token: str,
    device: str,
    session_id: str | None = None,
) -> aiohttp.ClientWebSocketResponse:
    """Open /ws and authenticate; asserts auth_ok."""
    ws = await session.ws_connect(ws_url(base), autoping=True, compress=0)
    msg: dict[str, Any] = {"type": "auth", "token": token, "deviceId": device}
    if session_id is not None:
        msg["sessionId"] = session_id
    await ws.send_json(msg)
    reply = await ws.receive_json(timeout=5)
    assert reply["type"] == "auth_ok", reply
    return ws
