"""cluster verify, on the proxy host: no app instance runs there, the
upstream list in the proxy's configuration is every instance of every app host
(built from the inventory), nothing more, and uploads are kept on one app host.
That the chosen proxy runs with a valid configuration is deployment_checks'
part (test_deployment.py)."""

from __future__ import annotations

import re

from cluster_hosts import app_instances, instance_units
from deployment_checks import Site, _multipart
from testinfra_helpers import container_address, inventory_host, inventory_hosts

testinfra_hosts = inventory_hosts("proxy")

# proxy_server -> (command printing the whole configuration, pattern of an upstream member)
UPSTREAMS = {
    "nginx": ("nginx -T", r"^\s*server\s+([0-9.]+):(\d+)\b"),
    "apache": ("cat /etc/apache2/sites-enabled/*.conf", r'^\s*BalancerMember\s+"?\w+://([0-9.]+):(\d+)'),
}


def test_no_app_instance_here(host):
    assert instance_units(host) == []


def test_upstreams_are_every_instance_of_every_app_host(host):
    dump, member = UPSTREAMS[host.ansible.get_variables()["proxy_server"]]
    members = {(address, int(port)) for address, port in re.findall(member, host.check_output(dump), re.MULTILINE)}
    expected = {(container_address(name), port) for name, ports in app_instances().items() for port in ports}
    assert len(expected) == 2 * len(inventory_hosts("signaling_app"))
    assert members == expected


def test_uploads_are_stored_on_the_uploads_host_only():
    """The proxy is not an app host, so uploads go to the instances of
    ``proxy_uploads_host`` (default: the first app host): the file lands there and
    nowhere else, and the proxy fetches it back from there."""
    site = Site(inventory_hosts("proxy")[0])
    body, ctype = _multipart("note.txt", "text/plain", b"kept on one app host\n")
    created = site.request("POST", "/api/uploads", body=body, headers={"Content-Type": ctype})
    assert created.status == 201, created.body
    name = created.json()["url"].removeprefix("/uploads/")
    uploads_host, *others = inventory_hosts("signaling_app")
    assert inventory_host(uploads_host).file(f"/var/lib/signaling/uploads/{name}").is_file
    for other in others:
        assert not inventory_host(other).file(f"/var/lib/signaling/uploads/{name}").exists
    assert site.get(f"/uploads/{name}").body == b"kept on one app host\n"
