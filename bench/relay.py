"""Relay benchmark: our signaling server and the PeerJS server, side by side, one run.

``PAIRS`` pairs of peers bounce offer/answer messages of ``SIZE`` bytes: A sends
an offer to B, B answers A as soon as the offer arrives, A sends the next offer
as soon as the answer arrives: exactly one message in flight per pair. After a
warm-up, for a fixed duration, we count every relayed message delivered
(offers at B, answers at A) and A's round trip times (offer out -> answer in,
so two relays). Each server runs alone on core ``SERVER_CPU`` (taskset); this
process, the load generator, runs on ``CLIENT_CPU``. Rounds alternate between
the servers so background load hits both alike; the report takes each
server's median round.

    .venv/bin/python bench/relay.py                    # defaults below
    .venv/bin/python bench/relay.py --duration 20 --rounds 5
    .venv/bin/python bench/relay.py --client aiohttp   # load generator check

Output: a table on stdout and ``bench/results/relay.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from wsclient import client_frame, connect

SDP_LINE = "a=candidate:842163049 1 udp 1677729535 198.51.100.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0 "


def padded(build, size: int) -> bytes:
    """``build(sdp)`` -> bytes, with ``sdp`` grown until the whole message is ``size`` bytes."""
    base = len(build(""))
    if base > size:
        raise ValueError(f"message needs at least {base} bytes")
    sdp = (SDP_LINE * (size // len(SDP_LINE) + 1))[: size - base]
    out = build(sdp)
    assert len(out) == size, (len(out), size)
    return out


class Flavor:
    """How to talk to one kind of server."""

    name = ""
    offer_prefix = b""
    answer_prefix = b""

    def path(self, i: int) -> str: ...
    def peer_id(self, i: int, first_frame: bytes) -> str: ...
    def offer(self, to: str, size: int) -> bytes: ...
    def answer(self, to: str, size: int) -> bytes: ...


class Ours(Flavor):
    name = "signaling"
    offer_prefix = b'{"type":"offer","from":"'
    answer_prefix = b'{"type":"answer","from":"'

    def path(self, i: int) -> str:
        return "/ws"

    def peer_id(self, i: int, first_frame: bytes) -> str:
        msg = json.loads(first_frame)
        assert msg["type"] == "welcome", msg
        return msg["id"]

    def offer(self, to: str, size: int) -> bytes:
        return padded(lambda sdp: json.dumps(
            {"type": "offer", "to": to, "data": {"type": "offer", "sdp": sdp}}, separators=(",", ":")).encode(), size)

    def answer(self, to: str, size: int) -> bytes:
        return padded(lambda sdp: json.dumps(
            {"type": "answer", "to": to, "data": {"type": "answer", "sdp": sdp}}, separators=(",", ":")).encode(), size)


class PeerJS(Flavor):
    """peer 1.x: ``/peerjs?id&token&key``, first frame ``{"type":"OPEN"}``, then
    ``{"type","dst","payload"}`` in and ``{"type","src","dst","payload"}`` out
    (node_modules/peer/dist/bin/peerjs.js: WebSocketServer._onSocketConnection,
    the OFFER/ANSWER handlers and the transmission handler)."""

    name = "peerjs"
    offer_prefix = b'{"type":"OFFER","src":"'
    answer_prefix = b'{"type":"ANSWER","src":"'

    def __init__(self) -> None:
        self.run = os.urandom(4).hex()

    def path(self, i: int) -> str:
        return f"/peerjs?id=p{self.run}{i:05d}&token=t{i}&key=peerjs"

    def peer_id(self, i: int, first_frame: bytes) -> str:
        msg = json.loads(first_frame)
        assert msg["type"] == "OPEN", msg
        return f"p{self.run}{i:05d}"

    def offer(self, to: str, size: int) -> bytes:
        return padded(lambda sdp: json.dumps(
            {"type": "OFFER", "dst": to, "payload": {"type": "offer", "sdp": sdp}},
            separators=(",", ":")).encode(), size)

    def answer(self, to: str, size: int) -> bytes:
        return padded(lambda sdp: json.dumps(
            {"type": "ANSWER", "dst": to, "payload": {"type": "answer", "sdp": sdp}},
            separators=(",", ":")).encode(), size)


FLAVORS = {"signaling": Ours, "peerjs": PeerJS}


class Run:
    """Counters of one measured run."""

    def __init__(self) -> None:
        self.phase = 0            # 0 warm-up, 1 measuring, 2 stopping
        self.delivered = 0        # relayed messages received while measuring
        self.rtts = array("d")    # seconds, measured phase only
        self.bad: list[bytes] = []
        self.idle_pairs = 0


async def _connect_all(flavor: Flavor, endpoint: common.Endpoint, n: int, client: str):
    """n open connections with their peer ids; callbacks are set later."""
    first: list[list[bytes]] = [[] for _ in range(n)]
    conns = []
    for i in range(n):
        if client == "raw":
            c = await connect(endpoint.host, endpoint.port, flavor.path(i), on_text=first[i].append,
                              ssl=endpoint.tls, server_name=endpoint.server_name)
        elif client == "shared":
            c = await _shared_connect(flavor, endpoint, flavor.path(i), first[i])
        else:
            c = await _aiohttp_connect(endpoint, flavor.path(i), first[i])
        conns.append(c)
    deadline = time.monotonic() + 10
    while any(not f for f in first):
        if time.monotonic() > deadline:
            raise RuntimeError("no first frame (welcome/OPEN) on some connections")
        await asyncio.sleep(0.01)
    return conns, [flavor.peer_id(i, f[0]) for i, f in enumerate(first)]


# -- the aiohttp-client variant (for comparing load generators) ------------------

_SESSION = None


class _AioConn:
    __slots__ = ("ws", "on_text", "task", "peer")


async def _aiohttp_connect(endpoint: common.Endpoint, path: str, sink: list[bytes]):
    import aiohttp

    global _SESSION
    if _SESSION is None:
        _SESSION = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    c = _AioConn()
    c.ws = await _SESSION.ws_connect(f"{endpoint.base_url}{path}", autoping=True, compress=0, max_msg_size=0,
                                     ssl=endpoint.tls or False, headers={"Host": endpoint.host_header},
                                     server_hostname=endpoint.server_name if endpoint.tls else None)
    c.on_text = sink.append

    async def reader() -> None:
        ws = c.ws
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                c.on_text(msg.data.encode())

    c.task = asyncio.create_task(reader())
    return c


# -- the shared-client variant: signaling.client.WsPeer (is a hot loop of our own still needed?) --

async def _shared_connect(flavor: Flavor, endpoint: common.Endpoint, path: str, sink: list[bytes]):
    """A ``signaling.client.WsPeer`` read by a task: every message goes through the shared
    client's ``recv()`` (text frame check, JSON decoding, the ``seq`` check). The callbacks
    take the payload's prefix, so a message is handed on as its type's prefix."""
    import aiohttp

    from signaling.client import WsPeer

    class Peer(WsPeer):
        timeout = None  # the loop waits as long as it takes: no timer per message

    global _SESSION
    if _SESSION is None:
        _SESSION = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    c = _AioConn()
    peer = await Peer.connect(_SESSION, f"{endpoint.base_url}{path}", autoping=True, compress=0, max_msg_size=0,
                                ssl=endpoint.tls or False, headers={"Host": endpoint.host_header},
                                server_hostname=endpoint.server_name if endpoint.tls else None)
    c.ws = peer.ws
    sink.append(json.dumps(peer.welcome).encode())
    c.on_text = sink.append
    prefixes = {"offer": flavor.offer_prefix, "answer": flavor.answer_prefix}

    async def reader() -> None:
        recv = peer.recv
        while True:
            msg = await recv(None)
            c.on_text(prefixes.get(msg["type"]) or json.dumps(msg).encode())

    c.task = asyncio.create_task(reader())
    c.peer = peer
    return c


def _wire(conn, client: str, frame_payload: bytes):
    """A function that sends ``frame_payload`` on ``conn``, as cheaply as the client allows."""
    if client == "raw":
        frame = client_frame(frame_payload)  # masked once, sent as is every time
        write = conn.transport.write
        return lambda: write(frame)
    text = frame_payload.decode()
    loop = asyncio.get_running_loop()
    if client == "shared":
        send_text = conn.peer.send_text
        return lambda: loop.create_task(send_text(text))
    ws = conn.ws
    return lambda: loop.create_task(ws.send_str(text))


def _set_on_text(conn, fn) -> None:
    conn.on_text = fn


async def load(flavor: Flavor, endpoint: common.Endpoint, pairs: int, size: int, warmup: float, duration: float,
               client: str, meter, connect=None) -> dict[str, object]:
    """One measured run against ``endpoint``; ``meter`` reads the server side's CPU seconds.
    ``connect`` opens the connections (default: all of them on ``endpoint``, ``_connect_all``'s
    signature and result); relay.py pairs connections 2k and 2k+1."""
    conns, ids = await (connect or _connect_all)(flavor, endpoint, 2 * pairs, client)
    run = Run()
    perf = time.perf_counter
    starters = []
    for k in range(pairs):
        a, b = conns[2 * k], conns[2 * k + 1]
        send_offer = _wire(a, client, flavor.offer(ids[2 * k + 1], size))
        send_answer = _wire(b, client, flavor.answer(ids[2 * k], size))
        t0 = [0.0]
        op, ap = flavor.offer_prefix, flavor.answer_prefix
        lo, la = len(op), len(ap)

        def on_offer(payload: bytes, send_answer=send_answer, op=op, lo=lo) -> None:
            if payload[:lo] != op:
                run.bad.append(payload[:200])
                return
            if run.phase == 1:
                run.delivered += 1
            send_answer()

        def on_answer(payload: bytes, send_offer=send_offer, t0=t0, ap=ap, la=la) -> None:
            t = perf()
            if payload[:la] != ap:
                run.bad.append(payload[:200])
                return
            if run.phase == 1:
                run.delivered += 1
                run.rtts.append(t - t0[0])
            if run.phase < 2:
                t0[0] = perf()
                send_offer()
            else:
                run.idle_pairs += 1

        def start(send_offer=send_offer, t0=t0) -> None:
            t0[0] = perf()
            send_offer()

        _set_on_text(a, on_answer)
        _set_on_text(b, on_offer)
        starters.append(start)

    gc.collect()
    gc.disable()  # no collector pauses inside the measured window (the arrays hold floats only)
    try:
        for start in starters:
            start()
        await asyncio.sleep(warmup)
        run.phase = 1
        cpu_srv0, cpu_cli0, t_start = meter.cpu_seconds(), time.process_time(), perf()
        await asyncio.sleep(duration)
        run.phase = 2
        t_end, cpu_srv1, cpu_cli1 = perf(), meter.cpu_seconds(), time.process_time()
        deadline = time.monotonic() + 10
        # Polls the counters the protocol callbacks bump: an Event would add work to the measured path.
        while run.idle_pairs < pairs and time.monotonic() < deadline and not run.bad:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    finally:
        gc.enable()
    global _SESSION
    for c in conns:
        if client == "raw":
            c.close()
        else:
            await c.ws.close()
            c.task.cancel()
    if _SESSION is not None:  # bound to this round's loop
        await _SESSION.close()
        _SESSION = None
    await asyncio.sleep(0.2)
    elapsed = t_end - t_start
    rtts = run.rtts
    if run.bad:
        raise RuntimeError(f"{flavor.name}: unexpected frame(s), e.g. {run.bad[0]!r}")
    if not rtts:
        raise RuntimeError(f"{flavor.name}: no round trip completed")
    return {
        "server": endpoint.label,
        "messages_per_s": run.delivered / elapsed,
        "round_trips": len(rtts),
        **common.latency_ms(rtts),
        "server_cpu_pct": 100 * (cpu_srv1 - cpu_srv0) / elapsed,
        "messages_per_server_cpu_s": run.delivered / max(1e-9, cpu_srv1 - cpu_srv0),
        "client_cpu_pct": 100 * (cpu_cli1 - cpu_cli0) / elapsed,
        "client_cpu_us_per_msg": 1e6 * (cpu_cli1 - cpu_cli0) / max(1, run.delivered),
        "stalled_pairs": pairs - run.idle_pairs,
        "seconds": elapsed,
        "loadavg": common.loadavg(),
    }


def one_round(name: str, args) -> dict[str, object]:
    port = common.free_port()
    server = common.signaling_server(port) if name == "signaling" else common.peerjs_server(port)
    server.start()
    try:
        flavor = FLAVORS[name]()
        return run_loop(load(flavor, common.Endpoint(name, port=port), args.pairs, args.size, args.warmup,
                             args.duration, args.client, common.ProcessMeter(server.pid)))
    finally:
        server.stop()


def run_loop(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def median_round(rounds: list[dict[str, object]]) -> dict[str, object]:
    """The round with the median throughput (its latencies come with it)."""
    ordered = sorted(rounds, key=lambda r: r["messages_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def summarize(rounds: dict[str, list[dict[str, object]]]) -> dict[str, dict[str, object]]:
    """Each server's (or path's) median round, with every round's throughput beside it."""
    return {name: {**median_round(rs), "all_rounds_messages_per_s": [r["messages_per_s"] for r in rs]}
            for name, rs in rounds.items()}


def table(summary: dict[str, dict[str, object]]) -> str:
    rows = [("server", "msgs/s", "p50 ms", "p99 ms", "server CPU", "msgs/CPU-s", "gen CPU", "rounds (msgs/s)")]
    for name, s in summary.items():
        rows.append((name, f"{s['messages_per_s']:,.0f}", f"{s['rtt_p50_ms']:.2f}", f"{s['rtt_p99_ms']:.2f}",
                     f"{s['server_cpu_pct']:.0f}%", f"{s['messages_per_server_cpu_s']:,.0f}",
                     f"{s['client_cpu_pct']:.0f}%",
                     " ".join(f"{r:,.0f}" for r in s["all_rounds_messages_per_s"])))
    return common.table(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--size", type=int, default=1500, help="bytes per message as sent by the client")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per server, alternating")
    ap.add_argument("--servers", default="signaling,peerjs")
    ap.add_argument("--client", choices=("raw", "aiohttp", "shared"), default="raw",
                    help="load generator: bench/wsclient.py (default), aiohttp's client, or signaling.client")
    ap.add_argument("--out", default=str(common.RESULTS / "relay.json"))
    args = ap.parse_args(argv)

    common.pin_self(common.CLIENT_CPU)
    common.raise_nofile(4 * args.pairs + 1024)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    info = common.machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    rounds: dict[str, list[dict[str, object]]] = {s: [] for s in servers}
    for i in range(args.rounds):
        order = servers if i % 2 == 0 else servers[::-1]
        for name in order:
            r = one_round(name, args)
            rounds[name].append(r)
            print(f"round {i + 1} {name:10s} {r['messages_per_s']:10,.0f} msgs/s  p50 {r['rtt_p50_ms']:.2f} ms  "
                  f"p99 {r['rtt_p99_ms']:.2f} ms  server CPU {r['server_cpu_pct']:.0f}% "
                  f"({r['messages_per_server_cpu_s']:,.0f} msgs/CPU-s)  "
                  f"generator CPU {r['client_cpu_pct']:.0f}% ({r['client_cpu_us_per_msg']:.1f} us/msg)  "
                  f"load {r['loadavg'][0]:.2f}", flush=True)
    summary = summarize(rounds)
    result: dict[str, object] = {
        "benchmark": "relay",
        "command": "bench/relay.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "params": vars(args),
        "machine": info,
        "summary": summary,
        "rounds": rounds,
    }
    if "signaling" in summary and "peerjs" in summary:
        ours, theirs = summary["signaling"], summary["peerjs"]
        result["targets"] = {
            "throughput_ratio": ours["messages_per_s"] / theirs["messages_per_s"],
            "throughput_ratio_target": 1.25,
            "throughput_ok": ours["messages_per_s"] >= 1.25 * theirs["messages_per_s"],
            "p99_ok": ours["rtt_p99_ms"] <= theirs["rtt_p99_ms"],
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"relay: {args.pairs} pairs, {args.size}-byte messages, one in flight per pair, "
          f"{args.warmup:g} s warm-up + {args.duration:g} s measured, median of {args.rounds} rounds; "
          f"servers on CPU {common.SERVER_CPU}, generator on CPU {common.CLIENT_CPU}")
    print(table(summary))
    if "targets" in result:
        t = result["targets"]
        print(f"throughput ratio {t['throughput_ratio']:.2f}x "
              f"(target >= 1.25x: {'ok' if t['throughput_ok'] else 'MISSED'}); "
              f"p99 {'ok' if t['p99_ok'] else 'MISSED'} (ours <= PeerJS's)")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
