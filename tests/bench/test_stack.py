"""bench/'s pure parts: stack.py's PLAY RECAP reader and verdicts on issue 6's targets, the
shared percentiles (common.py) and round summary (relay.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import stack  # noqa: E402

RECAP = """
PLAY RECAP *********************************************************************
\x1b[0;32mwebrtc-edge-bench\x1b[0m          : ok=129  changed=0    unreachable=0    failed=0    skipped=27   rescued=0    ignored=0
other                      : ok=3    changed=2    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
"""


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
