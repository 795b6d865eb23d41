"""The exporters (role exporters) and the app's process metrics, checked on the deployed hosts.

Group ``exporters`` (a scenario selects it with ``--checks``: molecule/common/testinfra_plugin.py).
Where each exporter runs and where it listens follow from the inventory, not from the role's
files: node on every host of the deployment, nginx or Apache on the proxy (``proxy_server``),
Redis on the redis hosts; on 127.0.0.1 without a ``monitoring`` group, else on the host's
private address (which the firewall opens to the monitoring hosts alone: firewall_checks.py
probes them from every side). Each is read where it listens, from the host itself, and must
show what it exports from the real thing it watches (the proxy's status page, Redis with its
password, systemd, the textfile directory).
"""

from __future__ import annotations

import re
from functools import cache

import pytest
from testinfra_helpers import container_address, instance_ports, inventory_host, inventory_hosts, redis_flavour

pytestmark = pytest.mark.exporters  # the group a scenario selects with --checks (testinfra_plugin.py)

DEPLOYMENT_GROUPS = ("signaling_app", "proxy", "redis", "turn")
PORTS = {"node": 9100, "nginx": 9113, "apache": 9117, "redis": 9121}
PACKAGE = {name: f"prometheus-{name}-exporter" for name in PORTS}
STATUS_PORT = 8405  # proxy_status_port
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"

# Reads argv[1] and prints it: python3 is on every host, curl need not be.
_FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


@cache
def _deployment_hosts() -> tuple[str, ...]:
    return tuple(sorted({h for g in DEPLOYMENT_GROUPS for h in inventory_hosts(g)}))


@cache
def _proxy_kind() -> str:
    proxy = inventory_host(inventory_hosts("proxy")[0])
    return proxy.ansible.get_variables().get("proxy_server", "nginx")


def _exporters(name: str) -> list[str]:
    """The exporters host ``name`` must run, from its groups."""
    found = ["node"]
    if name in inventory_hosts("proxy"):
        found.append(_proxy_kind())
    if name in inventory_hosts("redis"):
        found.append("redis")
    return found


def _listen_address(name: str) -> str:
    return container_address(name) if inventory_hosts("monitoring") else "127.0.0.1"


def scrape(host, name: str, exporter: str) -> str:
    """The exporter's /metrics, read on its own host at the address it listens on."""
    return host.check_output("python3 -c %s %s", _FETCH, f"http://{_listen_address(name)}:{PORTS[exporter]}/metrics")


def sample(text: str, pattern: str) -> float:
    """The value of the one sample whose name and labels match ``pattern`` (a regex)."""
    found = re.findall(rf"^{pattern} (\S+)$", text, re.MULTILINE)
    assert len(found) == 1, f"{pattern}: {len(found)} samples"
    return float(found[0])


def _listeners(host, port: int) -> set[str]:
    """Local addresses something listens on at TCP ``port``."""
    out = host.check_output(f"ss -Hltn 'sport = :{port}'")
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


@pytest.mark.parametrize("name", _deployment_hosts())
def test_exporters_run_and_listen_where_they_should(name):
    host = inventory_host(name)
    for exporter in PORTS:
        service = host.service(PACKAGE[exporter])
        if exporter not in _exporters(name):
            assert not service.is_running, f"{PACKAGE[exporter]} runs on {name}"
            continue
        try:
            assert service.is_enabled and service.is_running, f"{PACKAGE[exporter]} on {name}"
        except AssertionError:
            print(host.run(f"journalctl --no-pager -n 40 -u {PACKAGE[exporter]}").stdout)
            raise
        assert _listeners(host, PORTS[exporter]) == {_listen_address(name)}, exporter


def test_status_page_listens_on_loopback_alone():
    proxy = inventory_host(inventory_hosts("proxy")[0])
    assert _listeners(proxy, STATUS_PORT) == {"127.0.0.1"}


@pytest.mark.parametrize("name", _deployment_hosts())
def test_node_exporter_reports_our_units_alone(name):
    host = inventory_host(name)
    text = scrape(host, name, "node")
    assert sample(text, r'node_scrape_collector_success\{collector="systemd"\}') == 1
    units = set(re.findall(r'^node_systemd_unit_state\{name="([^"]+)"', text, re.MULTILINE))
    ours = {"webrtc-edge-firewall.service"}
    if name in inventory_hosts("proxy"):
        ours.add({"nginx": "nginx.service", "apache": "apache2.service"}[_proxy_kind()])
    if name in inventory_hosts("signaling_app"):
        ours |= {f"signaling@{port}.service" for port in instance_ports(host)}
    if name in inventory_hosts("redis"):
        ours.add(redis_flavour(host)["unit"])  # redis-server.service or valkey-server.service
    if name in inventory_hosts("turn"):
        ours.add("coturn.service")
    assert units == ours  # systemd's own units (cron, dbus, ...) are left out
    for unit in ours:
        pattern = rf'node_systemd_unit_state\{{name="{re.escape(unit)}",state="active"(?:,type="[a-z-]*")?\}}'
        assert sample(text, pattern) == 1


@pytest.mark.parametrize("name", _deployment_hosts())
def test_node_exporter_reads_the_textfile_directory(name):
    """A file dropped into the textfile directory (where the tls role writes its metrics) is
    exported at the next scrape; the exporter reads every file there without error."""
    host = inventory_host(name)
    probe = f"{TEXTFILE_DIR}/molecule_probe.prom"
    with host.sudo():
        host.check_output(f"printf 'molecule_probe_value 42\\n' > {probe}.tmp && mv {probe}.tmp {probe}")
    try:
        text = scrape(host, name, "node")
    finally:
        with host.sudo():
            host.check_output(f"rm -f {probe}")
    assert sample(text, "molecule_probe_value") == 42
    assert sample(text, "node_textfile_scrape_error") == 0


def test_proxy_exporter_reads_the_status_page():
    name = inventory_hosts("proxy")[0]
    host, kind = inventory_host(name), _proxy_kind()
    before = scrape(host, name, kind)
    assert sample(before, f"{kind}_up") == 1
    counter = {"nginx": "nginx_http_requests_total", "apache": "apache_accesses_total"}[kind]
    if kind == "apache":
        assert sample(before, 'apache_scoreboard{state="idle"}') > 0  # ExtendedStatus: the scoreboard is read
    first = sample(before, counter)
    for _ in range(3):
        host.check_output("python3 -c %s %s", _FETCH, f"http://127.0.0.1:{STATUS_PORT}/"
                          + ("nginx_status" if kind == "nginx" else "server-status?auto"))
    assert sample(scrape(host, name, kind), counter) > first


@pytest.mark.parametrize("name", inventory_hosts("redis"))
def test_redis_exporter_reads_redis_with_its_password(name):
    host = inventory_host(name)
    text = scrape(host, name, "redis")
    assert sample(text, "redis_up") == 1
    assert sample(text, r"redis_connected_clients") >= 1
    with host.sudo():
        secret = host.file("/etc/webrtc-edge/redis-exporter.json")
        assert (secret.user, secret.group, secret.mode) == ("root", "prometheus", 0o640)
        settings = f"{redis_flavour(host)['config_dir']}/webrtc-edge.conf"  # Redis's or Valkey's
        password = re.search(r"^requirepass (\S+)$", host.file(settings).content_string, re.MULTILINE)
        assert password, f"no requirepass in {settings}"
        pid = host.check_output(f"systemctl show -P MainPID {PACKAGE['redis']}")
        cmdline = host.check_output(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
        environ = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    assert "--redis.password-file=/etc/webrtc-edge/redis-exporter.json" in cmdline
    assert password.group(1) not in cmdline and password.group(1) not in environ


@pytest.mark.parametrize("name", inventory_hosts("signaling_app"))
def test_app_exports_process_metrics(name):
    """Each instance's /metrics (prometheus_client's process collector): open files against the
    unit's LimitNOFILE, memory."""
    host = inventory_host(name)
    address = re.search(r"--host (\S+)", host.check_output("systemctl cat signaling@.service")).group(1)
    for port in instance_ports(host):
        url = f"http://{address}:{port}/metrics"
        text = host.check_output("python3 -c %s %s", _FETCH, url)
        # The unit's LimitNOFILE as the process got it (systemd clamps it to the machine's limit).
        pid = host.check_output(f"systemctl show -P MainPID signaling@{port}")
        limits = host.check_output(f"cat /proc/{pid}/limits")
        limit = int(re.search(r"^Max open files\s+(\d+)", limits, re.MULTILINE).group(1))
        assert sample(text, "process_max_fds") == limit
        assert 0 < sample(text, "process_open_fds") < limit
        assert sample(text, "process_resident_memory_bytes") > 10 * 2**20
        assert sample(text, r'signaling_build_info\{version="[^"]+"\}') == 1
