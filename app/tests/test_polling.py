"""HTTP long-polling transport, alone and together with WebSocket peers."""

from __future__ import annotations

import asyncio

import pytest


async def test_create_session_answers_like_welcome(client, open_poller):
    poller = await open_poller(client)
    assert set(poller.info) == {"id", "token", "heartbeat", "resume", "rate_limit", "ice_servers"}
    assert poller.info["rate_limit"] == {"rate": 50, "burst": 100}
    assert poller.info["heartbeat"] == 30


async def test_empty_poll_returns_after_wait(client, open_poller):
    poller = await open_poller(client)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await poller.poll(wait=1) == []
    assert 0.9 <= loop.time() - start < 3


async def test_polling_and_websocket_peers_talk(client, connect, open_poller):
    poller, peer = await open_poller(client), await connect(client)
    await poller.send({"type": "offer", "to": peer.id, "data": {"sdp": "x"}})
    got = await peer.expect("offer")
    assert got["from"] == poller.id and got["data"] == {"sdp": "x"}
    await peer.send(type="answer", to=poller.id, data={"sdp": "y"})
    msg = await poller.expect("answer")
    assert msg == {"type": "answer", "from": peer.id, "data": {"sdp": "y"}, "seq": 1}


async def test_a_waiting_poll_wakes_on_delivery(client, connect, open_poller):
    poller, peer = await open_poller(client), await connect(client)
    task = asyncio.create_task(poller.poll(wait=10))
    await asyncio.sleep(0.2)
    await peer.send(type="offer", to=poller.id, data=1)
    msgs = await asyncio.wait_for(task, 3)
    assert [m["data"] for m in msgs] == [1]


async def test_batch_and_replies_arrive_through_poll(client, open_poller):
    poller = await open_poller(client)
    assert await poller.send({"type": "ping", "id": 1}, {"type": "join", "room": "r", "role": "host"},
                             {"type": "nope"}) == {"accepted": 3, "received": 0}
    msgs = await poller.poll()
    assert [m["type"] for m in msgs] == ["pong", "joined", "error"]
    assert [m["seq"] for m in msgs] == [1, 2, 3]
    assert msgs[2]["code"] == "bad-message"


async def test_ack_makes_a_lost_response_recoverable(client, connect, open_poller):
    poller, peer = await open_poller(client), await connect(client)
    for n in range(3):
        await peer.send(type="candidate", to=poller.id, data=n)
    await peer.request("ping", "pong")
    first = await poller.poll(ack=0)
    assert [m["data"] for m in first] == [0, 1, 2]
    # the response was "lost": ask again with the same ack
    assert [m["data"] for m in await poller.poll(ack=0)] == [0, 1, 2]
    assert [m["data"] for m in await poller.poll(ack=1, wait=0)] == [1, 2]
    assert await poller.poll(ack=3, wait=0) == []
    # without ack, what was returned counts as received
    await peer.send(type="candidate", to=poller.id, data=3)
    assert [m["data"] for m in await poller.poll()] == [3]
    assert await poller.poll(wait=0) == []


async def test_polling_session_can_resume_over_websocket(client, connect, open_poller):
    poller, peer = await open_poller(client), await connect(client)
    await peer.send(type="offer", to=poller.id, data="queued")
    await peer.request("ping", "pong")
    upgraded = await connect(client, f"/ws?resume={poller.token}&ack=0")
    assert upgraded.welcome["id"] == poller.id
    assert (await upgraded.expect("offer"))["data"] == "queued"


@pytest.mark.parametrize("auth", [None, "Bearer forged", "Basic abc", "Bearer "])
async def test_bad_tokens_are_unauthorized(client, open_poller, auth):
    poller = await open_poller(client)
    headers = {"Authorization": auth} if auth else {}
    for method in ("GET", "POST", "DELETE"):
        kw = {"json": {"type": "ping"}} if method == "POST" else {}
        resp = await client.request(method, f"/api/sessions/{poller.id}/messages" if method != "DELETE"
                                    else f"/api/sessions/{poller.id}", headers=headers, **kw)
        assert resp.status == 401
        assert (await resp.json())["code"] == "unauthorized"


async def test_another_sessions_token_is_unauthorized(client, open_poller):
    a, b = await open_poller(client), await open_poller(client)
    resp = await client.get(f"/api/sessions/{a.id}/messages?wait=0", headers=b.auth)
    assert resp.status == 401


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [(b"{oops", 400, "bad-json"), (b"[]", 400, "bad-message"), (b"\xff\xfe", 400, "bad-json")],
)
async def test_bad_bodies(client, open_poller, body, status, code):
    poller = await open_poller(client)
    resp = await client.post(f"/api/sessions/{poller.id}/messages", data=body, headers=poller.auth)
    assert resp.status == status and (await resp.json())["code"] == code


async def test_oversize_message_in_batch_is_too_large(client, open_poller):
    poller = await open_poller(client)
    await poller.send({"type": "ping", "pad": "x" * 70000}, {"type": "ping"})
    assert [m.get("code", m["type"]) for m in await poller.poll()] == ["too-large", "pong"]


async def test_bad_wait_is_rejected(client, open_poller):
    poller = await open_poller(client)
    resp = await client.get(f"/api/sessions/{poller.id}/messages?wait=999", headers=poller.auth)
    assert resp.status == 400


async def test_delete_ends_the_session_and_tells_the_room(client, connect, open_poller):
    host, poller = await connect(client), await open_poller(client)
    await host.join("r", "host")
    await poller.send({"type": "join", "room": "r", "role": "participant"})
    await host.expect("peer-joined")
    resp = await client.delete(f"/api/sessions/{poller.id}", headers=poller.auth)
    assert resp.status == 204
    assert (await host.expect("peer-left"))["id"] == poller.id
    resp = await client.get(f"/api/sessions/{poller.id}/messages?wait=0", headers=poller.auth)
    assert resp.status == 401


async def test_polling_session_expires_after_poll_timeout(make_client, connect, open_poller):
    client = await make_client(poll_timeout=5, heartbeat=1, idle_timeout=2)
    host, poller = await connect(client), await open_poller(client)
    await host.join("r", "host")
    await poller.send({"type": "join", "room": "r", "role": "participant"})
    await host.expect("peer-joined")
    assert (await host.expect("peer-left", timeout=8))["id"] == poller.id


async def test_a_newer_poll_supersedes_a_hanging_one(client, open_poller):
    poller = await open_poller(client)
    first = asyncio.create_task(poller.poll(wait=10))
    await asyncio.sleep(0.2)
    second = asyncio.create_task(poller.poll(wait=10))
    assert await asyncio.wait_for(first, 2) == []     # answered at once, empty
    await poller.send({"type": "ping"})
    assert [m["type"] for m in await asyncio.wait_for(second, 2)] == ["pong"]


async def test_polling_flood_is_limited_then_closed(make_client, open_poller):
    client = await make_client(rate_limit=1, rate_limit_burst=2)
    poller = await open_poller(client)
    resp = await client.post(f"/api/sessions/{poller.id}/messages", json=[{"type": "ping"}] * 10,
                             headers=poller.auth)
    assert resp.status == 429
    resp = await client.get(f"/api/sessions/{poller.id}/messages?wait=0", headers=poller.auth)
    assert resp.status == 401


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_cannot_be_decoded_is_a_bad_message(client, open_poller, encoding):
    """Found by test_fuzz.py: a broken Content-Encoding was a 500."""
    poller = await open_poller(client)
    resp = await client.post(f"/api/sessions/{poller.id}/messages", data=b'[{"type":"ping"}]',
                             headers={**poller.auth, "Content-Encoding": encoding})
    assert resp.status == 400
    assert (await resp.json())["code"] == "bad-message"
