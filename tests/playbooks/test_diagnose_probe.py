"""playbooks/files/diagnose_probe.py, the helper of playbooks/diagnose.yml, on its own.

What it reads from a deployed proxy config (the golden nginx and Apache configs the filter
plugins render), the heartbeat rows it derives, and the firewall ports it reads back from a
ruleset of the firewall role loaded into a real nftables (in a network namespace of its own).
The whole playbook runs against a deployment in molecule/default/tests/test_diagnose.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import apache, nginx
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import firewall as fm

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "plugins" / "filter" / "golden"

_spec = importlib.util.spec_from_file_location("diagnose_probe", REPO / "playbooks" / "files" / "diagnose_probe.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


@pytest.mark.parametrize("name", ["nginx-single", "nginx-multi", "apache-single", "apache-multi"])
def test_reads_names_upstreams_and_the_websocket_timeout(name):
    text = (GOLDEN / f"{name}.conf").read_text()
    config = (probe.nginx_config if name.startswith("nginx") else probe.apache_config)(text)
    assert config["names"] == ["signal.example.org", "localhost"]
    want = ["127.0.0.1:8081"] if name.endswith("single") else ["10.0.0.11:8081", "10.0.0.12:8081"]
    assert config["upstreams"] == want
    assert (config["http_port"], config["https_port"]) == (80, 443)
    # What the golden configs were rendered with: the proxy model's default for proxy_ws_read_timeout.
    assert config["ws_read_timeout"] == 90
    assert str(config["ws_read_timeout"]) in text


def test_nginx_timeout_falls_back_to_the_server_level_then_the_default():
    text = (GOLDEN / "nginx-single.conf").read_text()
    location = text.index("location = /ws {")
    inner = probe._block(text, location)
    without = text.replace(inner, inner.replace("proxy_read_timeout 90s;", ""))
    config = probe.nginx_config(without)
    assert config["ws_read_timeout"] == 30 and "server level" in config["ws_read_timeout_source"]
    bare = "\n".join(line for line in without.splitlines() if "proxy_read_timeout" not in line)
    assert probe.nginx_config(bare)["ws_read_timeout"] == 60


@pytest.mark.parametrize(
    ("heartbeat", "idle", "timeout", "result", "says"),
    [
        (30, 60, 90, "ok", ""),
        (30, 60, 33, "warn", "less than 5 s"),
        (30, 60, 30, "FAIL", "connections drop every 30 s"),
        (60, 120, 60, "FAIL", "proxy_ws_read_timeout above signaling_app_heartbeat (60)"),
        (30, 30, 90, "FAIL", "signaling_app_idle_timeout must exceed"),
    ],
)
def test_heartbeat_rows(heartbeat, idle, timeout, result, says):
    config = {"ws_read_timeout": timeout, "ws_read_timeout_source": "test"}
    [row] = probe.check_heartbeat(config, [f"app1={heartbeat}/{idle}"])
    assert row["check"] == "heartbeat vs proxy timeout (app1)"
    assert row["result"] == result
    assert says in row["action"]


def _nft_json(ruleset: str, tmp_path: Path) -> dict:
    """Load ``ruleset`` into a network namespace of its own and list the table back as JSON."""
    nft = shutil.which("nft") or "/usr/sbin/nft"
    if not Path(nft).exists():
        pytest.fail("nft is not installed: these tests need Debian's nftables package (tests/setup-host.sh)")
    path = tmp_path / "firewall.nft"
    path.write_text(ruleset)
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--net"]
    done = subprocess.run([*unshare, "sh", "-c", f'{nft} -f "$1" && {nft} -j list table inet {fm.TABLE}', "-", path],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_firewall_ports_read_back_from_a_loaded_ruleset(tmp_path):
    model = fm.build_firewall_model({
        "ssh": {"port": 22, "from": ["192.0.2.10"]},
        "rules": [
            {"comment": "proxy", "proto": "tcp", "port": [80, 443], "from": "any"},
            {"comment": "turn", "proto": "udp", "port": 3478, "from": "any"},
            {"comment": "relay", "proto": "udp", "port": "49160-49999", "from": "any"},
            {"comment": "app", "proto": "tcp", "port": [8081, 8082], "from": {"edge1": ["10.0.0.21"]}},
        ],
    })
    accepted = probe.accepted_ports(_nft_json(fm.render_firewall_ruleset(model), tmp_path))
    for proto, port in [("tcp", 22), ("tcp", 80), ("tcp", 443), ("udp", 3478), ("udp", 49160), ("udp", 49999),
                        ("tcp", 8081), ("tcp", 8082)]:
        assert any(p == proto and lo <= port <= hi for p, lo, hi in accepted), (proto, port, accepted)
    for proto, port in [("tcp", 6379), ("udp", 80), ("tcp", 3478)]:
        assert not any(p == proto and lo <= port <= hi for p, lo, hi in accepted), (proto, port)


def test_the_probe_reads_the_firewall_roles_table():
    assert probe.TABLE == fm.TABLE


def test_the_troubleshooting_guide_names_the_status_pages():
    guide = (REPO / "docs" / "troubleshooting.md").read_text()
    assert f"`{nginx.NGINX_STATUS_PATH}`" in guide and f"`{apache.APACHE_STATUS_PATH}`" in guide
