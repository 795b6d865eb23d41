"""Two instances sharing one real redis-server form one service."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from signaling import config
from signaling.app import create_app


@pytest.fixture
async def pair(aiohttp_client, redis_url) -> tuple[TestClient, TestClient]:
    """Instances A and B on one Redis: two apps, two ports."""
    a = await aiohttp_client(create_app(config.make(redis_url=redis_url, instance_id="a")))
    b = await aiohttp_client(create_app(config.make(redis_url=redis_url, instance_id="b")))
    return a, b


async def test_peers_on_different_instances_signal_each_other(pair, connect):
    a, b = pair
    pa, pb = await connect(a), await connect(b)
    for n in range(20):
        await pa.send(type="offer", to=pb.id, data={"n": n})
    assert [(await pb.expect("offer"))["data"]["n"] for _ in range(20)] == list(range(20))
    await pb.send(type="answer", to=pa.id, data="ok")
    assert (await pa.expect("answer"))["from"] == pb.id


async def test_rooms_span_instances(pair, connect):
    a, b = pair
    host, p1, p2 = await connect(a), await connect(b), await connect(a)
    await host.join("standup", "host", "Bo")
    j1 = await p1.join("standup", "participant", "Ana")
    assert j1["peers"] == [{"id": host.id, "role": "host", "name": "Bo"}]
    assert (await host.expect("peer-joined"))["peer"] == {"id": p1.id, "role": "participant", "name": "Ana"}
    await p2.join("standup", "participant", "Cy")
    await host.expect("peer-joined")
    await p1.send(type="offer", to=p2.id, data={})          # participant -> participant: forbidden
    assert (await p1.expect("error"))["code"] == "forbidden"
    await p1.send(type="offer", to=host.id, data={"x": 1})
    assert (await host.expect("offer"))["from"] == p1.id
    await p1.ws.close()
    assert (await host.expect("peer-left"))["id"] == p1.id


async def test_one_host_per_room_across_instances(pair, connect):
    a, b = pair
    h1, h2 = await connect(a), await connect(b)
    await h1.join("r", "host", secret="s")
    await h2.send(type="join", room="r", role="host", secret="s")
    assert (await h2.expect("error"))["code"] == "room-has-host"
    await h2.send(type="join", room="r", role="participant", secret="nope")
    assert (await h2.expect("error"))["code"] == "bad-secret"


async def test_resume_on_another_instance_loses_nothing(pair, connect):
    a, b = pair
    host, p = await connect(a), await connect(a)
    await host.join("r", "host")
    await p.join("r", "participant")
    await host.expect("peer-joined")
    await p.ws.close(code=4000)                      # dropped
    await asyncio.sleep(0.1)
    for n in range(10):
        await host.send(type="candidate", to=p.id, data=n)
    await host.request("ping", "pong")
    again = await connect(b, f"/ws?resume={p.token}&ack={p.last_seq}")
    assert (again.welcome["id"], again.welcome["room"], again.welcome["lost"]) == (p.id, "r", 0)
    assert [(await again.expect("candidate"))["data"] for _ in range(10)] == list(range(10))
    await host.send(type="offer", to=p.id, data="live")   # now routed to instance b
    assert (await again.expect("offer"))["data"] == "live"
    await host.nothing()                                   # no peer-left for the drop


async def test_a_late_release_cannot_undo_a_newer_resume(pair, connect):
    """The old socket's release landing after the new socket's claim on the same
    instance (a slow Redis round trip) leaves the session with the new socket."""
    import time

    from signaling.keys import HUB

    a, b = pair
    hub = a.app[HUB]
    p, other = await connect(a), await connect(b)
    stale_gen = hub.sessions[p.id].gen
    await p.ws.close(code=4000)
    await asyncio.sleep(0.1)
    again = await connect(a, f"/ws?resume={p.token}&ack={p.last_seq}")
    assert again.welcome["id"] == p.id
    store = hub.backend.store
    released = await store.release(p.id, 0, time.time() + 60, stale_gen)
    assert released == 0
    assert await store.client.hget(f"sig:s:{p.id}", "inst") == store.name.encode()
    await other.send(type="offer", to=p.id, data="after the race")
    assert (await again.expect("offer"))["data"] == "after the race"


async def test_resume_elsewhere_closes_the_old_socket(pair, connect):
    a, b = pair
    p = await connect(a)
    again = await connect(b, f"/ws?resume={p.token}&ack=0")
    msg = await p.ws.receive(timeout=3)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1008
    assert again.welcome["id"] == p.id


async def test_polling_needs_no_sticky_sessions(pair, connect):
    a, b = pair
    resp = await a.post("/api/sessions")
    info = await resp.json()
    auth = {"Authorization": f"Bearer {info['token']}"}
    peer = await connect(b)
    # send through A, receive through B, answer, receive through A
    resp = await a.post(f"/api/sessions/{info['id']}/messages", json={"type": "offer", "to": peer.id, "data": 1},
                        headers=auth)
    assert resp.status == 202
    assert (await peer.expect("offer"))["from"] == info["id"]
    poll = asyncio.create_task(b.get(f"/api/sessions/{info['id']}/messages?wait=10", headers=auth))
    await asyncio.sleep(0.2)
    await peer.send(type="answer", to=info["id"], data=2)
    msgs = await (await asyncio.wait_for(poll, 5)).json()
    assert [(m["type"], m["data"]) for m in msgs] == [("answer", 2)]
    await peer.send(type="candidate", to=info["id"], data=3)
    await peer.request("ping", "pong")
    resp = await a.get(f"/api/sessions/{info['id']}/messages?wait=0", headers=auth)
    assert [m["data"] for m in await resp.json()] == [3]


async def test_drain_sends_peers_elsewhere_without_peer_left(pair, connect):
    from signaling.keys import HUB

    a, b = pair
    host, p = await connect(b), await connect(a)
    await host.join("r", "host")
    await p.join("r", "participant")
    await host.expect("peer-joined")
    await a.app[HUB].drain()
    msg = await p.ws.receive(timeout=3)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001
    await host.send(type="offer", to=p.id, data="while away")
    again = await connect(b, f"/ws?resume={p.token}&ack={p.last_seq}")
    assert (await again.expect("offer"))["data"] == "while away"
    await host.nothing()


async def test_ready_follows_redis(aiohttp_client, redis_server):
    """Redis going away turns /ready to 503; its return brings the instance back by itself."""
    proxy_port = await _start_tcp_proxy(redis_server["port"])
    url = f"redis://:test-secret@127.0.0.1:{proxy_port.port}/0"
    client = await aiohttp_client(create_app(config.make(redis_url=url, heartbeat=1, idle_timeout=2)))
    assert (await client.get("/ready")).status == 200
    proxy_port.pause()
    for _ in range(50):
        if (await client.get("/ready")).status == 503:
            break
        await asyncio.sleep(0.2)
    assert (await client.get("/ready")).status == 503
    proxy_port.resume()
    for _ in range(50):
        if (await client.get("/ready")).status == 200:
            break
        await asyncio.sleep(0.2)
    assert (await client.get("/ready")).status == 200
    await proxy_port.close()


class _TcpProxy:
    """A loopback TCP relay we can cut, to make Redis unreachable without killing the shared server.

    While paused it cuts every link, old and new (connections are accepted and reset). The
    listener stays open until ``await close()``: on Python 3.11 a connection accepted just before
    its listener closes leaks its socket (``Server._attach`` fails), so the listener is closed
    once, at the end, after the accepts in flight have reached their handler."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.paused = False
        self.links: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            if self.paused:
                writer.transport.abort()
                return
            self.links.add(writer)
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
            except OSError:
                writer.transport.abort()
                return
            if writer.transport.is_closing():  # cut while we were connecting upstream
                up_w.transport.abort()
                return
            self.links.add(up_w)

            async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                except OSError:
                    pass
                finally:
                    dst.transport.abort()

            await asyncio.gather(pump(reader, up_w), pump(up_r, writer))
        finally:
            self.tasks.discard(task)

    def pause(self) -> None:
        self.paused = True
        for w in self.links:
            w.transport.abort()
        self.links.clear()

    def resume(self) -> None:
        self.paused = False

    async def close(self) -> None:
        assert self.server is not None
        self.pause()
        await asyncio.sleep(0.1)  # accepts in flight reach their handler, which cuts them
        self.server.close()
        await self.server.wait_closed()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)
        await asyncio.sleep(0)  # aborted transports close their sockets on the next turn of the loop


async def _start_tcp_proxy(target: int) -> _TcpProxy:
    proxy = _TcpProxy(target)
    await proxy.start()
    return proxy


async def test_polling_answers_503_while_redis_is_away(aiohttp_client, redis_server):
    """A long-polling request that needs Redis gets 503 `unavailable` (and retries), not a 500."""
    link = await _start_tcp_proxy(redis_server["port"])
    url = f"redis://:test-secret@127.0.0.1:{link.port}/0"
    client = await aiohttp_client(create_app(config.make(redis_url=url)))
    info = await (await client.post("/api/sessions")).json()
    auth = {"Authorization": f"Bearer {info['token']}"}
    link.pause()
    try:
        for method, path in [("POST", "/api/sessions"), ("GET", f"/api/sessions/{info['id']}/messages?wait=0")]:
            resp = await client.request(method, path, headers=auth)
            assert resp.status == 503, (method, path, await resp.text())
            assert (await resp.json())["code"] == "unavailable"
        metrics = await (await client.get("/metrics")).text()
        assert 'code="unavailable"' in metrics
    finally:
        link.resume()
    for _ in range(50):
        resp = await client.get(f"/api/sessions/{info['id']}/messages?wait=0", headers=auth)
        if resp.status == 200:
            break
        await asyncio.sleep(0.2)
    assert resp.status == 200, await resp.text()
    await link.close()


async def test_a_burst_beyond_the_redis_pool_queues_instead_of_failing(aiohttp_client, redis_url):
    """More requests at once than the instance has Redis connections (a proxy reload
    sending every peer back together) wait for a connection: none gets 503."""
    from signaling.cluster import REDIS_CONNECTIONS

    client = await aiohttp_client(create_app(config.make(redis_url=redis_url)))

    async def create() -> int:
        async with client.post("/api/sessions") as resp:  # read and released: no socket left behind
            await resp.read()
            return resp.status

    statuses = await asyncio.gather(*(create() for _ in range(2 * REDIS_CONNECTIONS)))
    assert set(statuses) == {201}


async def test_first_messages_after_redis_returns_are_handled(aiohttp_client, redis_server):
    """Connections of the pool from before an outage do not turn the first messages after
    it into `unavailable` (redis-py reconnects them on checkout)."""
    link = await _start_tcp_proxy(redis_server["port"])
    url = f"redis://:test-secret@127.0.0.1:{link.port}/0"
    client = await aiohttp_client(create_app(config.make(redis_url=url)))
    wss = [await client.ws_connect("/ws") for _ in range(20)]  # enough to use many pooled connections
    try:
        for ws in wss:
            await ws.receive_json()
        for ws in wss:
            await ws.send_str('{"type":"ping"}')
        for ws in wss:
            assert (await ws.receive_json())["type"] == "pong"
        link.pause()
        await asyncio.sleep(1)
        link.resume()
        for _ in range(100):
            if (await client.get("/ready")).status == 200:
                break
            await asyncio.sleep(0.1)
        for ws in wss:
            await ws.send_str('{"type":"ping"}')
        got = [await ws.receive_json() for ws in wss]
        assert all(g["type"] == "pong" for g in got), got
    finally:
        for ws in wss:
            await ws.close()
        await client.close()  # the app's Redis connections go before the relay they run through
        await link.close()
