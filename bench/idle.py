"""Idle benchmark: resident memory per open WebSocket, and connection set-up rate.

One ``python -m signaling`` instance runs alone on core ``SERVER_CPU``
(taskset). This process, on ``CLIENT_CPU``, opens ``--connections`` WebSocket
connections to it (``CONCURRENCY`` asyncio tasks, each opening one connection
after the other with bench/wsclient.py's raw client) and waits on each for its
``welcome``. Then nothing more is sent: the connections sit idle.

The server's resident set (``VmRSS`` in /proc/PID/status) is read once before
the first connection (after a warm-up of a few connections opened and closed,
so the first-request imports and caches are not charged to the idle ones) and
once after the last ``welcome`` plus a settle time. The report is
(after - before) / connections in KiB, the set-up rate (connections with their
``welcome`` per second), and how many connections failed or were closed by the
server while held (both must be 0).

    .venv/bin/python bench/idle.py                       # 10,000 connections
    .venv/bin/python bench/idle.py --servers signaling,peerjs   # PeerJS alongside

Output: a table on stdout and ``bench/results/idle.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from relay import FLAVORS, run_loop
from wsclient import WSClient, connect

TARGET_KIB = 10.0
CONCURRENCY = 32          # connections being opened at once
WARMUP_CONNECTIONS = 64   # opened and closed before the baseline reading
FIRST_FRAME = {"signaling": b'{"type":"welcome"', "peerjs": b'{"type":"OPEN"'}


class Tally:
    def __init__(self) -> None:
        self.opened = 0       # handshake done and first frame received
        self.failed: list[str] = []


async def _open_one(flavor, endpoint: common.Endpoint, i: int, tally: Tally, timeout: float) -> WSClient | None:
    expected = FIRST_FRAME[flavor.name]
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def first(payload: bytes) -> None:
        if not got.done():
            got.set_result(payload)

    try:
        c = await connect(endpoint.host, endpoint.port, flavor.path(i), on_text=first, timeout=timeout,
                          ssl=endpoint.tls, server_name=endpoint.server_name)
        payload = await asyncio.wait_for(got, timeout)
    except (TimeoutError, OSError, ConnectionError) as exc:
        tally.failed.append(f"{i}: {type(exc).__name__}: {exc}")
        return None
    if not payload.startswith(expected):
        tally.failed.append(f"{i}: unexpected first frame {payload[:100]!r}")
        c.close()
        return None
    c.on_text = None  # idle from now on: keep nothing of what arrives
    tally.opened += 1
    return c


async def _open_many(flavor, endpoint: common.Endpoint, first: int, n: int, tally: Tally,
                     timeout: float) -> list[WSClient]:
    conns: list[WSClient] = []
    next_i = first
    stop = first + n

    async def worker() -> None:
        nonlocal next_i
        while next_i < stop:
            i = next_i
            next_i += 1
            c = await _open_one(flavor, endpoint, i, tally, timeout)
            if c is not None:
                conns.append(c)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return conns


async def measure(name: str, endpoint: common.Endpoint, meter, n: int, settle: float, hold: float,
                  timeout: float) -> dict:
    """Open ``n`` idle connections to ``endpoint`` and hold them; ``meter`` reads the server
    side's memory and CPU (one process, or a whole deployed host)."""
    flavor = FLAVORS[name]()
    # Warm-up: the first connections pay for lazy imports, caches, arenas.
    warm = await _open_many(flavor, endpoint, 0, WARMUP_CONNECTIONS, Tally(), timeout)
    for c in warm:
        c.close()
    await asyncio.sleep(settle)
    rss0 = meter.memory_bytes()
    cpu0 = meter.cpu_seconds()

    tally = Tally()
    gc.collect()
    t0 = time.perf_counter()
    conns = await _open_many(flavor, endpoint, WARMUP_CONNECTIONS, n, tally, timeout)
    elapsed = time.perf_counter() - t0
    cpu1 = meter.cpu_seconds()
    rss_peak = meter.memory_bytes()
    await asyncio.sleep(settle)
    rss1 = meter.memory_bytes()
    if hold > 0:  # optionally across a heartbeat, to see pings answered and nothing dropped
        await asyncio.sleep(hold)
        rss1 = max(rss1, meter.memory_bytes())
    closed_by_server = sum(1 for c in conns if c.closed.done())

    for c in conns:
        c.close()
    await asyncio.sleep(0.5)
    per_conn = (rss1 - rss0) / max(1, tally.opened)
    return {
        "server": endpoint.label,
        "connections": n,
        "opened": tally.opened,
        "failed": len(tally.failed),
        "failures_sample": tally.failed[:5],
        "closed_by_server_while_idle": closed_by_server,
        "setup_seconds": elapsed,
        "setups_per_s": tally.opened / elapsed,
        "server_cpu_ms_per_setup": 1000 * (cpu1 - cpu0) / max(1, tally.opened),
        "rss_before_kib": rss0 / 1024,
        "rss_after_kib": rss1 / 1024,
        "rss_right_after_setup_kib": rss_peak / 1024,
        "kib_per_connection": per_conn / 1024,
        "held_seconds": settle + hold,
        "loadavg": common.loadavg(),
    }


def one_round(name: str, args) -> dict:
    port = common.free_port()
    nofile = args.connections + 1024
    if name == "signaling":
        server = common.signaling_server(port)
    else:
        server = common.peerjs_server(port, limit=args.connections + WARMUP_CONNECTIONS + 100)
    server.nofile = nofile
    server.start()
    try:
        return run_loop(measure(name, common.Endpoint(name, port=port), common.ProcessMeter(server.pid),
                                args.connections, args.settle, args.hold, args.timeout))
    finally:
        server.stop()


def table(results: list[dict]) -> str:
    rows = [("server", "connections", "failed", "dropped", "setup/s", "RSS before", "RSS after", "KiB/conn")]
    for r in results:
        rows.append((r["server"], f"{r['opened']:,}", str(r["failed"]), str(r["closed_by_server_while_idle"]),
                     f"{r['setups_per_s']:,.0f}", f"{r['rss_before_kib'] / 1024:.1f} MiB",
                     f"{r['rss_after_kib'] / 1024:.1f} MiB", f"{r['kib_per_connection']:.2f}"))
    return common.table(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds before each RSS reading")
    ap.add_argument("--hold", type=float, default=0.0, help="extra seconds to hold the idle connections")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds for one connection and its first frame")
    ap.add_argument("--servers", default="signaling", help="comma-separated: signaling, peerjs")
    ap.add_argument("--out", default=str(common.RESULTS / "idle.json"))
    args = ap.parse_args(argv)

    common.pin_self(common.CLIENT_CPU)
    limit = common.raise_nofile(args.connections + WARMUP_CONNECTIONS + 1024)
    if limit < args.connections + WARMUP_CONNECTIONS + 64:
        print(f"idle: open-files limit is {limit}, too low for {args.connections} connections", file=sys.stderr)
        return 2
    info = common.machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    results = []
    for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
        r = one_round(name, args)
        results.append(r)
        print(f"{name:10s} {r['opened']:,} open, {r['failed']} failed, {r['closed_by_server_while_idle']} dropped, "
              f"{r['setups_per_s']:,.0f} set-ups/s, {r['kib_per_connection']:.2f} KiB/connection, "
              f"load {r['loadavg'][0]:.2f}", flush=True)
        for f in r["failures_sample"]:
            print(f"  failure: {f}")
    ours = next((r for r in results if r["server"] == "signaling"), None)
    result: dict[str, object] = {
        "benchmark": "idle",
        "command": "bench/idle.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "params": vars(args),
        "machine": info,
        "results": results,
    }
    if ours is not None:
        result["targets"] = {
            "kib_per_connection_target": TARGET_KIB,
            "memory_ok": ours["kib_per_connection"] <= TARGET_KIB,
            "no_failures": ours["failed"] == 0 and ours["closed_by_server_while_idle"] == 0,
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"idle: {args.connections:,} WebSocket connections, {CONCURRENCY} opened at once, "
          f"server on CPU {common.SERVER_CPU}, clients on CPU {common.CLIENT_CPU}")
    print(table(results))
    ok = True
    if "targets" in result:
        t = result["targets"]
        ok = t["memory_ok"] and t["no_failures"]
        print(f"memory {'ok' if t['memory_ok'] else 'MISSED'} (target <= {TARGET_KIB:g} KiB/connection); "
              f"failures {'none' if t['no_failures'] else 'SOME'}")
    print(f"written: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
