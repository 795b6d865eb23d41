"""Long-polling benchmark: relayed messages/s and round trips of HTTP long-polling peers.

``PAIRS`` pairs of polling sessions (docs/protocol.md, "Transport B"): A posts
an offer to B, B's outstanding ``GET .../messages?wait=..`` returns it, B posts
the answer, A's outstanding GET returns that, and A posts the next offer: one
message in flight per pair, as in relay.py. Every session keeps one GET
waiting at all times (with ``ack``, so nothing is fetched twice), over
keep-alive connections of one aiohttp client. After a warm-up, for a fixed
duration, it counts relayed messages delivered and A's round trips.

    .venv/bin/python bench/polling.py               # against a local instance on CPU 1
    bench/stack.py runs it through nginx and Apache with TLS.

Output: a table on stdout and ``bench/results/polling.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import common
from relay import run_loop

WAIT = 25  # seconds a GET may wait (the protocol's default)


class Session:
    """One polling session: its id, token, the last seq it has and its message handler."""

    def __init__(self, http: aiohttp.ClientSession, endpoint: common.Endpoint) -> None:
        self.http, self.base = http, endpoint.base_url
        self.id = self.token = ""
        self.ack = 0
        self.on_message = None
        self.host = {"Host": endpoint.host_header}
        # TLS: the SNI name is the server name; the connection goes to the address.
        self.sni = endpoint.server_name if endpoint.tls else None
        self.headers: dict[str, str] = {}

    async def open(self) -> None:
        async with self.http.post(f"{self.base}/api/sessions", headers=self.host, server_hostname=self.sni) as r:
            if r.status != 201:
                raise RuntimeError(f"POST /api/sessions: {r.status} {await r.text()}")
            body = await r.json()
        self.id, self.token = body["id"], body["token"]
        self.headers = {**self.host, "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    async def send(self, message: bytes) -> None:
        async with self.http.post(f"{self.base}/api/sessions/{self.id}/messages", data=message,
                                  headers=self.headers, server_hostname=self.sni) as r:
            if r.status != 202:
                raise RuntimeError(f"POST messages: {r.status} {await r.text()}")
            await r.read()

    async def poll_forever(self, stop: asyncio.Event) -> None:
        """Keep one GET waiting; hand every message to ``on_message``."""
        url = f"{self.base}/api/sessions/{self.id}/messages"
        while not stop.is_set():
            async with self.http.get(url, params={"wait": str(WAIT), "ack": str(self.ack)},
                                     headers=self.headers, server_hostname=self.sni) as r:
                if r.status != 200:
                    raise RuntimeError(f"GET messages: {r.status} {await r.text()}")
                messages = await r.json()
            for m in messages:
                self.ack = max(self.ack, m.get("seq", 0))
                self.on_message(m)

    async def close(self) -> None:
        async with self.http.delete(f"{self.base}/api/sessions/{self.id}", headers=self.headers,
                                    server_hostname=self.sni):
            pass


async def load(endpoint: common.Endpoint, pairs: int, size: int, warmup: float, duration: float, meter) -> dict:
    """One measured run of ``pairs`` polling pairs against ``endpoint``."""
    from relay import Ours

    ours = Ours()
    connector = aiohttp.TCPConnector(limit=0, ssl=endpoint.tls or False)
    async with aiohttp.ClientSession(connector=connector) as http:
        sessions = [Session(http, endpoint) for _ in range(2 * pairs)]
        for s in sessions:
            await s.open()
        stop = asyncio.Event()
        phase = [0]               # 0 warm-up, 1 measuring, 2 stopping
        delivered = [0]
        rtts = array("d")
        errors: list[str] = []
        perf = time.perf_counter
        senders: set[asyncio.Task] = set()

        def spawn(coro) -> None:
            task = asyncio.create_task(coro)
            senders.add(task)
            task.add_done_callback(senders.discard)
            task.add_done_callback(lambda t: t.cancelled() or t.exception() is None
                                   or errors.append(repr(t.exception())))

        for k in range(pairs):
            a, b = sessions[2 * k], sessions[2 * k + 1]
            offer, answer = ours.offer(b.id, size), ours.answer(a.id, size)
            t0 = [0.0]

            def on_b(m: dict, b=b, answer=answer) -> None:
                if m.get("type") != "offer":
                    return  # joined/pong and the like: not part of the exchange
                if phase[0] == 1:
                    delivered[0] += 1
                spawn(b.send(answer))

            def on_a(m: dict, a=a, offer=offer, t0=t0) -> None:
                if m.get("type") != "answer":
                    return
                if phase[0] == 1:
                    delivered[0] += 1
                    rtts.append(perf() - t0[0])
                if phase[0] < 2:
                    t0[0] = perf()
                    spawn(a.send(offer))

            a.on_message, b.on_message = on_a, on_b
            t0[0] = perf()
            spawn(a.send(offer))

        pollers = [asyncio.create_task(s.poll_forever(stop)) for s in sessions]
        await asyncio.sleep(warmup)
        phase[0] = 1
        cpu0, t_start = meter.cpu_seconds(), perf()
        await asyncio.sleep(duration)
        phase[0] = 2
        t_end, cpu1 = perf(), meter.cpu_seconds()
        stop.set()
        for p in pollers:
            p.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        await asyncio.gather(*senders, return_exceptions=True)
        failed = [repr(p.exception()) for p in pollers if not p.cancelled() and p.exception()]
        for s in sessions:
            await s.close()
    if errors or failed:
        raise RuntimeError(f"polling against {endpoint.label}: {(errors + failed)[:3]}")
    if not rtts:
        raise RuntimeError(f"polling against {endpoint.label}: no round trip completed")
    elapsed = t_end - t_start
    return {
        "server": endpoint.label,
        "pairs": pairs,
        "messages_per_s": delivered[0] / elapsed,
        "round_trips": len(rtts),
        **common.latency_ms(rtts),
        "server_cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
        "seconds": elapsed,
        "loadavg": common.loadavg(),
    }


def table(results: list[dict]) -> str:
    rows = [("server", "pairs", "msgs/s", "p50 ms", "p99 ms", "server CPU")]
    for r in results:
        rows.append((r["server"], str(r["pairs"]), f"{r['messages_per_s']:,.0f}", f"{r['rtt_p50_ms']:.2f}",
                     f"{r['rtt_p99_ms']:.2f}", f"{r['server_cpu_pct']:.0f}%"))
    return common.table(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--size", type=int, default=1500, help="bytes per message as posted")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--out", default=str(common.RESULTS / "polling.json"))
    args = ap.parse_args(argv)

    common.pin_self(common.CLIENT_CPU)
    info = common.machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    port = common.free_port()
    server = common.signaling_server(port)
    server.start()
    try:
        r = run_loop(load(common.Endpoint("signaling", port=port), args.pairs, args.size, args.warmup,
                          args.duration, common.ProcessMeter(server.pid)))
    finally:
        server.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "polling", "params": vars(args), "machine": info,
                               "results": [r]}, indent=2) + "\n")
    print(table([r]))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
