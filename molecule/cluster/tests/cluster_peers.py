"""What the cluster verify adds to deployment_checks' signaling peers.

Peers pinned to one app instance: an aiohttp session whose base URL is the
instance at its container's own address, used with deployment_checks'
``WsPeer``. A long-polling peer with no stickiness: each request goes to the
next instance in turn, as a balancer without sticky sessions would send it.
And watching a peer's socket for the server closing it.
"""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
from deployment_checks import PollingPeer, WsPeer
from testinfra_helpers import container_address


def instance_session(host_name: str, port: int) -> aiohttp.ClientSession:
    """A session on instance ``port`` of app host ``host_name`` (create it inside the event loop)."""
    return aiohttp.ClientSession(
        base_url=f"http://{container_address(host_name)}:{port}", timeout=aiohttp.ClientTimeout(total=60)
    )


class AlternatingPoller(PollingPeer):
    """A ``PollingPeer`` whose every request goes to the next instance in turn.

    ``instances`` maps each instance's name, ``(app host, port)``, to its session;
    ``visited`` lists the instance of each request, in order.
    """

    def __init__(self, instances: dict[tuple[str, int], aiohttp.ClientSession], created: dict) -> None:
        self._turn = itertools.cycle(instances.items())
        self.visited: list[tuple[str, int]] = []
        super().__init__(next(iter(instances.values())), created)

    @property
    def http(self) -> aiohttp.ClientSession:
        """The session of the next request (PollingPeer reads it once per request)."""
        instance, session = next(self._turn)
        self.visited.append(instance)
        return session

    @http.setter
    def http(self, _value: aiohttp.ClientSession) -> None:
        """PollingPeer's constructor sets one session; the cycle replaces it."""

    @classmethod
    async def start(cls, instances: dict[tuple[str, int], aiohttp.ClientSession]) -> AlternatingPoller:
        async with next(iter(instances.values())).post("/api/sessions") as resp:
            assert resp.status == 201, await resp.text()
            return cls(instances, await resp.json())


async def resume(session: aiohttp.ClientSession, peer: WsPeer) -> WsPeer:
    """Reconnect ``peer``'s session through ``session``; the welcome must say resumed."""
    resumed = await WsPeer.connect(session, f"?resume={peer.token}&ack={peer.last_seq}")
    assert resumed.welcome.get("resumed") is True, resumed.welcome
    assert resumed.id == peer.id
    return resumed


async def closed_by_server(peer: WsPeer, timeout: float) -> int | None:
    """The close code (1006 if none came) if the server closes ``peer`` within ``timeout``, else None.

    Messages arriving meanwhile are read (so close handshakes complete) and dropped.
    """
    try:
        async with asyncio.timeout(timeout):
            while (msg := await peer.ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
    except TimeoutError:
        return None
    if msg.type == aiohttp.WSMsgType.CLOSE:
        return msg.data  # the server's code, even if aiohttp's reply then met a closed socket
    return peer.ws.close_code or aiohttp.WSCloseCode.ABNORMAL_CLOSURE
