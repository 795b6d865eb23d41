"""The firewall role's rendered rulesets through the real `nft -c`, and its preflight's state script.

`nft -c -f` parses the file and runs the transaction against the kernel without committing it,
which needs CAP_NET_ADMIN: as root it checks in this machine's network namespace, otherwise in
a network namespace of its own (`unshare --user --map-root-user --net`). Nothing is loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import firewall as fm

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "firewall"

_spec = importlib.util.spec_from_file_location("firewall_state", ROLE / "files" / "firewall_state.py")
state = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(state)

#: Every tier on one host, IPv6 sources, a union with a previous run, raw rules, logging.
FULL = {
    "ssh": {"port": 2222, "from": ["198.51.100.0/24", "2001:db8:100::/48", "203.0.113.7"]},
    "rules": [
        {"comment": "proxy: http, https", "proto": "tcp", "port": [80, 443], "from": "any"},
        {"comment": "turn: TURN", "proto": "udp", "port": 3478, "from": "any"},
        {"comment": "turn: TURN", "proto": "tcp", "port": 3478, "from": "any"},
        {"comment": "turn: TURN over TLS", "proto": "tcp", "port": 5349, "from": "any"},
        {"comment": "turn: relayed media", "proto": "udp", "port": "49160-49999", "from": "any"},
        {"comment": "signaling_app: the instances, from the proxies", "proto": "tcp", "port": [8081, 8082, 8083],
         "from": {"edge1": ["10.0.0.21", "2001:db8::21", "fe80::42:acff:fe12:2"], "edge2": ["10.0.0.22"]}},
        {"comment": "redis: from the app hosts", "proto": "tcp", "port": 6379, "from": {"app1": ["10.0.0.11"]}},
        {"comment": "monitoring: exporters and /metrics", "proto": "tcp", "port": ["9100-9102", 8081],
         "from": {"mon1": ["10.0.0.51", "2001:db8::51"]}},
    ],
    "allow": [{"port": [8443, "10000-10010"], "proto": "udp", "comment": "operator's own [test]"}],
    "extra_rules": ["ip saddr 203.0.113.0/24 drop", "tcp dport 9999 ip saddr { 10.9.9.9, 10.9.9.8 } counter accept",
                    "ip saddr 198.51.100.66 tcp dport 443 reject with tcp reset"],
    "log_dropped": True,
}


def nft_check(path: Path) -> subprocess.CompletedProcess:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    if not Path(nft).exists():
        pytest.fail("nft is not installed: these tests need Debian's nftables package (tests/setup-host.sh)")
    argv = [nft, "-c", "-f", str(path)]
    if os.geteuid() != 0:
        argv = ["unshare", "--user", "--map-root-user", "--net", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({}, id="nothing-open"),
        pytest.param({"ssh": {"port": 22, "from": ["192.0.2.10"]}}, id="ssh-only"),
        pytest.param(FULL, id="every-tier"),
    ],
)
def test_rendered_ruleset_passes_nft_check(tmp_path, spec):
    path = tmp_path / "firewall.nft"
    path.write_text(fm.render_firewall_ruleset(fm.build_firewall_model(spec)))
    done = nft_check(path)
    assert done.returncode == 0, done.stderr


def test_union_passes_nft_check(tmp_path):
    before = fm.build_firewall_model({**FULL, "ssh": {"port": 22, "from": ["192.0.2.99"]},
                                      "allow": [{"port": 7000, "from": ["10.1.0.0/16"]}]})
    path = tmp_path / "firewall.nft"
    path.write_text(fm.render_firewall_ruleset(fm.firewall_union(fm.build_firewall_model(FULL), before)))
    done = nft_check(path)
    assert done.returncode == 0, done.stderr


def test_an_extra_rule_nft_refuses_fails_the_check(tmp_path):
    """firewall_extra_rules pass the model's own checks but are nft's to judge: the file is
    written with `validate: nft -c -f %s`, so this one never lands."""
    path = tmp_path / "firewall.nft"
    path.write_text(fm.render_firewall_ruleset(fm.build_firewall_model({"extra_rules": ["tcp dport http-alt acept"]})))
    done = nft_check(path)
    assert done.returncode != 0
    assert "acept" in done.stderr


def test_the_role_names_the_filters_table():
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    assert role_vars["__firewall_table"] == fm.TABLE
    assert state.MODEL_MARKER == fm.MODEL_MARKER


def test_state_reads_the_model_back(tmp_path):
    model = fm.build_firewall_model(FULL)
    path = tmp_path / "firewall.nft"
    path.write_text(fm.render_firewall_ruleset(model))
    assert state.loaded_model(str(path)) == json.loads(json.dumps(model))
    assert state.loaded_model(str(tmp_path / "missing.nft")) is None


# /proc/net/tcp and tcp6 as the kernel writes them: sl, local, remote, state (01 established, 0A listen).
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 10 0
   1: 0500000A:0016 0701A8C0:D431 01 00000000:00000000 02:000AF5B1 00000000     0        0 2 4 0 20 4 29 10 -1
   2: 0500000A:1F91 0801A8C0:D432 01 00000000:00000000 00:00000000 00000000   999        0 3 1 0 20 4 30 10 -1
   3: 0500000A:0016 0901A8C0:D433 06 00000000:00000000 03:00000B4D 00000000     0        0 0 3 0
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: B80D0120000000000000000005000000:0016 B80D0120000000000000000007000000:C350 01 00000000:00000000
   2: 0000000000000000FFFF00000500000A:0016 0000000000000000FFFF00000B00000A:C351 01 00000000:00000000
"""


def test_state_finds_the_ssh_sessions_established_to_the_port():
    assert state.established_peers(PROC_NET_TCP, 22) == ["192.168.1.7"]  # not the listener, another port, TIME_WAIT
    assert state.established_peers(PROC_NET_TCP6, 22) == ["2001:db8::7", "10.0.0.11"]  # IPv4-mapped as IPv4
    assert state.established_peers(PROC_NET_TCP, 8081) == ["192.168.1.8"]


def test_state_finds_ssh_connection_in_a_parent_process():
    """sudo (or `su -`) drops SSH_CONNECTION; the login shell above still has it."""
    code = (f"import sys; sys.path.insert(0, {str(ROLE / 'files')!r}); "
            "import firewall_state; print(firewall_state.ssh_connection())")
    env = {**os.environ, "SSH_CONNECTION": "192.0.2.10 50022 192.0.2.1 22"}
    # `; true` keeps sh alive as the parent (a last command alone would replace it).
    done = subprocess.run(["sh", "-c", 'env -u SSH_CONNECTION "$0" -c "$1"; true', sys.executable, code],
                          env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "192.0.2.10 50022 192.0.2.1 22"


def test_state_prints_json(tmp_path):
    ruleset = tmp_path / "firewall.nft"
    ruleset.write_text(fm.render_firewall_ruleset(fm.build_firewall_model({})))
    env = {**os.environ, "SSH_CONNECTION": "192.0.2.10 50022 192.0.2.1 22"}
    done = subprocess.run([sys.executable, "-c", (ROLE / "files" / "firewall_state.py").read_text(),
                           str(ruleset), "22", "0", str(tmp_path / "webrtc-edge-firewall.service")],
                          env=env, capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    assert found["ssh_connection"] == "192.0.2.10 50022 192.0.2.1 22"
    assert found["ssh_peers"] == []
    assert found["loaded"] == json.loads(json.dumps(fm.build_firewall_model({})))
    # The role writes a file only when this differs from the checksum of what it would write.
    assert found["sha256"] == {"ruleset": hashlib.sha256(ruleset.read_bytes()).hexdigest(), "unit": None}
    assert set(found["unit"]) == {"enabled", "active"}
