"""The exporters role's arguments, as Ansible computes them from its defaults and vars for a host
of each kind, with and without a `monitoring` group (tests/roles/local_playbook.py runs it): wired
into the deployment first, as site.yml does (playbooks/tasks/wire_exporters.yml, in a play of
its own), and alone (the role's defaults: a lone host's values).

apache_exporter's listen flag follows the version `apt-cache policy` reports on the host
(installed, else the candidate): 0.x (Debian 12) takes --telemetry.address, 1.x (Debian 13)
--web.listen-address; the flags of the other exporters are the same in both releases."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from local_playbook import ANSIBLE_PLAYBOOK, ROOT

ROLE = ROOT / "roles" / "exporters"

#: One host in every group, two instances, nginx; "monitoring" adds that group.
BASE = {
    "proxy_server": "nginx",
    "signaling_app_endpoints": [{"port": 8081}, {"port": 8082}],
    "redis_url": "redis://:p%40ss@127.0.0.1:6379/0",
    "ansible_facts": {"default_ipv4": {"address": "10.0.0.5"}},
}
GROUPS = {"proxy": ["web1"], "signaling_app": ["web1"], "redis": ["web1"], "turn": ["web1"]}


WIRE = ROOT / "playbooks" / "tasks" / "wire_exporters.yml"


def _compute(out: Path, name: str, values: dict, groups: dict[str, list[str]], *, wired: bool = True) -> dict:
    """The role's vars for host web1 (local connection) of an inventory with ``groups``; ``wired``:
    after the wiring, in a play before the one that loads the role's defaults and vars."""
    inventory = {"all": {"hosts": {"web1": {"ansible_connection": "local"}},
                         "children": {g: {"hosts": {h: {} for h in hosts}} for g, hosts in groups.items()}}}
    (out / f"{name}.inventory.json").write_text(json.dumps(inventory))
    playbook = out / f"{name}.yml"
    wiring = [{"name": f"{name}: wiring", "hosts": "web1", "gather_facts": False,
               "tasks": [{"ansible.builtin.include_tasks": str(WIRE)}]}] if wired else []
    playbook.write_text(json.dumps([*wiring, {
        "name": name, "hosts": "web1", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [{"ansible.builtin.copy": {
            "content": "{{ {'all': __exporters_all, 'enabled': __exporters_enabled,"
                       " 'password': exporters_redis_password, 'units': exporters_node_systemd_units,"
                       " 'apache_version': __exporters_apache_version} | to_json }}",
            "dest": f"{out}/{name}.json", "mode": "0600"}}],
    }]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_CACHE_PLUGIN="memory")
    extra = out / f"{name}.extra.json"
    extra.write_text(json.dumps({**values, "ansible_python_interpreter": sys.executable}))
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(out / f"{name}.inventory.json"), "-e", f"@{extra}",
                           str(playbook)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / f"{name}.json").read_text())


def _policy(installed: str, candidate: str) -> dict:
    """What ``apt-cache policy prometheus-apache-exporter`` prints (registered by tasks/configure.yml)."""
    return {"stdout": f"prometheus-apache-exporter:\n  Installed: {installed}\n  Candidate: {candidate}\n"
                      f"  Version table:\n     {candidate} 500\n"
                      "        500 http://deb.debian.org/debian trixie/main amd64 Packages\n"}


#: apt-cache policy on an Apache proxy -> the version the role reads, the listen flag it takes.
APACHE_POLICIES = {
    "bookworm": (_policy("0.12.0-1+b4", "0.12.0-1+b4"), "0.12.0", "telemetry.address"),
    "trixie-fresh": (_policy("(none)", "1.0.9-1+b7"), "1.0.9", "web.listen-address"),
    "trixie-installed": (_policy("1.0.9-1+b7", "1.0.9-1+b7"), "1.0.9", "web.listen-address"),
    # Debian upgraded, the exporter not yet: the installed one runs, whatever apt offers.
    "upgraded-held": (_policy("0.12.0-1+b4", "1.0.9-1+b7"), "0.12.0", "telemetry.address"),
    "epoch": (_policy("(none)", "1:1.1.0-1"), "1.1.0", "web.listen-address"),
    # Check mode on a host without package lists: the oldest the role supports.
    "no-lists": (_policy("(none)", "(none)"), "0.12.0", "telemetry.address"),
}


@pytest.fixture(scope="module")
def computed(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("exporters")
    apache = {**BASE, "proxy_server": "apache"}
    return {
        "alone": _compute(out, "alone", BASE, GROUPS),
        "monitored": _compute(out, "monitored", BASE, {**GROUPS, "monitoring": ["prom1"]}),
        "valkey": _compute(out, "valkey", {**BASE, "redis_unit": "valkey-server.service"}, GROUPS),
        "role-alone": _compute(out, "role-alone", {**BASE, "proxy_status_port": 9405, "redis_port": 6380},
                               {**GROUPS, "monitoring": ["prom1"]}, wired=False),
        "wired-ports": _compute(out, "wired-ports", {**BASE, "proxy_status_port": 9405, "redis_port": 6380}, GROUPS),
        "given": _compute(out, "given",
                          {**BASE, "exporters_listen_address": "127.0.0.1",
                           "exporters_node_systemd_units": ["custom.service"], "exporters_status_port": 9000,
                           "exporters_redis_address": "redis://127.0.0.1:7000", "exporters_redis_password": "given"},
                          {**GROUPS, "monitoring": ["prom1"]}),
        **{f"apache-{name}": _compute(out, f"apache-{name}", {**apache, "__exporters_apache_policy": policy},
                                      {"proxy": ["web1"]})
           for name, (policy, _, _) in APACHE_POLICIES.items()},
    }


def _args(found: dict, exporter: str) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) if "=" in a else (a.removeprefix("--"), "")
                for a in shlex.split(" ".join(found["all"][exporter]["args"])))


def test_loopback_without_a_monitoring_group(computed):
    found = computed["alone"]
    assert found["enabled"] == ["node", "nginx", "redis"]
    for exporter, port in (("node", 9100), ("nginx", 9113), ("redis", 9121)):
        assert _args(found, exporter)["web.listen-address"] == f"127.0.0.1:{port}"


def test_private_address_with_a_monitoring_group(computed):
    assert _args(computed["monitored"], "node")["web.listen-address"] == "10.0.0.5:9100"


def test_node_exporter_watches_our_units_and_the_textfile_directory(computed):
    args = _args(computed["alone"], "node")
    assert args["collector.textfile.directory"] == "/var/lib/prometheus/node-exporter"
    assert "collector.systemd" in args
    assert args["collector.systemd.unit-include"] == (
        "(nginx[.]service|signaling@8081[.]service|signaling@8082[.]service|redis-server[.]service"
        "|coturn[.]service|webrtc-edge-firewall[.]service)")


def test_node_exporter_watches_valkey_where_the_redis_role_chose_it(computed):
    """The unit the redis role's preflight published (redis_unit), not a name of its own."""
    units = _args(computed["valkey"], "node")["collector.systemd.unit-include"]
    assert "|valkey-server[.]service|" in units and "redis-server" not in units


def test_proxy_exporters_read_the_loopback_status_page(computed):
    assert _args(computed["alone"], "nginx")["nginx.scrape-uri"] == "http://127.0.0.1:8405/nginx_status"
    found = computed["apache-trixie-fresh"]
    assert found["enabled"] == ["node", "apache"]
    assert _args(found, "apache")["scrape_uri"] == "http://127.0.0.1:8405/server-status?auto"


@pytest.mark.parametrize("name", APACHE_POLICIES)
def test_apache_exporter_listen_flag_follows_its_version(computed, name):
    _, version, flag = APACHE_POLICIES[name]
    found = computed[f"apache-{name}"]
    assert found["apache_version"] == version
    args = _args(found, "apache")
    assert args[flag] == "127.0.0.1:9117"
    (other,) = {"telemetry.address", "web.listen-address"} - {flag}
    assert other not in args


def test_redis_password_in_a_file_not_the_arguments(computed):
    found = computed["alone"]
    args = _args(found, "redis")
    assert args["redis.password-file"] == "/etc/webrtc-edge/redis-exporter.json"
    assert args["redis.addr"] == "redis://127.0.0.1:6379"
    assert found["password"] == "p@ss"  # from redis_url, decoded
    assert "p@ss" not in " ".join(found["all"]["redis"]["args"])


def test_role_alone_takes_a_lone_hosts_values(computed):
    """Without the wiring the role's defaults are its own: loopback even with a monitoring group,
    the firewall's unit alone, the proxy's and Redis's default ports, no password (their
    proxy_status_port, redis_port and redis_url are not read)."""
    found = computed["role-alone"]
    assert _args(found, "node")["web.listen-address"] == "127.0.0.1:9100"
    assert found["units"] == ["webrtc-edge-firewall.service"]
    assert _args(found, "nginx")["nginx.scrape-uri"] == "http://127.0.0.1:8405/nginx_status"
    assert _args(found, "redis")["redis.addr"] == "redis://127.0.0.1:6379"
    assert found["password"] == ""


def test_wiring_takes_the_proxy_and_redis_ports(computed):
    found = computed["wired-ports"]
    assert _args(found, "nginx")["nginx.scrape-uri"] == "http://127.0.0.1:9405/nginx_status"
    assert _args(found, "redis")["redis.addr"] == "redis://127.0.0.1:6380"


def test_wiring_keeps_what_is_set(computed):
    """Values given (here with -e; the inventory's go the same way) win over the wiring's."""
    found = computed["given"]
    assert _args(found, "node")["web.listen-address"] == "127.0.0.1:9100"  # a monitoring group, but set
    assert found["units"] == ["custom.service"]
    assert _args(found, "nginx")["nginx.scrape-uri"] == "http://127.0.0.1:9000/nginx_status"
    assert _args(found, "redis")["redis.addr"] == "redis://127.0.0.1:7000"
    assert found["password"] == "given"
