"""WebSocket flows between devices, against the real server with aiohttp's client."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.syncbridge.sbtestlib import Api, metric, run, scrape, ws_connect, ws_url

pytestmark = pytest.mark.timeout(60)


def test_auth_heartbeat_and_state_sync_between_two_devices(shared_service, api: Api):
    user = api.register()
    tok = user["access"]
    api.create_session(tok, "sync-1", {"items": []})

    async def scenario():
        async with aiohttp.ClientSession() as s:
            phone = await ws_connect(s, shared_service.url, tok, "phone", "sync-1")
            laptop = await ws_connect(s, shared_service.url, tok, "laptop", "sync-1")

            await phone.send_json({"type": "heartbeat", "timestamp": 1234567})
            ack = await phone.receive_json(timeout=5)
            assert ack["type"] == "heartbeat_ack"
            assert ack["timestamp"] == 1234567

            delta = {"operations": [{"op": "add", "path": "/items/-", "value": 1}], "version": 1}
            await phone.send_json({"type": "state_update", "sessionId": "sync-1", "delta": delta})
            ack = await phone.receive_json(timeout=5)
            assert ack == {"type": "state_ack", "sessionId": "sync-1", "version": 2}
            pushed = await laptop.receive_json(timeout=5)
            assert pushed == {
                "type": "state_update",
                "sessionId": "sync-1",
                "version": 2,
                "delta": delta,
                "fromDeviceId": "phone",
            }

            # the other way round, on the new version
            delta2 = {
                "operations": [{"op": "replace", "path": "/items/0", "value": 9}],
                "version": 2,
            }
            await laptop.send_json({"type": "state_update", "sessionId": "sync-1", "delta": delta2})
            assert (await laptop.receive_json(timeout=5))["version"] == 3
            pushed = await phone.receive_json(timeout=5)
            assert pushed["fromDeviceId"] == "laptop"
            assert pushed["version"] == 3

            # the sender does not get its own update back
            with pytest.raises(asyncio.TimeoutError):
                await laptop.receive_json(timeout=0.3)

            devices = api.get("/api/v1/sessions/sync-1/devices", token=tok).json()["devices"]
            assert {d["deviceId"]: d["connected"] for d in devices} == {
                "laptop": True,
                "phone": True,
            }
            await phone.close()
            await laptop.close()

    run(scenario())
    got = api.get("/api/v1/sessions/sync-1", token=tok).json()
    assert got["state"] == {"items": [9]}
    assert got["version"] == 3
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        devices = api.get("/api/v1/sessions/sync-1/devices", token=tok).json()["devices"]
        if not any(d["connected"] for d in devices):
            break
        time.sleep(0.05)
    assert not any(d["connected"] for d in devices)


def test_version_conflict_and_invalid_patch(shared_service, api: Api):
    tok = api.register()["access"]
    api.create_session(tok, "conf", {"a": 1})

    async def scenario():
        async with aiohttp.ClientSession() as s:
            ws = await ws_connect(s, shared_service.url, tok, "d1")
            op = [{"op": "replace", "path": "/a", "value": 2}]
            await ws.send_json(
                {
                    "type": "state_update",
                    "sessionId": "conf",
                    "delta": {"operations": op, "version": 7},
                }
            )
            err = await ws.receive_json(timeout=5)
            assert err == {
                "type": "error",
                "code": "version_conflict",
                "sessionId": "conf",
                "currentVersion": 1,
            }
            bad_op = [{"op": "remove", "path": "/does/not/exist"}]
            await ws.send_json(
                {
                    "type": "state_update",
                    "sessionId": "conf",
                    "delta": {"operations": bad_op, "version": 1},
                }
            )
            err = await ws.receive_json(timeout=5)
            assert err["type"] == "error"
            assert err["code"] == "invalid_patch"
            await ws.send_json(
                {
                    "type": "state_update",
                    "sessionId": "conf",
                    "delta": {"operations": "x", "version": 1},
                }
            )
            assert (await ws.receive_json(timeout=5))["code"] == "invalid_patch"
            # the failed patches changed nothing; a good one still applies at version 1
            await ws.send_json(
                {
                    "type": "state_update",
                    "sessionId": "conf",
                    "delta": {"operations": op, "version": 1},
                }
            )
            assert (await ws.receive_json(timeout=5))["version"] == 2
            await ws.send_json(
                {
                    "type": "state_update",
                    "sessionId": "nope",
                    "delta": {"operations": op, "version": 1},
                }
            )
            assert (await ws.receive_json(timeout=5))["code"] == "session_not_found"
            await ws.send_json(
                {"type": "state_update", "sessionId": "conf", "delta": {"version": "1"}}
            )
            assert (await ws.receive_json(timeout=5))["code"] == "invalid_message"
            await ws.send_str("not json")
            assert (await ws.receive_json(timeout=5))["code"] == "invalid_message"
            await ws.send_json({"type": "teleport"})
            assert (await ws.receive_json(timeout=5))["code"] == "unknown_type"
            await ws.close()

    run(scenario())
    got = api.get("/api/v1/sessions/conf", token=tok).json()
    assert got == {**got, "state": {"a": 2}, "version": 2}


def test_concurrent_updates_on_one_version_only_one_wins(shared_service, api: Api):
    tok = api.register()["access"]
    api.create_session(tok, "race", {"n": 0})

    async def scenario():
        async with aiohttp.ClientSession() as s:
            sockets = [await ws_connect(s, shared_service.url, tok, f"d{i}") for i in range(8)]
            for i, ws in enumerate(sockets):
                op = [{"op": "replace", "path": "/n", "value": i}]
                await ws.send_json(
                    {
                        "type": "state_update",
                        "sessionId": "race",
                        "delta": {"operations": op, "version": 1},
                    }
                )
            replies = [await ws.receive_json(timeout=5) for ws in sockets]
            for ws in sockets:
                await ws.close()
            return replies

    replies = run(scenario())
    acks = [r for r in replies if r["type"] == "state_ack"]
    conflicts = [r for r in replies if r.get("code") == "version_conflict"]
    assert len(acks) == 1
    assert len(conflicts) == 7
    assert all(c["currentVersion"] == 2 for c in conflicts)
    assert api.get("/api/v1/sessions/race", token=tok).json()["version"] == 2


def test_update_subscribes_sender_and_broadcasts_to_subscribers_only(shared_service, api: Api):
    tok = api.register()["access"]
    other = api.register()["access"]
    api.create_session(tok, "sub", {"v": 0})

    async def scenario():
        async with aiohttp.ClientSession() as s:
            a = await ws_connect(s, shared_service.url, tok, "a")  # not subscribed
            b = await ws_connect(s, shared_service.url, tok, "b")
            stranger = await ws_connect(s, shared_service.url, other, "x", "sub")  # own "sub"
            op = [{"op": "replace", "path": "/v", "value": 1}]
            await a.send_json(
                {
                    "type": "state_update",
                    "sessionId": "sub",
                    "delta": {"operations": op, "version": 1},
                }
            )
            assert (await a.receive_json(timeout=5))["type"] == "state_ack"
            # b sends on the new version: now subscribed, and a (subscribed by sending) gets it
            await b.send_json(
                {
                    "type": "state_update",
                    "sessionId": "sub",
                    "delta": {"operations": op, "version": 2},
                }
            )
            assert (await b.receive_json(timeout=5))["type"] == "state_ack"
            pushed = await a.receive_json(timeout=5)
            assert pushed["fromDeviceId"] == "b"
            # another user's connection never sees this user's session traffic
            with pytest.raises(asyncio.TimeoutError):
                await stranger.receive_json(timeout=0.3)
            for ws in (a, b, stranger):
                await ws.close()

    run(scenario())


@pytest.mark.parametrize(
    "first",
    [
        {"type": "heartbeat", "timestamp": 1},
        {"type": "auth", "token": "bad-token", "deviceId": "d"},
        {"type": "auth", "deviceId": "d"},
        {"type": "auth", "token": "x"},
        "not json",
    ],
)
def test_bad_first_message_closes_with_1008(shared_service, first):
    async def scenario():
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(ws_url(shared_service.url))
            if isinstance(first, str):
                await ws.send_str(first)
            else:
                await ws.send_json(first)
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            return ws.close_code

    assert run(scenario()) == 1008


def test_refresh_token_cannot_authenticate_ws(shared_service, api: Api):
    user = api.register()

    async def scenario():
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(ws_url(shared_service.url))
            await ws.send_json({"type": "auth", "token": user["refresh"], "deviceId": "d"})
            msg = await ws.receive(timeout=5)
            return msg.type, ws.close_code

    assert run(scenario()) == (aiohttp.WSMsgType.CLOSE, 1008)


def test_ws_metrics_count_connections_and_messages(shared_service, api: Api):
    tok = api.register()["access"]
    before = scrape(api)
    # no sample yet if no test before this one sent a heartbeat to this process's service
    hb_in = metric(
        before, "syncbridge_websocket_messages_total", absent=0, direction="in", type="heartbeat"
    )

    async def scenario():
        async with aiohttp.ClientSession() as s:
            sockets = [await ws_connect(s, shared_service.url, tok, f"m{i}") for i in range(3)]
            text = scrape(api)
            assert metric(text, "syncbridge_websocket_connections") >= 3
            for ws in sockets:
                await ws.send_json({"type": "heartbeat", "timestamp": 5})
                await ws.receive_json(timeout=5)
            for ws in sockets:
                await ws.close()

    run(scenario())
    after = scrape(api)
    assert (
        metric(after, "syncbridge_websocket_messages_total", direction="in", type="heartbeat")
        == hb_in + 3
    )
    assert (
        metric(after, "syncbridge_websocket_messages_total", direction="out", type="auth_ok") >= 3
    )
    assert metric(after, "syncbridge_http_requests_total", route="/ws", status="101") >= 3
    deadline = time.monotonic() + 5
    while metric(scrape(api), "syncbridge_websocket_connections") != 0:
        assert time.monotonic() < deadline, "websocket gauge did not go back to 0"
        time.sleep(0.05)
