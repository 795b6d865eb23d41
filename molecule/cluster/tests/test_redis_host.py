"""cluster verify, on the redis host: it runs the server its release or inventory asks for
(issue 14: Redis on Debian 12, Valkey on Debian 13, or the inventory's ``redis_server``),
which listens on its private address (and loopback), never on every address, and refuses
clients without the password, while the app hosts reach it with the password they were
given. That it is up is deployment_checks' part (test_deployment.py).

    bash tests/tools/run-matrix.sh cluster@bookworm   # Debian 12: Redis
    bash tests/tools/run-matrix.sh cluster@trixie     # Debian 13: Valkey
"""

from __future__ import annotations

import pytest
from testinfra_helpers import (
    assert_unit_up,
    container_address,
    inventory_host,
    inventory_hosts,
    redis_flavour,
    redis_flavours,
    redis_server_expected,
)

testinfra_hosts = inventory_hosts("redis")
APP_HOSTS = inventory_hosts("signaling_app")

# Speaks RESP over a plain socket from an app host (which has no redis-cli):
# argv[1] = address, argv[2] = "auth" to send the password of the app's own config (read
# there, so that it is never on a command line) or "" for none; prints the reply to PING.
RESP_PING = """
import socket, sys, tomllib
from urllib.parse import unquote, urlsplit
with socket.create_connection((sys.argv[1], 6379), timeout=5) as s:
    f = s.makefile("rwb")
    if sys.argv[2]:
        with open("/etc/signaling/signaling.toml", "rb") as config:
            password = unquote(urlsplit(tomllib.load(config)["redis_url"]).password)
        f.write(b"AUTH " + password.encode() + b"\\r\\n"); f.flush()
        assert f.readline() == b"+OK\\r\\n"
    f.write(b"PING\\r\\n"); f.flush()
    print(f.readline().decode().strip())
"""


def redis_ping(app, address: str, with_password: bool) -> str:
    return app.check_output("python3 -c %s %s %s", RESP_PING, address, "auth" if with_password else "")


@pytest.fixture
def address(host) -> str:
    """The redis host's private address."""
    return container_address(host.backend.get_hostname())


def test_runs_the_server_its_release_or_inventory_asks_for(host):
    """The one the redis role chooses on a fresh host, up; the other one neither enabled nor running."""
    flavour = redis_flavour(host)
    assert flavour["name"] == redis_server_expected(host)
    assert_unit_up(host, flavour["unit"])
    for name, other in redis_flavours().items():
        if name != flavour["name"]:
            assert not host.service(other["unit"]).is_running, other["unit"]


def test_listens_on_the_private_address_not_everywhere(host, address):
    bound = {s for s in host.socket.get_listening_sockets() if s.endswith(":6379")}
    assert f"tcp://{address}:6379" in bound
    assert not bound & {"tcp://0.0.0.0:6379", "tcp://:::6379"}, bound


@pytest.mark.parametrize("app_name", APP_HOSTS)
def test_refuses_clients_without_the_password(address, app_name):
    reply = redis_ping(inventory_host(app_name), address, with_password=False)
    assert reply.startswith("-NOAUTH"), reply


@pytest.mark.parametrize("app_name", APP_HOSTS)
def test_app_hosts_reach_it_with_their_password(address, app_name):
    app = inventory_host(app_name)
    assert app.file("/etc/signaling/signaling.toml").contains(f"@{address}:6379/")
    assert redis_ping(app, address, with_password=True) == "+PONG"
