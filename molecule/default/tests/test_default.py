"""default scenario, first checks: the one-host deployment is up behind nginx.

A starting point; the full verify of the deployment issue (headers, TLS
versions, WebSocket and polling peers, failover, uploads...) grows from here.
"""

from __future__ import annotations

import os
import socket
import ssl

import pytest
from testinfra_helpers import inventory_hosts, published_port

testinfra_hosts = inventory_hosts("all")

# The run's local CA (tls_ca_dir in molecule.yml), the trust anchor of the
# certificate the proxy serves.
CA_FILE = os.path.join(
    os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "credentials", "tls-ca", "ca.pem"
)


def test_boot_is_clean(host):
    state = host.run("systemctl is-system-running --wait").stdout.strip()
    if state != "running":
        print(host.run("systemctl --failed --no-pager").stdout)
    assert state == "running"


@pytest.mark.parametrize("unit", ["nginx", "redis-server", "coturn"])
def test_service_up(assert_service_up, unit):
    assert_service_up(unit)


def test_app_instances_up(host, assert_service_up):
    units = host.check_output(
        "systemctl list-units --all --plain --no-legend --type=service 'signaling@*' | cut -d' ' -f1"
    ).split()
    assert units, "no signaling@ instance units"
    for unit in units:
        assert_service_up(unit)


def test_apache_absent_or_stopped(host):
    assert not host.service("apache2").is_running


def test_nginx_config_valid(host):
    assert host.run("nginx -t").rc == 0


def test_https_chains_to_the_local_ca(host):
    port = published_port(host.backend.get_hostname(), 443)
    context = ssl.create_default_context(cafile=CA_FILE)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
