"""The deployed stack, measured: one host deployed by site.yml, through nginx and then Apache.

Deploys the single-host topology (every group on one Debian 12 container:
two app instances, Redis, the proxy with TLS from a local CA) with the
``bench`` Molecule scenario, then measures, in this order:

1. ``converge``: wall time of a fresh ``molecule converge`` (a new container)
   and of a no-op re-run (target <= 20 s), with the changed-task count of each;
2. with nginx: the relay benchmark (relay.py's load: pairs bouncing
   1500-byte offer/answer, one in flight per pair) directly on one app
   instance and through nginx with TLS, rounds alternating; long-polling
   peers through nginx (polling.py); ``--idle`` idle WebSockets held through
   nginx (idle.py's client in several processes: one process may hold 20,000
   descriptors here), with the host's memory per connection and the set-up rate;
3. the same host switched to Apache (a converge with ``proxy_server=apache``,
   timed too), and the same measurements through Apache.

Ratios are taken against the direct figures measured in the same phase.
The load generator runs on this machine (the controller), on CPU 0; the
deployment's processes run unpinned, as deployed, on both CPUs: on a 2-core
machine the proxy, the app, Redis and the generator share two cores.

    .venv/bin/python bench/stack.py                 # everything (about 15 minutes)
    .venv/bin/python bench/stack.py --keep          # leave the container up afterwards
    .venv/bin/python bench/stack.py --proxies nginx --idle 2000 --skip-converge

Output: a summary on stdout, ``bench/results.json`` and ``bench/results.png``
(bench/chart.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import idle  # noqa: E402
import polling  # noqa: E402
import relay  # noqa: E402

SCENARIO = "bench"
CONTAINER = "webrtc-edge-bench"
CA_FILE = common.WORK / "credentials" / "tls-ca" / "ca.pem"
SERVER_NAME = "localhost"          # a name of the deployment's certificate
HTTPS_PORT, APP_PORT = 443, 8081   # the proxy; the first app instance (bench scenario)
TARGETS = {
    "nginx": {"throughput_ratio": 0.8, "p99_ratio": 1.5},
    "apache": {"throughput_ratio": 0.6, "p99_ratio": 2.0},
    "idle_connections": 20_000,
    "noop_converge_s": 20.0,
}
# Descriptors one client process may use here (the hard limit is 20,000) and what it keeps spare.
FDS_PER_CLIENT = 9_000


# -- the deployment ---------------------------------------------------------------

def molecule(action: str, *extra: str, log: str) -> tuple[float, str]:
    """Run ``molecule ACTION -s bench``; its wall time and output (kept in bench/.work/)."""
    common.WORK.mkdir(parents=True, exist_ok=True)
    argv = [str(Path(common.python()).with_name("molecule")), action, "-s", SCENARIO]
    if extra:
        argv += ["--", *extra]
    env = {**os.environ, "ANSIBLE_CONFIG": str(common.ROOT / "ansible.cfg"),
           "PATH": f"{Path(common.python()).parent}:{os.environ.get('PATH', '')}"}
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=common.ROOT, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    (common.WORK / f"molecule-{log}.log").write_text(out)
    if proc.returncode != 0:
        raise RuntimeError(f"molecule {action} failed (exit {proc.returncode}); "
                           f"log: {common.WORK / f'molecule-{log}.log'}\n{out[-3000:]}")
    return elapsed, out


def recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counters of an ansible-playbook run, summed over hosts."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    totals: dict[str, int] = {}
    for line in plain.splitlines():
        if " : ok=" in line:
            for key, value in re.findall(r"(\w+)=(\d+)", line):
                totals[key] = totals.get(key, 0) + int(value)
    return totals


def converge(label: str, *extra: str) -> dict:
    seconds, out = molecule("converge", *extra, log=label)
    counts = recap(out)
    print(f"converge {label}: {seconds:.1f} s, {counts.get('ok', 0)} tasks ok, {counts.get('changed', 0)} changed",
          flush=True)
    return {"seconds": seconds, "tasks_ok": counts.get("ok", 0), "changed": counts.get("changed", 0),
            "extra_args": list(extra)}


def container() -> tuple[str, str]:
    """The bench container's full id and its address on its network."""
    out = subprocess.run(["docker", "inspect", CONTAINER], capture_output=True, text=True, check=True).stdout
    info = json.loads(out)[0]
    address = next(n["IPAddress"] for n in info["NetworkSettings"]["Networks"].values() if n["IPAddress"])
    return info["Id"], address


def endpoints(address: str, proxy: str) -> tuple[common.Endpoint, common.Endpoint]:
    tls = ssl.create_default_context(cafile=str(CA_FILE))
    return (common.Endpoint("direct, one instance", host=address, port=APP_PORT),
            common.Endpoint(f"{proxy} TLS", host=address, port=HTTPS_PORT, tls=tls, server_name=SERVER_NAME))


# -- the measurements -------------------------------------------------------------

def relay_rounds(direct: common.Endpoint, proxied: common.Endpoint, meter, args) -> dict[str, dict]:
    """Alternating rounds direct / proxied (direct, proxied, proxied, direct, ...); each median round."""
    flavor = relay.Ours()
    rounds: dict[str, list[dict]] = {direct.label: [], proxied.label: []}
    for i in range(args.rounds):
        for ep in ((direct, proxied) if i % 2 == 0 else (proxied, direct)):
            r = relay.run_loop(relay.load(flavor, ep, args.pairs, args.size, args.warmup, args.duration,
                                          "raw", meter))
            rounds[ep.label].append(r)
            print(f"  relay round {i + 1} {ep.label:22s} {r['messages_per_s']:9,.0f} msgs/s  "
                  f"p50 {r['rtt_p50_ms']:.2f} ms  p99 {r['rtt_p99_ms']:.2f} ms  host CPU {r['server_cpu_pct']:.0f}%",
                  flush=True)
    return relay.summarize(rounds)


def _idle_worker(endpoint: common.Endpoint, first: int, n: int, timeout: float, conn) -> None:
    """One client process: open ``n`` idle connections, report, hold them until told, report drops."""
    common.raise_nofile(n + 256)

    async def run() -> None:
        tally = idle.Tally()
        t0 = time.perf_counter()
        conns = await idle._open_many(relay.Ours(), endpoint, first, n, tally, timeout)
        conn.send({"opened": tally.opened, "failed": tally.failed[:5], "failed_count": len(tally.failed),
                   "seconds": time.perf_counter() - t0})
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        conn.send({"closed_by_server": sum(1 for c in conns if c.closed.done())})
        for c in conns:
            c.close()
        await asyncio.sleep(0.5)

    relay.run_loop(run())


def idle_through(endpoint: common.Endpoint, meter, n: int, settle: float, hold: float, timeout: float) -> dict:
    """``n`` idle WebSockets through ``endpoint`` from as many client processes as descriptors need."""
    # Warm-up and baseline: a few connections opened and closed, then the host's memory.
    relay.run_loop(idle._open_many(relay.Ours(), endpoint, 0, idle.WARMUP_CONNECTIONS, idle.Tally(), timeout))
    time.sleep(settle)
    mem0, cpu0 = meter.memory_bytes(), meter.cpu_seconds()
    procs = -(-n // FDS_PER_CLIENT)
    ctx = multiprocessing.get_context("fork")
    pipes, workers = [], []
    t0 = time.perf_counter()
    for k in range(procs):
        share = n // procs + (1 if k < n % procs else 0)
        parent, child = ctx.Pipe()
        w = ctx.Process(target=_idle_worker, args=(endpoint, idle.WARMUP_CONNECTIONS + k * FDS_PER_CLIENT,
                                                    share, timeout, child), daemon=True)
        w.start()
        pipes.append(parent)
        workers.append(w)
    opened = [p.recv() for p in pipes]
    elapsed = time.perf_counter() - t0
    cpu1 = meter.cpu_seconds()
    time.sleep(settle)
    mem1 = meter.memory_bytes()
    time.sleep(hold)
    mem1 = max(mem1, meter.memory_bytes())
    for p in pipes:
        p.send("close")
    dropped = sum(p.recv()["closed_by_server"] for p in pipes)
    for w in workers:
        w.join(30)
    total = sum(o["opened"] for o in opened)
    return {
        "server": endpoint.label,
        "connections": n,
        "opened": total,
        "failed": sum(o["failed_count"] for o in opened),
        "failures_sample": [f for o in opened for f in o["failed"]][:5],
        "closed_by_server_while_idle": dropped,
        "client_processes": procs,
        "setup_seconds": elapsed,
        "setups_per_s": total / elapsed,
        "host_cpu_ms_per_setup": 1000 * (cpu1 - cpu0) / max(1, total),
        "host_memory_before_mib": mem0 / 2**20,
        "host_memory_after_mib": mem1 / 2**20,
        "kib_per_connection": (mem1 - mem0) / max(1, total) / 1024,
        "held_seconds": settle + hold,
        "loadavg": common.loadavg(),
    }


def measure_proxy(proxy: str, address: str, meter, args) -> dict:
    direct, proxied = endpoints(address, proxy)
    print(f"{proxy}: relay, {args.rounds} rounds each, direct and through {proxy}", flush=True)
    relayed = relay_rounds(direct, proxied, meter, args)
    d, p = relayed[direct.label], relayed[proxied.label]
    result = {
        "relay": relayed,
        "relay_ratio": {"throughput": p["messages_per_s"] / d["messages_per_s"],
                        "p99": p["rtt_p99_ms"] / d["rtt_p99_ms"]},
    }
    print(f"{proxy}: long-polling, {args.polling_pairs} pairs", flush=True)
    result["polling"] = relay.run_loop(polling.load(proxied, args.polling_pairs, args.size, args.warmup,
                                                    args.duration, meter))
    r = result["polling"]
    print(f"  polling {r['messages_per_s']:,.0f} msgs/s  p50 {r['rtt_p50_ms']:.1f} ms  p99 {r['rtt_p99_ms']:.1f} ms",
          flush=True)
    if args.idle:
        print(f"{proxy}: {args.idle:,} idle WebSockets", flush=True)
        result["idle"] = r = idle_through(proxied, meter, args.idle, args.settle, args.hold, args.timeout)
        print(f"  idle {r['opened']:,} open, {r['failed']} failed, {r['closed_by_server_while_idle']} dropped, "
              f"{r['setups_per_s']:,.0f} set-ups/s, {r['kib_per_connection']:.1f} KiB per connection "
              f"(host {r['host_memory_before_mib']:.0f} -> {r['host_memory_after_mib']:.0f} MiB)", flush=True)
        for f in r["failures_sample"]:
            print(f"    failure: {f}")
    return result


def verdicts(results: dict) -> dict[str, dict]:
    """Each target of issue 6 with its measured figure and whether it holds."""
    out = {}
    noop = results.get("converge", {}).get("noop")
    if noop:
        out["noop_converge"] = {"measured_s": noop["seconds"], "target_s": TARGETS["noop_converge_s"],
                                "ok": noop["seconds"] <= TARGETS["noop_converge_s"] and noop["changed"] == 0}
    for proxy, m in results.get("proxies", {}).items():
        t = TARGETS[proxy]
        ratio = m["relay_ratio"]
        out[f"{proxy}_relay"] = {
            "throughput_ratio": ratio["throughput"], "throughput_ratio_target": t["throughput_ratio"],
            "p99_ratio": ratio["p99"], "p99_ratio_target": t["p99_ratio"],
            "ok": ratio["throughput"] >= t["throughput_ratio"] and ratio["p99"] <= t["p99_ratio"]}
        if "idle" in m:
            i = m["idle"]
            out[f"{proxy}_idle"] = {"held": i["opened"] - i["closed_by_server_while_idle"],
                                    "target": TARGETS["idle_connections"], "failed": i["failed"],
                                    "ok": i["failed"] == 0 and i["closed_by_server_while_idle"] == 0
                                    and i["opened"] >= TARGETS["idle_connections"]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proxies", default="nginx,apache")
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--size", type=int, default=1500)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3, help="relay rounds per path")
    ap.add_argument("--polling-pairs", type=int, default=50)
    ap.add_argument("--idle", type=int, default=TARGETS["idle_connections"], help="idle WebSockets (0: skip)")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--hold", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--skip-converge", action="store_true", help="use the running bench container as it is")
    ap.add_argument("--keep", action="store_true", help="leave the bench container up")
    ap.add_argument("--out", default=str(common.BENCH / "results.json"))
    args = ap.parse_args(argv)

    common.pin_self(common.CLIENT_CPU)
    common.raise_nofile(FDS_PER_CLIENT + 1024)
    info = common.machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    results: dict = {"benchmark": "stack", "command": "bench/stack.py " + " ".join(argv or sys.argv[1:]),
                     "params": vars(args), "machine": info, "targets": TARGETS, "converge": {}, "proxies": {}}
    try:
        if not args.skip_converge:
            molecule("destroy", log="destroy")
            molecule("create", log="create")
            results["converge"]["fresh"] = converge("fresh", "-e", f"proxy_server={proxies[0]}")
            results["converge"]["noop"] = converge("noop", "-e", f"proxy_server={proxies[0]}")
        container_id, address = container()
        meter = common.ContainerMeter(container_id)
        for k, proxy in enumerate(proxies):
            if k and not args.skip_converge:
                results["converge"][f"switch_to_{proxy}"] = converge(f"switch-{proxy}", "-e", f"proxy_server={proxy}")
            results["proxies"][proxy] = measure_proxy(proxy, address, meter, args)
    finally:
        if not args.keep and not args.skip_converge:
            molecule("destroy", log="destroy")
    results["verdicts"] = verdicts(results)
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    for name, v in results["verdicts"].items():
        figures = ", ".join(f"{k}={x:.2f}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items() if k != "ok")
        print(f"{name:16s} {'ok' if v['ok'] else 'MISSED'}  {figures}")
    print(f"written: {out}")
    try:
        import chart

        print(f"chart: {chart.draw(results, out.with_suffix('.png'))}")
    except ImportError as exc:
        print(f"chart skipped: {exc} (make bench installs matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
