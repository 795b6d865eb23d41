"""The reference client (signaling.client) against the real app, on both hubs.

The other tests use it through conftest's ``Peer`` and ``Poller``; these check what it
promises by itself: the welcome, the ``seq`` check, resume, refusals, close codes, the
long-polling calls, and that a plain ``aiohttp.ClientSession`` works as well as the test
client.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from signaling.client import (
    Closed,
    HTTPStatusError,
    Pace,
    PollingPeer,
    ProtocolError,
    Refused,
    SequenceGap,
    WsPeer,
    auth_headers,
)


async def test_connect_reads_the_welcome(client):
    peer = await WsPeer.connect(client)
    assert peer.welcome["type"] == "welcome"
    assert (len(peer.id), len(peer.token)) == (16, 43)
    assert peer.auth == auth_headers(peer.token) == {"Authorization": f"Bearer {peer.token}"}
    assert (peer.last_seq, peer.close_code) == (0, None)
    await peer.close()
    assert peer.close_code == 1000


async def test_request_join_expect_and_seq(client):
    host, guest = await WsPeer.connect(client), await WsPeer.connect(client)
    assert (await host.join("r", "host"))["peers"] == []
    joined = await guest.join("r", "participant", name="Ana")
    assert [p["id"] for p in joined["peers"]] == [host.id]
    assert (await host.expect("peer-joined"))["peer"] == {"id": guest.id, "role": "participant", "name": "Ana"}
    await guest.send(type="offer", to=host.id, data={"sdp": "x"})
    assert (await host.recv())["from"] == guest.id
    assert (host.last_seq, guest.last_seq) == (3, 1)
    assert (await guest.request("ping", "pong"))["received"] == 0
    await guest.close()
    assert (await host.expect("peer-left"))["id"] == guest.id


async def test_expect_refuses_another_type_and_wait_for_skips_it(client):
    a, b = await WsPeer.connect(client), await WsPeer.connect(client)
    for kind in ("offer", "candidate", "answer"):
        await a.send(type=kind, to=b.id, data=kind)
    with pytest.raises(ProtocolError, match="expected 'answer'"):
        await b.expect("answer")
    assert (await b.wait_for("answer"))["data"] == "answer"
    assert b.last_seq == 3
    with pytest.raises(TimeoutError):
        await b.wait_for("answer", timeout=0.2)


async def test_a_gap_in_seq_raises_or_is_recorded(client):
    a = await WsPeer.connect(client)
    strict, lenient = await WsPeer.connect(client), await WsPeer.connect(client)
    gaps: list[tuple[int, int]] = []
    lenient.on_gap = lambda last, seq: gaps.append((last, seq))
    for b in (strict, lenient):
        await a.send(type="candidate", to=b.id, data=1)
        await a.send(type="candidate", to=b.id, data=2)
        await b.recv()
        b.last_seq = 0  # as if the first one had not been seen: the second is a repeat
    with pytest.raises(SequenceGap) as raised:
        await strict.recv()
    assert (raised.value.last, raised.value.seq) == (0, 2)
    assert (await lenient.recv())["data"] == 2
    assert (gaps, lenient.last_seq) == ([(0, 2)], 2)
    lenient.timeout = None
    again = await lenient.resume()  # keeps on_gap and timeout
    assert (again.on_gap, again.timeout) == (lenient.on_gap, None)


async def test_resume_carries_the_count_and_the_room(client):
    host, p = await WsPeer.connect(client), await WsPeer.connect(client)
    await host.join("r", "host")
    await p.join("r", "participant")
    await host.expect("peer-joined")
    await p.close(code=4000)  # a drop: the session stays
    for n in range(3):
        await host.send(type="candidate", to=p.id, data=n)
    await host.request("ping", "pong")
    assert p.resume_url() == f"/ws?resume={p.token}&ack=1"
    again = await p.resume()
    w = again.welcome
    assert (w["resumed"], again.id, w["room"], w["role"], again.last_seq) == (True, p.id, "r", "participant", 1)
    assert [(await again.expect("candidate"))["data"] for _ in range(3)] == [0, 1, 2]
    assert again.last_seq == 4
    await again.close()


async def test_resume_counts_what_the_queue_lost(make_client):
    client = await make_client(resume_queue=4)
    a, b = await WsPeer.connect(client), await WsPeer.connect(client)
    await b.close(code=4000)
    await asyncio.sleep(0.05)
    for n in range(10):
        await a.send(type="candidate", to=b.id, data=n)
    await a.request("ping", "pong")
    again = await b.resume()
    assert (again.lost, again.last_seq) == (6, 6)
    assert [(await again.expect("candidate"))["data"] for _ in range(4)] == [6, 7, 8, 9]  # no gap


async def test_resume_without_ack_takes_the_count_from_the_replay(client):
    a, b = await WsPeer.connect(client), await WsPeer.connect(client)
    await a.send(type="candidate", to=b.id, data=0)
    await b.recv()
    await b.ws.close(code=4000)
    await asyncio.sleep(0.05)
    await a.send(type="candidate", to=b.id, data=1)
    await a.request("ping", "pong")
    again = await WsPeer.connect(client, f"/ws?resume={b.token}")
    assert (await again.expect("candidate"))["data"] == 1
    assert again.last_seq == 2


async def test_a_refused_resume_raises_refused_with_4401(client):
    with pytest.raises(Refused) as refused:
        await WsPeer.connect(client, "/ws?resume=forged&ack=0")
    assert (refused.value.message["code"], refused.value.code) == ("unauthorized", 4401)
    peer = await WsPeer.connect(client)
    await peer.close()  # 1000: the token stops working
    with pytest.raises(Refused) as refused:
        await peer.resume()
    assert refused.value.code == 4401


async def test_a_server_close_raises_closed_with_its_code(client):
    peer = await WsPeer.connect(client)
    await peer.send(type="ping")
    taken = await peer.resume()  # the session moves: the old socket gets 1008
    with pytest.raises(Closed) as closed:
        await peer.wait_for("no such type")
    assert closed.value.code == 1008
    await taken.close()


async def test_polling_peer_send_poll_expect_close(client):
    poller, peer = await PollingPeer.create(client), await WsPeer.connect(client)
    assert set(poller.welcome) >= {"id", "token", "rate_limit"}
    assert poller.url == f"/api/sessions/{poller.id}"
    assert await poller.send(type="join", room="r", role="host", name="Bo") == {"accepted": 1, "received": 0}
    assert await poller.send({"type": "ping", "cseq": 1}, {"type": "ping", "cseq": 2}) == {
        "accepted": 2, "received": 2}
    assert (await poller.expect("joined"))["room"] == "r"
    assert len(poller.inbox) == 2  # the pongs wait their turn
    assert (await poller.wait_for("pong"))["received"] == 1  # the second pong is skipped later
    await peer.join("r", "participant")
    assert (await poller.wait_for("peer-joined"))["peer"]["id"] == peer.id
    await peer.send(type="offer", to=poller.id, data="x")
    assert [m["type"] for m in await poller.poll(wait=2)] == ["offer"]
    assert poller.last_seq == 5
    assert [m["seq"] for m in await poller.poll(wait=0, ack=3)] == [4, 5]  # fetched again: no gap
    await poller.send(type="ping")
    with pytest.raises(ProtocolError, match="expected 'answer'"):
        await poller.expect("answer")
    await poller.close()
    assert (await peer.expect("peer-left"))["id"] == poller.id
    with pytest.raises(HTTPStatusError) as refused:
        await poller.poll(wait=0)
    assert refused.value.status == 401
    status, body = await poller.post({"type": "ping"})
    assert (status, body["code"]) == (401, "unauthorized")


async def test_polling_counts_signaling_lost(make_client):
    client = await make_client(resume_queue=4)
    poller, peer = await PollingPeer.create(client), await WsPeer.connect(client)
    for n in range(10):
        await peer.send(type="candidate", to=poller.id, data=n)
    await peer.request("ping", "pong")
    assert [m["data"] for m in await poller.poll(wait=0, ack=0)] == [6, 7, 8, 9]
    assert (poller.lost, poller.last_seq) == (6, 10)


async def test_poll_until_hands_on_counts_lost_and_retries_until_stopped(make_client):
    client = await make_client(resume_queue=4)
    poller, peer = await PollingPeer.create(client), await WsPeer.connect(client)
    for n in range(10):
        await peer.send(type="candidate", to=poller.id, data=n)
    stop, got, lost, failed = asyncio.Event(), [], [], []

    def handle(msg):
        got.append(msg["data"])
        if len(got) == 4:
            stop.set()

    await asyncio.wait_for(poller.poll_until(stop, handle, wait=1, on_lost=lost.append), 10)
    assert (got, lost, poller.last_seq) == ([6, 7, 8, 9], [6], 10)

    await poller.close()  # every poll now fails with 401: tried again until stopped

    def retry(exc):
        failed.append(exc)
        if len(failed) == 3:
            stop.set()

    stop.clear()
    await asyncio.wait_for(poller.poll_until(stop, handle, wait=0, retry_delay=0.01, on_retry=retry), 10)
    assert {type(exc) for exc in failed} == {HTTPStatusError}
    assert failed[0].status == 401


async def test_a_client_session_works_as_well_as_the_test_client(client):
    async with aiohttp.ClientSession(base_url=str(client.make_url("/"))) as http:
        ws_peer = await WsPeer.connect(http, heartbeat=None)
        poller = await PollingPeer.create(http)
        await poller.send(type="offer", to=ws_peer.id, data="hi")
        assert (await ws_peer.expect("offer"))["from"] == poller.id
        await ws_peer.send(type="answer", to=poller.id, data="ho")
        assert (await poller.expect("answer"))["data"] == "ho"
        second = await ws_peer.resume()  # takes the session over from the first
        third = await second.resume(http)
        assert third.id == second.id == ws_peer.id
        for peer in (third, second, ws_peer):
            await peer.close()
        await poller.close()


async def test_pace_lets_half_the_burst_go_then_the_rate():
    pace = Pace({"rate": 100, "burst": 10})
    start = time.monotonic()
    for _ in range(5):
        await pace.take()
    assert time.monotonic() - start < 0.05
    await pace.take(3)  # 3 more at 90/s
    assert 0.02 < time.monotonic() - start < 0.2
