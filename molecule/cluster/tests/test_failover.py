"""cluster verify, from the controller: losing a whole app host behind the proxy.

Peers connect through the proxy (which spreads them over all four instances),
then both instances of app host 1 are stopped with systemctl. The peers that
were on app host 1 are closed; the others stay. Meanwhile the proxy keeps
serving: requests answer 200 and new WebSocket peers get a welcome. The closed
peers resume through the proxy (so on app host 2) with their ids, and get the
messages a surviving peer sent them while they were away. Starting the
instances again brings app host 1 back to ready. (Losing one instance is
deployment_checks' test_instance_failover.)
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from cluster_hosts import instance_port, instance_units
from cluster_peers import closed_by_server, instance_session, resume
from deployment_checks import Site, WsPeer, _exchange
from testinfra_helpers import inventory_host, inventory_hosts

# Controller-side test: run once, whatever the host.
testinfra_hosts = inventory_hosts("proxy")

PEERS = 8  # two per instance when spread evenly


async def wait_ready(host_name: str, ports: list[int], timeout: float = 60) -> None:
    """Wait until each instance answers /ready with 200 (at the container's address)."""
    async with asyncio.timeout(timeout):
        for port in ports:
            async with instance_session(host_name, port) as session:
                while True:
                    try:
                        async with session.get("/ready") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(1)


@pytest.mark.asyncio
async def test_proxy_survives_the_loss_of_an_app_host():
    site = Site(inventory_hosts("proxy")[0])
    app1_name = inventory_hosts("signaling_app")[0]
    app1 = inventory_host(app1_name)
    units = instance_units(app1)
    async with site.session() as session:
        peers = [await WsPeer.connect(session) for _ in range(PEERS)]
        try:
            # Read every socket while the instances drain, so their close handshakes
            # complete; a peer still open shortly after the stop was on app host 2.
            watches = [asyncio.create_task(closed_by_server(p, timeout=60)) for p in peers]
            await asyncio.to_thread(app1.check_output, "systemctl stop " + " ".join(units))
            await asyncio.sleep(2)
            for watch in watches:
                watch.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
            codes = [None if w.cancelled() else w.result() for w in watches]
            dropped = [p for p, code in zip(peers, codes, strict=True) if code is not None]
            survivors = [p for p, code in zip(peers, codes, strict=True) if code is None]
            assert dropped and survivors, f"close codes through the proxy: {codes}"
            assert not any(app1.service(unit).is_running for unit in units)

            # A survivor writes to each dropped peer while it is away.
            sender = survivors[0]
            for peer in dropped:
                await sender.send(type="offer", to=peer.id, data={"for": peer.id})

            # The proxy keeps serving: plain requests and new WebSocket peers.
            for _ in range(10):
                async with session.get("/health") as resp:
                    assert resp.status == 200, await resp.text()
            for _ in range(4):
                await (await WsPeer.connect(session)).ws.close()

            # The dropped peers resume through the proxy and get what they missed.
            for peer in dropped:
                resumed = await resume(session, peer)
                offer = await resumed.expect("offer")
                assert (offer["from"], offer["data"]) == (sender.id, {"for": peer.id})
                await _exchange(resumed, sender)
        finally:
            app1.run("systemctl start " + " ".join(units))
    await wait_ready(app1_name, [instance_port(unit) for unit in units])
    assert all(app1.service(unit).is_running for unit in units)
