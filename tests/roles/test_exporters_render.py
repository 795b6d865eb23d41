"""The exporters role's arguments, as Ansible computes them from its defaults and vars for a host
of each kind, with and without a `monitoring` group (tests/roles/local_playbook.py runs it).

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


def _compute(out: Path, name: str, values: dict, groups: dict[str, list[str]]) -> dict:
    """The role's vars for host web1 (local connection) of an inventory with ``groups``."""
    inventory = {"all": {"hosts": {"web1": {"ansible_connection": "local"}},
                         "children": {g: {"hosts": {h: {} for h in hosts}} for g, hosts in groups.items()}}}
    (out / f"{name}.inventory.json").write_text(json.dumps(inventory))
    playbook = out / f"{name}.yml"
    playbook.write_text(json.dumps([{
        "name": name, "hosts": "web1", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [{"ansible.builtin.copy": {
            "content": "{{ {'all': __exporters_all, 'enabled': __exporters_enabled,"
                       " 'password': exporters_redis_password,"
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
