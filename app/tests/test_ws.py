"""WebSocket transport: welcome, rooms, relaying, modes, errors, resume, liveness."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n" + "a=x\r\n" * 10}


async def test_welcome_has_identity_and_settings(client, connect):
    peer = await connect(client)
    w = peer.welcome
    assert len(w["id"]) == 16 and len(w["token"]) == 43
    assert w["heartbeat"] == 30 and w["resume"] == 60 and w["ice_servers"] == []


async def test_ping_pong_echoes_id(client, connect):
    peer = await connect(client)
    assert await peer.request("ping", "pong") == {"type": "pong", "received": 0, "seq": 1}
    assert (await peer.request("ping", "pong", id=7))["ref"] == 7


# -- public mode ---------------------------------------------------------------


async def test_public_peers_signal_each_other_by_id(client, connect):
    a, b = await connect(client), await connect(client)
    for kind in ("offer", "answer", "candidate", "bye"):
        await a.send(type=kind, to=b.id, data=OFFER)
        got = await b.expect(kind)
        assert got["from"] == a.id and got["data"] == OFFER


async def test_unknown_peer_gets_error_with_ref(client, connect):
    a = await connect(client)
    await a.send(type="offer", to="nobody", data={}, id="m1")
    err = await a.expect("error")
    assert err["code"] == "unknown-peer" and err["ref"] == "m1"


async def test_signaling_yourself_is_forbidden(client, connect):
    a = await connect(client)
    await a.send(type="offer", to=a.id, data={})
    assert (await a.expect("error"))["code"] == "forbidden"


async def test_public_mode_off_forbids_one_to_one(make_client, connect):
    client = await make_client(public_mode=False)
    a, b = await connect(client), await connect(client)
    await a.send(type="offer", to=b.id, data={})
    assert (await a.expect("error"))["code"] == "forbidden"
    await b.nothing()


async def test_list_needs_discovery(make_client, connect):
    client = await make_client()
    a = await connect(client)
    await a.send(type="list")
    assert (await a.expect("error"))["code"] == "forbidden"
    await a.ws.close()     # in cluster mode the second app shares the first one's sessions
    await asyncio.sleep(0.1)
    client = await make_client(discovery=True)
    a, b = await connect(client), await connect(client)
    assert (await a.request("list", "peers"))["peers"] == [b.id]


# -- private mode --------------------------------------------------------------


async def test_room_host_and_participants_see_the_right_peers(client, connect):
    host, p1, p2 = await connect(client), await connect(client), await connect(client)
    joined = await host.join("standup", "host", "Bo")
    assert joined == {"type": "joined", "room": "standup", "role": "host", "peers": [], "seq": 1}

    j1 = await p1.join("standup", "participant", "Ana")
    assert j1["peers"] == [{"id": host.id, "role": "host", "name": "Bo"}]
    assert (await host.expect("peer-joined"))["peer"] == {"id": p1.id, "role": "participant", "name": "Ana"}

    j2 = await p2.join("standup", "participant", "Cy")
    assert j2["peers"] == [{"id": host.id, "role": "host", "name": "Bo"}]   # not p1
    assert (await host.expect("peer-joined"))["peer"]["id"] == p2.id
    await p1.nothing()                                                    # p1 is not told of p2


async def test_participants_joining_before_host_learn_of_it(client, connect):
    p1, host = await connect(client), await connect(client)
    assert (await p1.join("r", "participant"))["peers"] == []
    joined = await host.join("r", "host")
    assert [x["id"] for x in joined["peers"]] == [p1.id]
    assert (await p1.expect("peer-joined"))["peer"]["id"] == host.id


async def test_room_signaling_rules(client, connect):
    host, p1, p2 = await connect(client), await connect(client), await connect(client)
    await host.join("r", "host")
    await p1.join("r", "participant")
    await host.expect("peer-joined")
    await p2.join("r", "participant")
    await host.expect("peer-joined")

    await p1.send(type="offer", to=host.id, data=OFFER)          # participant -> host
    assert (await host.expect("offer"))["from"] == p1.id
    await host.send(type="answer", to=p1.id, data={"sdp": "a"})  # host -> participant
    assert (await p1.expect("answer"))["from"] == host.id
    await p1.send(type="offer", to=p2.id, data={}, id=3)         # participant -> participant
    assert (await p1.expect("error")) | {"seq": 0} == {
        "type": "error", "code": "forbidden", "message": "you may not signal that peer", "ref": 3, "seq": 0}
    await p2.nothing()


async def test_nothing_crosses_rooms_or_reaches_public_peers(client, connect):
    h1, h2, pub = await connect(client), await connect(client), await connect(client)
    await h1.join("one", "host")
    await h2.join("two", "host")
    for sender, target in ((h1, h2), (h1, pub), (pub, h1)):
        await sender.send(type="offer", to=target.id, data={})
        assert (await sender.expect("error"))["code"] == "forbidden"
    await h2.nothing()
    await pub.nothing()


@pytest.mark.parametrize(
    ("second", "code"),
    [
        ({"role": "host", "secret": "s3cret"}, "room-has-host"),
        ({"role": "participant", "secret": "wrong"}, "bad-secret"),
        ({"role": "participant"}, "bad-secret"),
    ],
)
async def test_join_refusals(client, connect, second, code):
    host, other = await connect(client), await connect(client)
    await host.join("r", "host", secret="s3cret")
    await other.send(type="join", room="r", name="x", id="j1", **second)
    err = await other.expect("error")
    assert (err["code"], err["ref"]) == (code, "j1")
    await host.nothing()


async def test_room_secret_admits_the_right_secret(client, connect):
    host, p = await connect(client), await connect(client)
    await host.join("r", "host", secret="s3cret")
    assert (await p.join("r", "participant", secret="s3cret"))["room"] == "r"


async def test_room_full(make_client, connect):
    client = await make_client(room_max_peers=2)
    a, b, c = await connect(client), await connect(client), await connect(client)
    await a.join("r", "host")
    await b.join("r", "participant")
    await c.send(type="join", room="r", role="participant")
    assert (await c.expect("error"))["code"] == "room-full"


async def test_private_mode_off(make_client, connect):
    client = await make_client(private_mode=False)
    a = await connect(client)
    await a.send(type="join", room="r", role="host")
    assert (await a.expect("error"))["code"] == "forbidden"


async def test_leave_notifies_and_frees_the_host_seat(client, connect):
    host, p = await connect(client), await connect(client)
    await host.join("r", "host")
    await p.join("r", "participant")
    await host.expect("peer-joined")
    assert await host.request("leave", "left") == {"type": "left", "room": "r", "seq": 3}
    assert await p.expect("peer-left") == {"type": "peer-left", "room": "r", "id": host.id, "seq": 2}
    other = await connect(client)
    assert (await other.join("r", "host"))["peers"] == [{"id": p.id, "role": "participant", "name": "participant"}]


async def test_closing_normally_leaves_the_room_at_once(client, connect):
    host, p = await connect(client), await connect(client)
    await host.join("r", "host")
    await p.join("r", "participant")
    await host.expect("peer-joined")
    await p.ws.close()
    assert (await host.expect("peer-left"))["id"] == p.id


# -- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad-json"),
        ("[1, 2]", "bad-message"),
        ('{"type": 5}', "bad-message"),
        ('{"type": "dance"}', "bad-message"),
        ('{"type": "offer", "data": {}}', "bad-message"),
        ('{"type": "offer", "to": 5, "data": {}}', "bad-message"),
        ('{"type": "offer", "to": "x"}', "bad-message"),
        ('{"type": "join", "room": "a b", "role": "host"}', "bad-message"),
        ('{"type": "join", "room": "' + "r" * 65 + '", "role": "host"}', "bad-message"),
        ('{"type": "join", "room": "r", "role": "king"}', "bad-message"),
        ('{"type": "join", "room": "r", "role": "host", "name": 1}', "bad-message"),
        ('{"type": "ping", "id": {"a": 1}}', "bad-message"),
        ('{"type": "ack", "seq": -1}', "bad-message"),
        ('{"type": "leave"}', "bad-message"),
        ('{"a": ' * 2000 + "1" + "}" * 2000, "bad-json"),
        ('{"type": "ping", "n": 1' + "0" * 400 + "}", "bad-json"),
    ],
)
async def test_bad_frames_get_error_codes_and_the_peer_stays(client, connect, frame, code):
    peer = await connect(client)
    await peer.ws.send_str(frame)
    assert (await peer.expect("error"))["code"] == code
    await peer.request("ping", "pong")


async def test_oversize_frame_is_too_large_and_connection_survives(client, connect):
    peer = await connect(client)
    await peer.send(type="ping", pad="x" * 70000)
    assert (await peer.expect("error"))["code"] == "too-large"
    await peer.request("ping", "pong")


async def test_frame_over_hard_limit_closes_1009(client, connect):
    peer = await connect(client)
    await peer.ws.send_str("x" * (2 << 20))
    msg = await peer.ws.receive(timeout=3)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1009


async def test_binary_frame_is_bad_message(client, connect):
    peer = await connect(client)
    await peer.ws.send_bytes(b"\x00\x01")
    assert (await peer.expect("error"))["code"] == "bad-message"


async def test_flood_is_rate_limited_then_closed_1008(make_client, connect):
    client = await make_client(rate_limit=5, rate_limit_burst=5)
    flooder, calm = await connect(client), await connect(client)
    for _ in range(40):
        await flooder.send(type="ping")
    kinds = []
    while True:
        msg = await flooder.ws.receive(timeout=3)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        kinds.append(json.loads(msg.data).get("code") or json.loads(msg.data)["type"])
    assert kinds[:5] == ["pong"] * 5 and "rate-limited" in kinds
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1008
    await calm.request("ping", "pong")   # everyone else is still served


async def test_foreign_origin_is_refused(client):
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
    assert exc.value.status == 403


async def test_same_origin_and_allowlisted_origins_pass(make_client, connect):
    client = await make_client()
    host = f"http://{client.host}:{client.port}"
    await connect(client, headers={"Origin": host})
    client = await make_client(allowed_origins=["https://app.example"])
    await connect(client, headers={"Origin": "https://app.example"})
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/ws", headers={"Origin": host})


# -- resume ------------------------------------------------------------------------


async def test_resume_keeps_id_room_and_delivers_missed_messages_in_order(client, connect):
    host, p = await connect(client), await connect(client)
    await host.join("r", "host")
    await p.join("r", "participant")
    await host.expect("peer-joined")
    await p.ws.close(code=4000)  # any close but 1000 is a drop: the session waits for a resume
    await asyncio.sleep(0.1)
    for n in range(5):
        await host.send(type="candidate", to=p.id, data={"n": n})
    await host.nothing()   # no peer-left for a drop inside the window

    again = await connect(client, f"/ws?resume={p.token}&ack={p.last_seq}")
    w = again.welcome
    assert (w["id"], w["room"], w["role"], w["resumed"], w["lost"]) == (p.id, "r", "participant", True, 0)
    assert [(await again.expect("candidate"))["data"]["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
    await again.send(type="offer", to=host.id, data={})
    assert (await host.expect("offer"))["from"] == p.id


async def test_resume_with_older_ack_replays_what_the_old_socket_may_have_lost(client, connect):
    a, b = await connect(client), await connect(client)
    for n in range(3):
        await a.send(type="candidate", to=b.id, data=n)
        await b.expect("candidate")
    await b.ws.close(code=4000)
    again = await connect(client, f"/ws?resume={b.token}&ack=1")
    assert [json.loads((await again.ws.receive()).data)["seq"] for _ in range(2)] == [2, 3]


async def test_resume_queue_overflow_is_reported(make_client, connect):
    client = await make_client(resume_queue=4)
    a, b = await connect(client), await connect(client)
    await b.ws.close(code=4000)
    await asyncio.sleep(0.05)
    for n in range(10):
        await a.send(type="candidate", to=b.id, data=n)
    await a.request("ping", "pong")  # all ten were handled
    again = await connect(client, f"/ws?resume={b.token}&ack=0")
    assert again.welcome["lost"] == 6
    assert [json.loads((await again.ws.receive()).data)["data"] for _ in range(4)] == [6, 7, 8, 9]


async def test_bad_resume_token_is_unauthorized_4401(client):
    ws = await client.ws_connect("/ws?resume=forged")
    msg = await ws.receive(timeout=3)
    assert json.loads(msg.data)["code"] == "unauthorized"
    msg = await ws.receive(timeout=3)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4401


async def test_resume_window_expiry_sends_peer_left_and_kills_the_token(make_client, connect):
    client = await make_client(resume_window=0, heartbeat=1, idle_timeout=2)
    host, p = await connect(client), await connect(client)
    await host.join("r", "host")
    await p.join("r", "participant")
    await host.expect("peer-joined")
    await p.ws.close(code=4000)
    assert (await host.expect("peer-left", timeout=3))["id"] == p.id
    ws = await client.ws_connect(f"/ws?resume={p.token}")
    assert json.loads((await ws.receive(timeout=3)).data)["code"] == "unauthorized"


# -- liveness ------------------------------------------------------------------------


async def test_server_pings_and_drops_silent_peers(make_client):
    client = await make_client(heartbeat=1, idle_timeout=2)
    ws = await client.ws_connect("/ws", autoping=False)
    await ws.receive(timeout=3)  # welcome
    msg = await ws.receive(timeout=3)
    assert msg.type is aiohttp.WSMsgType.PING
    msg = await ws.receive(timeout=4)   # we never answer: dropped
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4408


async def test_answering_pings_keeps_a_peer_alive(make_client):
    client = await make_client(heartbeat=1, idle_timeout=2)
    ws = await client.ws_connect("/ws", autoping=False)
    await ws.receive(timeout=3)  # welcome
    loop = asyncio.get_running_loop()
    deadline, pings = loop.time() + 4.5, 0
    while loop.time() < deadline:
        try:
            msg = await ws.receive(timeout=deadline - loop.time())
        except TimeoutError:
            break
        assert msg.type is aiohttp.WSMsgType.PING, msg
        pings += 1
        await ws.pong(msg.data)      # only control frames: no application traffic
    assert pings >= 3
    await ws.send_str('{"type": "ping"}')
    assert json.loads((await ws.receive(timeout=3)).data)["type"] == "pong"
