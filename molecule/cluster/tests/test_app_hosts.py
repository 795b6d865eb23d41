"""cluster verify, on each app host: its instances listen on the host's private
address and nowhere else (the proxy is another host, so not on loopback
either), and no other tier runs there. That they are up, as their own user,
is deployment_checks' part (test_deployment.py)."""

from __future__ import annotations

import pytest
from cluster_hosts import instance_port, instance_units
from testinfra_helpers import container_address, inventory_hosts, redis_flavours

testinfra_hosts = inventory_hosts("signaling_app")


def test_two_instances(host):
    assert len(instance_units(host)) == 2


def test_instances_listen_on_the_private_address_only(host):
    address = container_address(host.backend.get_hostname())
    listening = host.socket.get_listening_sockets()
    for port in map(instance_port, instance_units(host)):
        bound = [s for s in listening if s.startswith("tcp") and s.endswith(f":{port}")]
        assert bound == [f"tcp://{address}:{port}"], f"port {port}: {bound}"


@pytest.mark.parametrize("unit", ["nginx.service", "apache2.service", *(f["unit"] for f in redis_flavours().values())])
def test_no_other_tier_here(host, unit):
    assert not host.service(unit).is_running
