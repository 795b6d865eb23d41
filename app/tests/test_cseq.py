"""Reliable sending: client sequence numbers (``cseq``) handled exactly once, in order.

docs/protocol.md, "Reliable sending". Every test runs on both hubs; the
cluster ones also across two instances of one Redis.
"""

from __future__ import annotations

import asyncio

import pytest

from signaling import config
from signaling.app import create_app


async def room_pair(client, connect):
    host, part = await connect(client), await connect(client)
    await host.join("r", "host")
    await part.join("r", "participant")
    await host.expect("peer-joined")
    return host, part


async def test_each_cseq_is_handled_once(client, connect):
    host, part = await room_pair(client, connect)
    for n in (1, 2, 3, 2, 3, 1):  # the last three are resends
        await part.send(type="candidate", to=host.id, data=n, cseq=n)
    assert [(await host.expect("candidate"))["data"] for _ in range(3)] == [1, 2, 3]
    await host.nothing()
    assert (await part.request("ping", "pong"))["received"] == 3
    await part.nothing()  # a resend gets no answer at all


async def test_a_gap_is_refused_once_until_filled(client, connect):
    host, part = await room_pair(client, connect)
    await part.send(type="candidate", to=host.id, data=1, cseq=1)
    for n in (3, 4, 5):  # 2 never arrived (say, `unavailable`)
        await part.send(type="candidate", to=host.id, data=n, cseq=n, id=f"m{n}")
    err = await part.expect("error")
    assert (err["code"], err["ref"]) == ("out-of-order", "m3")
    assert (await part.request("ping", "pong"))["received"] == 1  # one error per gap, then the pong
    for n in (2, 3, 4, 5):  # what follows `received`, again, in order
        await part.send(type="candidate", to=host.id, data=n, cseq=n)
    assert [(await host.expect("candidate"))["data"] for _ in range(5)] == [1, 2, 3, 4, 5]
    await part.send(type="candidate", to=host.id, data=7, cseq=7)  # a new gap gets its own error
    assert (await part.expect("error"))["code"] == "out-of-order"


async def test_a_refused_message_counts_as_handled(client, connect):
    """Errors are answers: resending the message would only get the same error again."""
    peer = await connect(client)
    await peer.send(type="offer", to="nobody", data={}, cseq=1)
    assert (await peer.expect("error"))["code"] == "unknown-peer"
    await peer.send(type="nope", cseq=2)
    assert (await peer.expect("error"))["code"] == "bad-message"
    await peer.send(type="offer", to=peer.id, data={}, cseq=3)
    assert (await peer.expect("error"))["code"] == "forbidden"
    await peer.send(type="join", room="bad room", role="host", cseq=4)
    assert (await peer.expect("error"))["code"] == "bad-message"
    pong = await peer.request("ping", "pong", cseq=5)
    assert pong["received"] == 5
    await peer.send(type="offer", to="nobody", data={}, cseq=3)  # a repeat of a refused one: silence
    await peer.nothing()


@pytest.mark.parametrize("cseq", [0, -1, "1", 1.5, True, 2**53 + 1, None])
async def test_invalid_cseq_is_a_bad_message(client, connect, cseq):
    peer = await connect(client)
    await peer.ws.send_json({"type": "ping", "cseq": cseq, "id": 1})
    reply = await peer.recv()
    if cseq is None:  # null means none given
        assert reply["type"] == "pong"
    else:
        assert (reply["type"], reply["code"], reply["ref"]) == ("error", "bad-message", 1)


async def test_join_and_leave_are_not_repeated(client, connect):
    peer = await connect(client)
    await peer.send(type="join", room="r", role="host", cseq=1)
    await peer.expect("joined")
    await peer.send(type="join", room="r", role="host", cseq=1)  # would be "already in room"
    await peer.send(type="leave", cseq=2)
    await peer.expect("left")
    await peer.send(type="leave", cseq=2)  # would be "not in a room"
    assert (await peer.request("ping", "pong"))["received"] == 2


async def test_resumed_welcome_says_what_was_received(client, connect):
    host, part = await room_pair(client, connect)
    for n in (1, 2):
        await part.send(type="candidate", to=host.id, data=n, cseq=n)
    await part.request("ping", "pong")
    await part.ws.close(code=4000)
    again = await connect(client, f"/ws?resume={part.token}&ack={part.last_seq}")
    assert again.welcome["received"] == 2
    await again.send(type="candidate", to=host.id, data=2, cseq=2)  # the client resends what it doubted
    await again.send(type="candidate", to=host.id, data=3, cseq=3)
    assert [(await host.expect("candidate"))["data"] for _ in range(3)] == [1, 2, 3]


async def test_polling_retry_of_a_batch_is_not_repeated(client, connect, open_poller):
    peer, poller = await connect(client), await open_poller(client)
    batch = [{"type": "offer", "to": peer.id, "data": n, "cseq": n} for n in (1, 2, 3)]
    assert await poller.send(*batch) == {"accepted": 3, "received": 3}
    assert await poller.send(*batch) == {"accepted": 3, "received": 3}  # the 202 was lost: sent again
    assert [(await peer.expect("offer"))["data"] for _ in range(3)] == [1, 2, 3]
    await peer.nothing()


async def test_messages_without_cseq_are_unaffected(client, connect):
    host, part = await room_pair(client, connect)
    await part.send(type="candidate", to=host.id, data="a", cseq=1)
    await part.send(type="candidate", to=host.id, data="b")
    await part.send(type="candidate", to=host.id, data="b")
    assert [(await host.expect("candidate"))["data"] for _ in range(3)] == ["a", "b", "b"]
    assert (await part.request("ping", "pong"))["received"] == 1


# -- across instances (cluster) -------------------------------------------------


@pytest.fixture
async def pair(aiohttp_client, redis_url):
    a = await aiohttp_client(create_app(config.make(redis_url=redis_url, instance_id="a")))
    b = await aiohttp_client(create_app(config.make(redis_url=redis_url, instance_id="b")))
    return a, b


async def test_resume_on_another_instance_keeps_the_count(pair, connect):
    """What instance A handled, instance B does not handle again after a resume."""
    a, b = pair
    host, part = await room_pair(a, connect)
    for n in (1, 2, 3):
        await part.send(type="candidate", to=host.id, data=n, cseq=n)
    assert [(await host.expect("candidate"))["data"] for _ in range(3)] == [1, 2, 3]
    await part.ws.close(code=4000)
    await asyncio.sleep(0.1)
    again = await connect(b, f"/ws?resume={part.token}&ack={part.last_seq}")
    assert again.welcome["received"] == 3
    for n in (2, 3, 4):
        await again.send(type="candidate", to=host.id, data=n, cseq=n)
    assert (await host.expect("candidate"))["data"] == 4
    await host.nothing()
