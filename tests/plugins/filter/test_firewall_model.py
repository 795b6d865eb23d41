"""The firewall_model filter: normalisation, refusals, the union, the lock-out guard, rendering."""

import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.webrtc_edge.edge.plugins.filter import firewall_model as firewall_filters
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import firewall as fm

#: A host in every tier, the way roles/firewall/vars/main.yml builds the spec.
SPEC = {
    "ssh": {"port": 22, "from": ["198.51.100.0/24", "203.0.113.7"]},
    "rules": [
        {"comment": "proxy: http, https", "proto": "tcp", "port": [80, 443], "from": "any"},
        {"comment": "turn: relayed media", "proto": "udp", "port": "49160-49999", "from": "any"},
        {"comment": "signaling_app: the instances, from the proxies", "proto": "tcp", "port": [8081, 8082],
         "from": {"edge1": ["10.0.0.21", "2001:db8::21"]}},
        {"comment": "redis: from the app hosts", "proto": "tcp", "port": 6379,
         "from": {"app1": ["10.0.0.11"], "app2": ["10.0.0.12", "fe80::1"]}},
        {"comment": "monitoring: exporters and /metrics", "proto": "tcp", "port": [9100], "from": {}},
    ],
    "allow": [{"port": "8443", "from": ["192.0.2.0/24"], "comment": "admin"}],
    "extra_rules": ["ip saddr 203.0.113.99 drop"],
}


def model(**changes):
    return fm.build_firewall_model({**SPEC, **changes})


def test_rules_are_normalised():
    m = model()
    assert m["ssh"] == [{"comment": "ssh", "proto": "tcp", "ports": ["22"], "any": False,
                         "ipv4": ["198.51.100.0/24", "203.0.113.7"], "ipv6": []}]
    app = next(r for r in m["rules"] if r["comment"].startswith("signaling_app"))
    assert app["ports"] == ["8081-8082"]  # adjacent ports merged into one range
    assert (app["ipv4"], app["ipv6"]) == (["10.0.0.21"], ["2001:db8::21"])
    assert m["rules"][-1] == {"comment": "admin", "proto": "tcp", "ports": ["8443"], "any": False,
                              "ipv4": ["192.0.2.0/24"], "ipv6": []}


def test_a_group_without_hosts_opens_nothing():
    assert not [r for r in model()["rules"] if r["comment"].startswith("monitoring")]


def test_no_ssh_sources_no_ssh_rule():
    assert model(ssh={"port": 22, "from": []})["ssh"] == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"allow": [{"port": 70000}]}, r"firewall_allow\[0\].port must be a port \(1..65535\)"),
        ({"allow": [{"port": "90-80"}]}, r"firewall_allow\[0\].port is a range with its ends swapped"),
        ({"allow": [{"port": 80, "proto": "icmp"}]}, "proto must be one of: tcp, udp"),
        ({"allow": [{"port": 80, "from": ["10.0.0.5/24"]}]},
         r"has host bits set: '10.0.0.5/24' \(the network is 10.0.0.0/24\)"),
        ({"allow": [{"port": 80, "from": ["ops.example.org"]}]}, "not a host name"),
        ({"allow": [{"port": 80, "from": "10.0.0.1"}]}, r"from \(or 'any'\) must be a list"),
        ({"allow": [{"port": 80, "source": ["10.0.0.1"]}]}, "unknown keys"),
        ({"allow": [{"from": ["10.0.0.1"]}]}, "needs a port"),
        ({"allow": [{"port": 80, "comment": 'say "hi"'}]}, "no quotes"),
        ({"ssh": {"port": 0, "from": []}}, "firewall_ssh_port must be a port"),
        ({"ssh": {"port": 22, "from": "any"}}, "firewall_ssh_allow must be a list"),
        ({"ssh": {"port": 22, "from": ["300.1.1.1"]}}, r"firewall_ssh_allow\[0\] must be an IPv4/IPv6 address"),
        ({"extra_rules": ["tcp dport 80 accept; flush ruleset"]}, "one rule on one line"),
        ({"extra_rules": ["}} table ip evil { chain c { type filter hook input priority 0; } }"]},
         "one rule on one line"),
        ({"extra_rules": ["} chain x {"]}, "unbalanced braces"),
        ({"extra_rules": ["delete rule inet webrtc_edge input handle 3"]}, "not use 'delete'"),
        ({"rules": [{"port": 6379, "from": {"app9": None}}]}, "the addresses of app9 are unknown"),
    ],
)
def test_bad_input_is_refused_with_a_message(change, message):
    with pytest.raises(ValueError, match=message):
        model(**change)


def test_the_filter_names_itself_in_errors():
    with pytest.raises(AnsibleFilterError, match=r"^firewall_model: firewall_allow"):
        firewall_filters.FilterModule().filters()["firewall_model"]({"allow": [{"port": 0}]})


@pytest.mark.parametrize(
    ("address", "port", "proto", "admitted"),
    [
        ("203.0.113.7", 22, "tcp", True),
        ("198.51.100.200", 22, "tcp", True),
        ("203.0.113.8", 22, "tcp", False),
        ("203.0.113.7", 2222, "tcp", False),
        ("::ffff:203.0.113.7", 22, "tcp", True),      # IPv4-mapped, as sshd may report it
        ("10.0.0.21", 8082, "tcp", True),
        ("10.0.0.11", 8082, "tcp", False),            # an app host is not a proxy
        ("fe80::1", 6379, "tcp", True),
        ("10.0.0.21", 6379, "tcp", False),            # the proxy may not reach Redis
        ("192.0.2.1", 49200, "udp", True),
        ("192.0.2.1", 49200, "tcp", False),
    ],
)
def test_admits(address, port, proto, admitted):
    assert fm.firewall_admits(model(), address, port, proto) is admitted


def test_dropped_names_the_connections_the_guard_refuses():
    assert fm.firewall_dropped(model(), ["203.0.113.7 22", "203.0.113.9 22", "203.0.113.7 2222"]) == [
        "203.0.113.9 to port 22", "203.0.113.7 to port 2222"]
    with pytest.raises(ValueError, match="ADDRESS PORT"):
        fm.firewall_dropped(model(), ["203.0.113.7"])


def test_union_keeps_what_the_last_run_opened_until_the_run_ends():
    before = model(ssh={"port": 22, "from": ["192.0.2.50"]}, allow=[{"port": 9000}])
    now = model()
    union = fm.firewall_union(now, before)
    assert union["ssh"][0] == now["ssh"][0]
    assert union["ssh"][1]["ipv4"] == ["192.0.2.50"]
    assert union["ssh"][1]["comment"] == "until this run ends: ssh"
    assert [r["ports"] for r in union["rules"]][-1] == ["9000"]
    assert union["rules"][: len(now["rules"])] == now["rules"]
    # The same rules: nothing kept, so the 'close' phase has nothing to do.
    assert fm.firewall_union(now, now) == now
    assert fm.firewall_union(now, None) == now
    # A run that failed between the phases left the union loaded: the next union is the same.
    assert fm.firewall_union(now, union) == union


def test_ruleset_carries_its_model():
    text = fm.render_firewall_ruleset(model())
    line = next(line for line in text.splitlines() if line.startswith(fm.MODEL_MARKER))
    assert json.loads(line[len(fm.MODEL_MARKER):]) == json.loads(json.dumps(model()))


def test_ruleset_replaces_only_its_own_table():
    text = fm.render_firewall_ruleset(model())
    statements = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert statements[:3] == ["table inet webrtc_edge", "delete table inet webrtc_edge", "table inet webrtc_edge {"]
    assert "flush" not in text
    assert "type filter hook input priority filter; policy drop;" in text


def test_ruleset_order_ssh_then_extra_rules_then_tiers():
    lines = fm.render_firewall_ruleset(model()).splitlines()
    ssh = next(i for i, line in enumerate(lines) if 'comment "ssh"' in line)
    extra = lines.index("        ip saddr 203.0.113.99 drop")
    tiers = next(i for i, line in enumerate(lines) if 'comment "proxy: http, https"' in line)
    assert ssh < extra < tiers
    assert ("        ip saddr { 10.0.0.11, 10.0.0.12 } tcp dport 6379 accept"
            " comment \"redis: from the app hosts\"") in lines
    assert "        ip6 saddr fe80::1 tcp dport 6379 accept comment \"redis: from the app hosts\"" in lines


def test_neighbour_discovery_and_path_mtu_always_pass():
    text = fm.render_firewall_ruleset(fm.build_firewall_model({}))
    assert "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept" in text
    assert "packet-too-big" in text
    assert "iif lo accept" in text
