"""default scenario: one Debian host in every group, behind nginx.

The shared checks (molecule/common/deployment_checks.py: services, sockets,
files, TLS, headers, redirects, WebSocket and polling signaling, failover,
status pages, uploads, error pages), the real browser call
(molecule/common/browser_checks.py) and the others molecule.yml selects run
against this deployment; what is below is what only this scenario promises.
"""

from __future__ import annotations

import fcntl
import subprocess

import pytest
from deployment_checks import proxy_host, proxy_kind, site  # noqa: F401 (fixtures)
from testinfra_helpers import DEFAULT_CPU_SHARES, LOAD_LOCK, cpu_first, inventory_hosts

testinfra_hosts = inventory_hosts("all")


def test_one_host_in_every_group():
    assert {name for group in ("signaling_app", "proxy", "redis", "turn")
            for name in inventory_hosts(group)} == set(inventory_hosts("all"))
    assert len(inventory_hosts("all")) == 1


def test_deploys_nginx(proxy_kind):
    assert proxy_kind == "nginx"


def test_two_instances_share_redis(host):
    """Two instances need Redis: both point at it and it answers them."""
    assert host.ansible.get_variables()["signaling_app_instances"] == 2
    config = host.file("/etc/signaling/signaling.toml").content_string
    assert 'redis_url = "redis://' in config
    for port in (8081, 8082):
        metrics = host.check_output(f"curl -sf http://127.0.0.1:{port}/metrics")
        assert "signaling_redis_up 1" in metrics


def test_extra_location_served(site):
    """An extra location from the inventory is served, with the site's security headers, and a
    line added to a built-in location reaches its answers."""
    robots = site.get("/robots.txt")
    assert (robots.status, robots.body) == (200, b"User-agent: *")
    assert robots.headers["Content-Type"].startswith("text/plain")
    assert robots.headers["Strict-Transport-Security"]
    assert robots.headers["X-Content-Type-Options"] == "nosniff"
    api = site.get("/api/ice-servers")
    assert (api.status, api.headers["X-Robots-Tag"]) == (200, "noindex")
    assert site.get("/health").headers["X-Robots-Tag"] is None


def test_site_written_from_the_replaced_template(host):
    """nginx_site_template names the scenario's template: nginx runs the site it wrote."""
    loaded = host.check_output("nginx -T 2>/dev/null")
    assert "# Written from the default scenario's nginx_site_template" in loaded
    assert "ssl_certificate /etc/webrtc-edge/tls/fullchain.pem;" in loaded


def test_cpu_first_weights_the_containers_then_gives_back():
    """The harness's cpu_first (load-timed checks: the flood, resilience) raises this
    scenario's CPU weight for its block, holding the machine's lock so that no other such block
    runs, and leaves Docker's default and the lock after, even on an error."""
    name = inventory_hosts("all")[0]

    def shares() -> int:
        return int(subprocess.run(["docker", "inspect", "-f", "{{.HostConfig.CpuShares}}", name],
                                  check=True, capture_output=True, text=True).stdout)

    def locked() -> bool:
        """Whether another cpu_first block holds the machine's lock (tried without waiting)."""
        with open(LOAD_LOCK, "a") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    with pytest.raises(RuntimeError), cpu_first():
        assert shares() == 8 * DEFAULT_CPU_SHARES
        assert locked()
        raise RuntimeError("inside the block")
    assert shares() == DEFAULT_CPU_SHARES
    assert not locked()
