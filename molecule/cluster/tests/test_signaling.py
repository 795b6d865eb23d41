"""cluster verify, from the controller: the four instances on two hosts are one
service over Redis.

Peers pinned to instances on different app hosts (each instance reached at its
container's own address) join one room and trade offer/answer/candidate; a
long-polling peer whose requests go to instances on both hosts in turn (no
sticky sessions) talks to a WebSocket peer; and a peer that drops on app host 1
resumes on app host 2 with its id and room, and gets what was sent to it
meanwhile, in order. Peers through the proxy's wss:// port are
deployment_checks' part (test_deployment.py).
"""

from __future__ import annotations

import secrets
from contextlib import AsyncExitStack

import aiohttp
import pytest
from cluster_hosts import app_instances
from cluster_peers import AlternatingPoller, instance_session, resume
from deployment_checks import WsPeer, _exchange
from testinfra_helpers import inventory_hosts

# Controller-side tests: run once, whatever the host.
testinfra_hosts = inventory_hosts("proxy")


@pytest.fixture(scope="module")
def instances() -> list[tuple[str, int]]:
    """Every instance as (app host, port), interleaved: app1:a, app2:a, app1:b, app2:b."""
    per_host = [[(name, port) for port in ports] for name, ports in app_instances().items()]
    assert len(per_host) == 2 and all(len(ports) == 2 for ports in per_host), per_host
    return [instance for pair in zip(*per_host, strict=True) for instance in pair]


async def sessions(stack: AsyncExitStack, instances) -> dict[tuple[str, int], aiohttp.ClientSession]:
    """A session on each instance, closed with ``stack``, by (app host, port) in ``instances``' order."""
    return {i: await stack.enter_async_context(instance_session(*i)) for i in instances}


async def join(peer, room: str, role: str) -> dict:
    await peer.send(type="join", room=room, role=role, name=role)
    return await peer.expect("joined")


async def join_room(room: str, host, participant) -> None:
    """``host`` and ``participant`` join ``room``; each learns of the other."""
    await join(host, room, "host")
    assert [p["id"] for p in (await join(participant, room, "participant"))["peers"]] == [host.id]
    assert (await host.expect("peer-joined"))["peer"]["id"] == participant.id


def new_room() -> str:
    return f"cluster-{secrets.token_hex(6)}"


@pytest.mark.asyncio
async def test_every_instance_is_ready(instances):
    """/ready answers 200 only while the instance reaches Redis."""
    async with AsyncExitStack() as stack:
        for instance, session in (await sessions(stack, instances)).items():
            async with session.get("/ready") as resp:
                assert resp.status == 200, f"{instance}: {resp.status} {await resp.text()}"


@pytest.mark.asyncio
async def test_ws_peers_on_different_app_hosts_talk(instances):
    async with AsyncExitStack() as stack:
        app1_a, _app2_a, _, app2_b = (await sessions(stack, instances)).values()
        host = await WsPeer.connect(app1_a)
        participant = await WsPeer.connect(app2_b)
        await join_room(new_room(), host, participant)
        await _exchange(participant, host)
        await _exchange(host, participant)


@pytest.mark.asyncio
async def test_polling_peer_alternating_hosts_talks_to_ws_peer(instances):
    async with AsyncExitStack() as stack:
        every = await sessions(stack, instances)
        host = await WsPeer.connect(every[instances[1]])
        poller = await AlternatingPoller.start(every)
        await join_room(new_room(), host, poller)
        await _exchange(poller, host)
        await _exchange(host, poller)
    assert {host_name for host_name, _ in poller.visited} == set(inventory_hosts("signaling_app")), poller.visited


@pytest.mark.asyncio
async def test_resume_on_the_other_app_host_replays_in_order(instances):
    room = new_room()
    async with AsyncExitStack() as stack:
        app1_a, app2_a, _, app2_b = (await sessions(stack, instances)).values()
        host = await WsPeer.connect(app1_a)
        participant = await WsPeer.connect(app2_a)
        await join_room(room, host, participant)

        await host.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)  # a drop, not the end of the session
        for n in range(5):
            await participant.send(type="candidate", to=host.id, data={"n": n})

        resumed = await resume(app2_b, host)
        assert (resumed.welcome["room"], resumed.welcome["role"]) == (room, "host")
        assert resumed.welcome.get("lost", 0) == 0
        replayed = [await resumed.ws.receive_json(timeout=10) for _ in range(5)]
        assert [(m["type"], m["from"], m["data"]) for m in replayed] == [
            ("candidate", participant.id, {"n": n}) for n in range(5)
        ]
        seqs = [m["seq"] for m in replayed]
        assert seqs == list(range(seqs[0], seqs[0] + 5)), seqs
        await _exchange(participant, resumed)
