"""bench/'s pure parts: stack.py's PLAY RECAP reader and verdicts on issue 6's targets, the
shared percentiles (common.py) and round summary (relay.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import stack

RECAP = (
    "\n"
    "PLAY RECAP *********************************************************************\n"
    "\x1b[0;32mwebrtc-edge-bench\x1b[0m          : ok=129  changed=0    unreachable=0    failed=0    skipped=27"
    "   rescued=0    ignored=0\n"
    "other                      : ok=3    changed=2    unreachable=0    failed=0    skipped=0    rescued=0"
    "    ignored=0\n"
)


def test_recap_sums_the_counters_of_every_host_through_colour_codes():
    counts = stack.recap(RECAP)
    assert counts["ok"] == 132
    assert counts["changed"] == 2
    assert counts["skipped"] == 27


def test_recap_of_output_without_a_recap_is_empty():
    assert stack.recap("ERROR! the playbook could not be found") == {}


def _results(noop_s: float, changed: int, thr: float, p99: float, opened: int, failed: int = 0) -> dict:
    relay = {"direct, one instance": {}, "nginx TLS": {}}
    return {
        "converge": {"noop": {"seconds": noop_s, "changed": changed}},
        "proxies": {"nginx": {
            "relay": relay,
            "relay_ratio": {"throughput": thr, "p99": p99},
            "idle": {"opened": opened, "failed": failed, "closed_by_server_while_idle": 0},
        }},
    }


def test_verdicts_hold_when_every_figure_meets_its_target():
    v = stack.verdicts(_results(12.0, 0, 0.85, 1.2, 20_000))
    assert {k: x["ok"] for k, x in v.items()} == {"noop_converge": True, "nginx_relay": True, "nginx_idle": True}


def test_verdicts_fail_on_each_missed_target():
    v = stack.verdicts(_results(25.0, 0, 0.79, 1.2, 20_000))
    assert not v["noop_converge"]["ok"] and not v["nginx_relay"]["ok"] and v["nginx_idle"]["ok"]
    v = stack.verdicts(_results(12.0, 1, 0.9, 1.6, 19_999))
    assert not v["noop_converge"]["ok"], "a no-op re-run that changed something is no no-op"
    assert not v["nginx_relay"]["ok"] and not v["nginx_idle"]["ok"]
    v = stack.verdicts(_results(12.0, 0, 0.9, 1.0, 20_000, failed=1))
    assert not v["nginx_idle"]["ok"], "a failed connection misses the capacity target"


def test_latency_ms_takes_percentiles_of_unsorted_seconds():
    import common

    figures = common.latency_ms([i / 1000 for i in range(200, 0, -1)])  # 1..200 ms, reversed
    assert figures == {"rtt_p50_ms": 101.0, "rtt_p99_ms": 199.0, "rtt_max_ms": 200.0}


def test_summarize_keeps_the_median_throughput_round_and_every_rounds_figure():
    import relay

    rounds = {"direct": [{"messages_per_s": m, "rtt_p99_ms": p} for m, p in ((9.0, 1.0), (7.0, 3.0), (8.0, 2.0))]}
    summary = relay.summarize(rounds)["direct"]
    assert (summary["messages_per_s"], summary["rtt_p99_ms"]) == (8.0, 2.0)
    assert summary["all_rounds_messages_per_s"] == [9.0, 7.0, 8.0]


# -- the cluster stage: where peers are, and the ratios ------------------------------

def test_instance_host_drops_the_port_of_an_instance_name():
    assert stack.instance_host("webrtc-edge-bcluster-app1:8082") == "webrtc-edge-bcluster-app1"
    assert stack.instance_host("app2") == "app2", "a name without a port is the host's"


def test_cross_host_order_puts_partners_on_two_hosts():
    # nginx's least_conn over app1:8081, app1:8082, app2:8081, app2:8082, connections opened one by one:
    # relay.py's pairs (2k, 2k+1) would all be on one host.
    hosts = ["app1", "app1", "app2", "app2"] * 25
    assert stack.pairs_across(hosts) == 0
    order = stack.cross_host_order(hosts)
    assert sorted(order) == list(range(100))
    assert stack.pairs_across(hosts, order) == 50
    assert order[:4] == [0, 2, 1, 3], "order within a host is kept"


def test_cross_host_order_pairs_within_a_host_only_what_the_counts_leave():
    hosts = ["a"] * 5 + ["b"] * 2 + ["c"]  # 8 peers, 4 pairs: at most 3 across
    order = stack.cross_host_order(hosts)
    assert sorted(order) == list(range(8))
    assert stack.pairs_across(hosts, order) == 3
    odd = stack.cross_host_order(["a", "a", "b"])
    assert sorted(odd) == [0, 1, 2] and stack.pairs_across(["a", "a", "b"], odd) == 1
    assert stack.cross_host_order([]) == []


def test_placement_counts_instances_and_pairs_across_hosts_before_and_after_ordering():
    instances = ["h1:8081", "h1:8082", "h2:8081", "h2:8082"]
    p = stack.placement(instances, [0, 2, 1, 3])
    assert p == {"connections_per_instance": {"h1:8081": 1, "h1:8082": 1, "h2:8081": 1, "h2:8082": 1},
                 "pairs": 2, "pairs_across_hosts_as_connected": 0, "pairs_across_hosts": 2}


def test_spread_connect_interleaves_endpoints_and_orders_partners_across_hosts(monkeypatch):
    import asyncio

    import common

    a, b = common.Endpoint("a", host="10.0.0.1", port=1), common.Endpoint("b", host="10.0.0.2", port=1)
    opened = []

    async def fake_connect_all(flavor, endpoint, n, client):
        opened.append((endpoint.label, n))
        return [f"{endpoint.label}{i}" for i in range(n)], [f"id-{endpoint.label}{i}" for i in range(n)]

    # Redis says: the sessions of endpoint "a" are on host1, those of "b" alternate host1/host2.
    where = {f"id-a{i}": "host1:8081" for i in range(3)} | {f"id-b{i}": f"host{1 + i % 2}:8081" for i in range(3)}
    monkeypatch.setattr(stack.relay, "_connect_all", fake_connect_all)
    monkeypatch.setattr(stack, "session_instances", lambda ids: [where[i] for i in ids])
    spread = stack.SpreadConnect([a, b])
    conns, ids = asyncio.run(spread(None, a, 6, "raw"))
    assert opened == [("a", 3), ("b", 3)]
    assert sorted(conns) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert ids == [f"id-{c}" for c in conns], "ids stay with their connections"
    # as connected: a0 b0 | a1 b1 | a2 b2 -> host1/host1, host1/host2, host1/host1; host2 has one peer only.
    assert spread.placement["pairs_across_hosts_as_connected"] == 1
    assert spread.placement["pairs_across_hosts"] == 1
    assert spread.placement["connections_per_instance"] == {"host1:8081": 5, "host2:8081": 1}


def test_relay_load_opens_its_connections_with_the_connect_given():
    """stack.py hands relay.load a SpreadConnect: load must open its 2 x pairs connections with it."""
    import asyncio

    import common
    import relay

    class Opened(Exception):
        pass

    async def connect(flavor, endpoint, n, client):
        raise Opened(endpoint.label, n, client)

    ep = common.Endpoint("x", host="10.0.0.1", port=1)
    with pytest.raises(Opened) as raised:
        asyncio.run(relay.load(relay.Ours(), ep, 3, 10, 0.0, 0.0, "raw", None, connect))
    assert raised.value.args == ("x", 6, "raw")


def test_cluster_meter_sums_containers_and_splits_the_last_window():
    class Fake:
        def __init__(self, readings):
            self.readings = iter(readings)

        def cpu_seconds(self):
            return next(self.readings)

        def memory_bytes(self):
            return 10

    softirq = iter([10.0, 10.5, 12.0])
    meter = stack.ClusterMeter({"proxy": Fake([1.0, 2.0, 4.0]), "app1": Fake([0.0, 3.0, 3.5])},
                               softirq=lambda: next(softirq))
    assert meter.cpu_seconds() == 1.0
    assert meter.cpu_seconds() == 5.0, "the machine's softirq time is no container's"
    assert meter.last_window() == {"proxy": 1.0, "app1": 3.0, stack.SOFTIRQ: 0.5}
    assert meter.cpu_seconds() == 7.5
    assert meter.last_window() == {"proxy": 2.0, "app1": 0.5, stack.SOFTIRQ: 1.5}
    assert meter.memory_bytes() == 20


def test_softirq_seconds_reads_the_machines_counter():
    first = stack.softirq_seconds()
    assert 0 <= first <= stack.softirq_seconds()


def test_relay_ratios_divide_every_path_by_the_base_path():
    relayed = {"one": {"messages_per_s": 8000.0, "rtt_p50_ms": 20.0, "rtt_p99_ms": 40.0,
                       "messages_per_server_cpu_s": 6000.0},
               "across": {"messages_per_s": 4000.0, "rtt_p50_ms": 40.0, "rtt_p99_ms": 100.0,
                          "messages_per_server_cpu_s": 4500.0}}
    assert stack.relay_ratios(relayed, "one") == {"across": {"throughput": 0.5, "p50": 2.0, "p99": 2.5,
                                                             "per_cpu_s": 0.75}}


def test_verdicts_report_the_cluster_ratio_without_a_target():
    cluster = {"base": "direct, one instance", "headline": "nginx TLS, across hosts",
               "relay": {"nginx TLS, across hosts": {"placement": {"pairs": 100, "pairs_across_hosts": 100}}},
               "relay_ratio": {"nginx TLS, across hosts": {"throughput": 0.55, "p50": 1.7, "p99": 2.8,
                                                           "per_cpu_s": 0.5}}}
    v = stack.verdicts({"cluster": cluster})
    assert v == {"cluster_relay": {"throughput_ratio": 0.55, "p50_ratio": 1.7, "p99_ratio": 2.8,
                                   "per_cpu_s_ratio": 0.5, "pairs_across_hosts": "100/100", "ok": None}}
    line = stack.verdict_line("cluster_relay", v["cluster_relay"])
    assert "reported" in line and "MISSED" not in line and "throughput_ratio=0.55" in line
    assert " ok " in stack.verdict_line("x", {"ratio": 1.0, "ok": True})
    assert "MISSED" in stack.verdict_line("x", {"ratio": 1.0, "ok": False})


def test_stages_from_topologies_and_proxies():
    assert stack.stages("single,cluster", "nginx,apache") == (["nginx", "apache"], True)
    assert stack.stages("cluster", "nginx") == ([], True), "the single host's proxies only with 'single'"
    assert stack.stages("single", "nginx") == (["nginx"], False)
    assert stack.stages("single, cluster", "none") == ([], True), "--proxies none skips the single host"


def test_stages_refuse_unknown_names():
    import pytest

    for topologies, proxies in (("", "nginx"), ("single,mesh", "nginx"), ("single", "nginx,haproxy")):
        with pytest.raises(ValueError):
            stack.stages(topologies, proxies)
