"""bench/results.png from bench/results.json (bench/stack.py's figures), with matplotlib.

    .venv/bin/python bench/chart.py [results.json] [results.png]

Six panels: relayed messages/s by path (direct on one instance, through each
proxy), the p50/p99 round trips of those paths, long-polling messages/s and
p99 through each proxy, idle WebSockets held through each proxy with the host's
memory per connection, the converge wall times against the 20 s target, and
the cluster topology's relay paths against its one instance (when measured).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def draw(results: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    (thr, lat, held), (poll, conv, cluster) = axes
    labels, msgs, p50, p99 = [], [], [], []
    for proxy, m in results.get("proxies", {}).items():
        for label, r in m["relay"].items():
            labels.append(label if label.startswith(proxy) else f"{label}\n({proxy} phase)")
            msgs.append(r["messages_per_s"])
            p50.append(r["rtt_p50_ms"])
            p99.append(r["rtt_p99_ms"])
    xs = range(len(labels))
    thr.bar(xs, msgs, color="#4c72b0")
    thr.set_xticks(list(xs), labels, fontsize=8)
    thr.set_ylabel("relayed messages/s")
    thr.set_title("Relay, 100 pairs, 1500-byte offer/answer")
    width = 0.4
    lat.bar([x - width / 2 for x in xs], p50, width, label="p50")
    lat.bar([x + width / 2 for x in xs], p99, width, label="p99")
    lat.set_xticks(list(xs), labels, fontsize=8)
    lat.set_ylabel("round trip, ms")
    lat.set_title("Relay round trip (two relays)")
    lat.legend()

    polled = [(p, m["polling"]) for p, m in results.get("proxies", {}).items() if "polling" in m]
    poll.bar(range(len(polled)), [r["messages_per_s"] for _, r in polled], color="#55a868")
    poll.set_xticks(list(range(len(polled))), [f"{p} TLS\np99 {r['rtt_p99_ms']:.0f} ms" for p, r in polled])
    poll.set_ylabel("relayed messages/s")
    poll.set_title("Long-polling pairs through the proxy")

    idle = [(p, m["idle"]) for p, m in results.get("proxies", {}).items() if "idle" in m]
    held.bar(range(len(idle)), [r["opened"] - r["closed_by_server_while_idle"] for _, r in idle], color="#8172b2")
    held.set_xticks(list(range(len(idle))), [f"{p} TLS\n{r['kib_per_connection']:.0f} KiB each, {r['failed']} failed"
                                             for p, r in idle])
    target_idle = results.get("targets", {}).get("idle_connections")
    if target_idle:
        held.axhline(target_idle, color="black", linestyle="--", label=f"target {target_idle:,}")
        held.legend(loc="lower right")
    held.set_ylabel("idle WebSockets held")
    held.set_title("Capacity: idle WebSockets through the proxy")

    runs = results.get("converge", {})
    conv.barh(list(runs), [r["seconds"] for r in runs.values()], color="#c44e52")
    target = results.get("targets", {}).get("noop_converge_s")
    if target:
        conv.axvline(target, color="black", linestyle="--", label=f"no-op target {target:g} s")
        conv.legend()
    conv.set_xlabel("wall time, s")
    conv.set_title("Converge (molecule converge, single host)")

    paths = results.get("cluster", {}).get("relay", {})
    if paths:
        ratios = results["cluster"].get("relay_ratio", {})
        cluster.bar(range(len(paths)), [r["messages_per_s"] for r in paths.values()], color="#937860")
        cluster.set_xticks(list(range(len(paths))),
                           [f"{label}\np99 {r['rtt_p99_ms']:.0f} ms"
                            + (f", {ratios[label]['throughput']:.2f}x" if label in ratios else "")
                            for label, r in paths.items()], fontsize=8)
        cluster.set_ylabel("relayed messages/s")
        cluster.set_title("Cluster: two app hosts, Redis between them")
    else:
        cluster.axis("off")

    machine = results.get("machine", {})
    fig.suptitle(f"webrtc-edge, one deployed host: {machine.get('cores')} cores, {machine.get('cpu_model', '')}, "
                 f"{machine.get('os', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else BENCH / "results.json"
    out = Path(argv[1]) if len(argv) > 1 else src.with_suffix(".png")
    print(draw(json.loads(src.read_text()), out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
