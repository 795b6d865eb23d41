"""Load driver: many signaling peers in rooms, sending numbered messages, judged end to end.

``Load`` puts ``peers`` peers on a deployed service through its proxy, in
private rooms of ``room_size``: one WebSocket host each, the rest
participants, ``polling_share`` of all peers on HTTP long-polling. Every
``interval`` seconds each peer sends one numbered ``candidate``: a
participant to its host, a host to its participants in turn. Each
(sender, receiver) pair is a stream numbered 1, 2, 3...; every arrival is
recorded, so ``report()`` and ``problems()`` can say what was lost,
duplicated or reordered, and how long anyone waited.

The peers are the careful clients docs/protocol.md describes, nothing more:

* every message carries ``cseq`` and is kept until a ``received`` (in a
  ``pong``, a resumed ``welcome`` or a polling ``202``) covers it;
* after a resume, or an error that says a message was not handled
  (``unavailable``, ``out-of-order``, ``rate-limited``), a peer pings and
  sends again what follows the pong's ``received``; the server handles each
  ``cseq`` once, so a resend can never be delivered twice;
* WebSocket peers resume with ``/ws?resume=TOKEN&ack=SEQ`` after any close
  but their own, polling peers retry a failed request and poll with ``ack``;
* everything a peer sends, resends most of all, goes at a pace: a token
  bucket of half the server's (``rate_limit`` in ``welcome``), so a peer
  holding hundreds of messages after a long outage is never dropped for
  flooding ("Sending at a pace").

Use it from a test (``async with Load(...) as load: ... await load.settle()``)
or from the command line::

    python tests/tools/load_driver.py https://localhost:8443 --ca ca.pem --peers 1000 --duration 180
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import random
import ssl
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from signaling import client

POLL_WAIT = 10          # seconds a long poll hangs
RETRY_DELAY = 0.3       # before a failed HTTP request or connection attempt goes again
RESYNC_DELAY = 0.2      # after an error that refused a message, before the ping that resyncs
STUCK_AFTER = 3.0       # a kept message this old, sent but not confirmed, is sent again
CONFIRM_EVERY = 2.0     # seconds between a WebSocket peer's confirming pings
CONNECT_AT_ONCE = 50    # peers connecting concurrently at the start
RETRIED_CODES = {"unavailable", "out-of-order", "rate-limited"}  # errors that mean: not handled, resend


Pace = client.Pace  # half the server's bucket (docs/protocol.md, "Sending at a pace")


@dataclass
class Outgoing:
    """A message kept until the server confirms its ``cseq``."""

    cseq: int
    text: str
    created: float
    sent_at: float = 0.0


@dataclass
class Peer:
    """What both transports share: identity, numbering, and what was seen."""

    load: Load
    name: str
    room: str
    role: str
    id: str = ""
    token: str = ""
    targets: list[Peer] = field(default_factory=list)
    turn: int = 0                      # host: which participant is next
    cseq: int = 0
    received: int = 0                  # highest cseq the server confirmed
    kept: collections.deque[Outgoing] = field(default_factory=collections.deque)
    sent: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))  # per receiver
    arrivals: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: collections.defaultdict(list))
    seq_anomalies: list[str] = field(default_factory=list)
    errors: collections.Counter = field(default_factory=collections.Counter)
    welcomes: list[dict] = field(default_factory=list)
    resends: int = 0
    outages: list[float] = field(default_factory=list)
    joined: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        """Transports add their own state."""

    def seq_gap(self, last: int, seq: int) -> None:
        """The connection's ``on_gap``: a message lost or delivered twice, recorded."""
        self.seq_anomalies.append(f"{self.name}: seq {seq} after {last}")

    def welcomed(self, welcome: dict) -> None:
        self.welcomes.append(welcome)
        self.pace = Pace(welcome.get("rate_limit"))

    # -- outgoing ------------------------------------------------------------------

    def next_message(self, now: float) -> Outgoing:
        """The tick's message, numbered in its stream and by cseq, kept until confirmed."""
        target = self.targets[self.turn % len(self.targets)]
        self.turn += 1
        self.sent[target.name] += 1
        self.cseq += 1
        body = {"type": "candidate", "to": target.id, "cseq": self.cseq,
                "data": {"from": self.name, "n": self.sent[target.name], "t": now}}
        out = Outgoing(self.cseq, json.dumps(body), now)
        self.kept.append(out)
        return out

    def confirm(self, received: int) -> None:
        """The server handled everything up to ``received``: forget it."""
        self.received = max(self.received, received)
        while self.kept and self.kept[0].cseq <= self.received:
            self.kept.popleft()

    # -- incoming ------------------------------------------------------------------

    def handle(self, msg: dict) -> None:
        """Record one server message (its ``seq`` was checked by the connection)."""
        kind = msg.get("type")
        if kind == "candidate":
            data = msg["data"]
            sender = self.load.by_id.get(msg["from"])
            if sender is None or sender.name != data["from"]:
                self.seq_anomalies.append(f"{self.name}: {data} came from id {msg['from']}")
            self.arrivals[data["from"]].append((data["n"], time.monotonic() - data["t"]))
        elif kind == "joined":
            self.joined.set()
        elif kind == "pong":
            self.confirm(msg["received"])
        elif kind == "error":
            self.errors[msg["code"]] += 1


class WsPeer(Peer):
    """A WebSocket peer: resumes after every close but its own."""

    transport = "websocket"

    def __post_init__(self) -> None:
        self.conn: client.WsPeer | None = None
        self.online = asyncio.Event()
        self.closing = False
        self.resyncing = False
        self.reader: asyncio.Task | None = None
        self.spawned: set[asyncio.Task] = set()  # resumes, pumps, resyncs: referenced until done
        self.pinged = 0.0
        self.pumping = False
        self.rewind: int | None = None     # a resync while pumping: send again from here

    async def connect(self) -> None:
        conn = await client.WsPeer.connect(self.load.http, f"{self.load.base}/ws", timeout=30, heartbeat=None)
        conn.timeout, conn.on_gap = None, self.seq_gap  # reads wait as long as it takes; gaps recorded
        self.welcomed(conn.welcome)
        self.id, self.token = conn.id, conn.token
        self.load.by_id[self.id] = self
        self._attach(conn)
        await conn.send(type="join", room=self.room, role=self.role, name=self.name)
        await asyncio.wait_for(self.joined.wait(), 30)
        self.online.set()

    def _attach(self, conn: client.WsPeer) -> None:
        self.conn = conn
        self.reader = asyncio.create_task(self._read(conn))

    async def _read(self, conn: client.WsPeer) -> None:
        while True:
            try:
                obj = await conn.recv()
            except client.Closed:
                break
            self.handle(obj)
            if obj.get("type") == "error" and obj.get("code") in RETRIED_CODES:
                self._resync_soon()
            elif obj.get("type") == "pong" and obj.get("ref") == "resync":
                self._spawn(self._pump())
            elif obj.get("type") == "pong" and self.kept and time.monotonic() - self.kept[0].sent_at > STUCK_AFTER:
                self._resync_soon()
        if self.closing:
            return
        self.online.clear()
        self._spawn(self._resume(time.monotonic()))

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run ``coro`` on its own; the loop keeps only weak references to tasks."""
        task = asyncio.create_task(coro)
        self.spawned.add(task)
        task.add_done_callback(self.spawned.discard)

    def _resync_soon(self) -> None:
        """Ping after a moment; the pong's ``received`` says what to send again."""
        if self.resyncing:
            return
        self.resyncing = True

        async def resync() -> None:
            await asyncio.sleep(RESYNC_DELAY)
            self.resyncing = False
            if self.online.is_set():  # else the resume sends everything kept
                await self._send('{"type":"ping","id":"resync"}')

        self._spawn(resync())

    async def _send(self, text: str) -> bool:
        """Send at our pace."""
        await self.pace.take()
        return await self._send_raw(text)

    async def _send_raw(self, text: str) -> bool:
        try:
            await self.conn.send_text(text)
            return True
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            return False  # the reader sees the close and resumes

    async def _pump(self) -> None:
        """Send again, in order and at our pace, every kept message above ``received``, and
        what is kept meanwhile; ticks leave their messages to it while it runs."""
        if self.pumping:
            self.rewind = self.received
            return
        self.pumping = True
        try:
            last = self.received
            while self.online.is_set():
                if self.rewind is not None:
                    last, self.rewind = self.rewind, None
                out = next((o for o in self.kept if o.cseq > last), None)
                if out is None:
                    return
                await self.pace.take()
                if not self.online.is_set():
                    return
                if out.sent_at:
                    self.resends += 1
                out.sent_at = time.monotonic()
                if not await self._send_raw(out.text):
                    return
                last = out.cseq
        finally:
            self.pumping = False

    async def _resume(self, closed_at: float) -> None:
        while not self.closing:
            try:
                conn = await self.conn.resume(timeout=10, heartbeat=None)
            except client.Refused as refused:
                if not isinstance(refused.message, dict) or refused.message.get("code") == "unavailable":
                    await asyncio.sleep(RETRY_DELAY)  # closed before a welcome, or the backend failed (1013)
                    continue
                self.welcomes.append(refused.message)  # refused: problems() reports it
                return
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                await asyncio.sleep(RETRY_DELAY)
                continue
            welcome = conn.welcome
            self.welcomed(welcome)
            self.outages.append(time.monotonic() - closed_at)
            self.confirm(welcome.get("received", 0))
            self._attach(conn)
            self.online.set()
            await self._pump()
            return

    async def tick(self) -> None:
        out = self.next_message(time.monotonic())
        if not self.online.is_set() or self.pumping:
            return  # kept; the resume or the pump sends it
        await self.pace.take()
        out.sent_at = time.monotonic()
        if not await self._send_raw(out.text):
            return
        if out.sent_at - self.pinged >= CONFIRM_EVERY:
            self.pinged = out.sent_at
            await self._send('{"type":"ping"}')

    async def confirm_all(self) -> None:
        """Ping until the server confirmed everything kept (settling)."""
        if self.online.is_set():
            if self.kept and time.monotonic() - self.kept[0].sent_at > STUCK_AFTER:
                await self._pump()
            await self._send('{"type":"ping"}')

    async def close(self) -> None:
        self.closing = True
        if self.conn is not None:
            await self.conn.close(code=1000)
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


class PollingPeer(Peer):
    """A long-polling peer: POSTs what is kept, GETs with ``ack``."""

    transport = "polling"

    def __post_init__(self) -> None:
        self.conn: client.PollingPeer | None = None
        self.stop = asyncio.Event()
        self.poller: asyncio.Task | None = None
        self.flushing = asyncio.Lock()
        self.retries = 0

    async def connect(self) -> None:
        self.conn = await client.PollingPeer.create(self.load.http, self.load.base)
        self.conn.on_gap = self.seq_gap
        self.welcomed(self.conn.welcome)
        self.id, self.token = self.conn.id, self.conn.token
        self.load.by_id[self.id] = self
        self.poller = asyncio.create_task(self._poll())
        self.cseq += 1
        self.kept.append(Outgoing(self.cseq, json.dumps(
            {"type": "join", "room": self.room, "role": self.role, "name": self.name, "cseq": self.cseq}),
            time.monotonic()))
        await self.flush()
        await asyncio.wait_for(self.joined.wait(), 30)

    async def _poll(self) -> None:
        def lost(n: int) -> None:
            self.seq_anomalies.append(f"{self.name}: Signaling-Lost {n}")

        def retry(_exc: BaseException) -> None:
            self.retries += 1

        await self.conn.poll_until(self.stop, self.handle, wait=POLL_WAIT, retry_delay=RETRY_DELAY,
                                   on_lost=lost, on_retry=retry)

    async def flush(self) -> None:
        """POST everything kept until a 202 confirms it (a retry repeats nothing)."""
        async with self.flushing:
            while self.kept:
                batch = list(itertools.islice(self.kept, int(self.pace.size)))
                await self.pace.take(len(batch))  # every message of a batch counts against the rate
                first_try = all(out.sent_at == 0 for out in batch)
                now = time.monotonic()
                for out in batch:
                    out.sent_at = now
                if not first_try:
                    self.resends += len(batch)
                try:
                    status, answer = await self.conn.post_text("[" + ",".join(out.text for out in batch) + "]")
                    if status == 202:
                        self.confirm(answer["received"])
                        if self.kept and self.kept[0].cseq <= batch[-1].cseq:
                            await asyncio.sleep(RESYNC_DELAY)  # some were refused (rate): after a moment
                        continue
                    self.errors[f"http-{status}"] += 1
                except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                    self.errors["http-failed"] += 1
                self.retries += 1
                await asyncio.sleep(RETRY_DELAY)

    async def tick(self) -> None:
        self.next_message(time.monotonic())
        await self.flush()

    async def confirm_all(self) -> None:
        await self.flush()

    async def close(self) -> None:
        self.stop.set()
        if self.poller is not None:
            self.poller.cancel()
            await asyncio.gather(self.poller, return_exceptions=True)
        if self.conn is None:
            return
        try:
            await self.conn.close()
        except (aiohttp.ClientError, OSError):
            pass


class Load:
    """``peers`` peers in rooms of ``room_size`` talking through ``base`` (https://NAME:PORT)."""

    def __init__(self, base: str, cafile: str | None = None, peers: int = 1000, polling_share: float = 0.1,
                 room_size: int = 10, interval: float = 1.0) -> None:
        assert room_size >= 2 and peers >= room_size
        self.base = base.rstrip("/")
        self.interval = interval
        self._ssl = ssl.create_default_context(cafile=cafile) if base.startswith("https") else None
        self.by_id: dict[str, Peer] = {}
        self.peers: list[Peer] = []
        run = f"load{random.getrandbits(32):08x}"  # room names of their own: a rerun meets no leftovers
        rooms = [[WsPeer(self, f"{run}-{r}-host", f"{run}-{r}", "host")] for r in range(peers // room_size)]
        seats = [(r, i) for i in range(1, room_size) for r in range(len(rooms))]  # participants, spread over rooms
        polling = {seats[int(k * len(seats) / n)] for n in [round(len(rooms) * room_size * polling_share)] if n
                   for k in range(n)}
        for r, i in sorted(seats, key=lambda s: (s[0], s[1])):
            kind = PollingPeer if (r, i) in polling else WsPeer
            rooms[r].append(kind(self, f"{run}-{r}-{i}", f"{run}-{r}", "participant"))
        for host, *participants in rooms:
            host.targets = participants
            for m in participants:
                m.targets = [host]
            self.peers += [host, *participants]
        self._talking = False
        self._tasks: list[asyncio.Task] = []
        self.started = self.stopped = 0.0

    async def __aenter__(self) -> Load:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=POLL_WAIT + 30))
        gate = asyncio.Semaphore(CONNECT_AT_ONCE)

        async def connect(peer: Peer) -> None:
            async with gate:
                await peer.connect()

        try:
            hosts = [p for p in self.peers if p.role == "host"]
            await asyncio.gather(*(connect(p) for p in hosts))       # hosts first: rooms exist
            await asyncio.gather(*(connect(p) for p in self.peers if p.role != "host"))
        except BaseException:
            await self.__aexit__()
            raise
        self._talking = True
        self.started = time.monotonic()
        self._tasks = [asyncio.create_task(self._talk(p)) for p in self.peers]
        return self

    async def _talk(self, peer: Peer) -> None:
        await asyncio.sleep(random.uniform(0, self.interval))  # spread the ticks
        while self._talking:
            await peer.tick()
            await asyncio.sleep(self.interval)

    async def flowing(self, messages: int = 2, timeout: float = 120) -> None:
        """Wait until every stream delivered at least ``messages`` messages."""
        deadline = time.monotonic() + timeout
        while any(len(p.arrivals[s.name]) < messages for s in self.peers for p in s.targets):
            assert time.monotonic() < deadline, f"the load is not flowing: {self.report()}"
            await asyncio.sleep(0.5)

    async def settle(self, timeout: float = 60) -> None:
        """Stop sending; wait until every message kept was confirmed and every stream is complete."""
        self._talking = False
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.stopped = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(p.kept for p in self.peers) and not self._missing():
                return
            await asyncio.gather(*(p.confirm_all() for p in self.peers if p.kept), return_exceptions=True)
            await asyncio.sleep(1.0)

    async def __aexit__(self, *exc) -> None:
        self._talking = False
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self.peers), return_exceptions=True)
        await self.http.close()
        await asyncio.sleep(0.25)  # let the connections' transports close before the loop does

    # -- judging ---------------------------------------------------------------------

    def streams(self):
        """(sender, receiver, numbers sent, numbers arrived in order of arrival) for every pair."""
        for sender in self.peers:
            for receiver in sender.targets:
                yield sender, receiver, sender.sent[receiver.name], [n for n, _ in receiver.arrivals[sender.name]]

    def _missing(self) -> int:
        return sum(len(set(range(1, sent + 1)) - set(got)) for _, _, sent, got in self.streams())

    def report(self) -> dict:
        sent = delivered = lost = duplicated = reordered = 0
        for _, _, n_sent, got in self.streams():
            sent += n_sent
            delivered += len(set(got))
            lost += len(set(range(1, n_sent + 1)) - set(got))
            duplicated += len(got) - len(set(got))
            reordered += sum(1 for a, b in itertools.pairwise(got) if b <= a)
        latencies = [lat for p in self.peers for arr in p.arrivals.values() for _, lat in arr]
        errors: collections.Counter = collections.Counter()
        for p in self.peers:
            errors.update(p.errors)
        outages = [o for p in self.peers for o in p.outages]
        return {
            "peers": len(self.peers),
            "polling_peers": sum(isinstance(p, PollingPeer) for p in self.peers),
            "rooms": len({p.room for p in self.peers}),
            "seconds": round((self.stopped or time.monotonic()) - self.started, 1),
            "sent": sent,
            "delivered": delivered,
            "lost": lost,
            "duplicated": duplicated,
            "out_of_order": reordered,
            "resumes": sum(len(p.welcomes) - 1 for p in self.peers),
            "resends": sum(p.resends for p in self.peers),
            "longest_outage_s": round(max(outages, default=0.0), 3),
            "longest_unable_to_send_s": round(max(latencies, default=0.0), 3),
            "p50_delivery_ms": round(_percentile(latencies, 50) * 1000, 1),
            "p99_delivery_ms": round(_percentile(latencies, 99) * 1000, 1),
            "not_back_in_room": len(self._strays()),
            "errors": dict(errors),
        }

    def _strays(self) -> list[str]:
        """Peers whose last welcome was not a resume into their own id, room and role."""
        out = []
        for p in self.peers:
            for w in p.welcomes[1:]:
                if w.get("type") != "welcome" or (w.get("id"), w.get("room"), w.get("role")) != (p.id, p.room, p.role):
                    out.append(f"{p.name}: resumed into {w}")
                    break
                if w.get("lost"):
                    out.append(f"{p.name}: resume reported {w['lost']} lost")
                    break
        return out

    def problems(self) -> list[str]:
        """Every violation: loss, duplicates, reordering, seq anomalies, strays, unexpected errors."""
        out = []
        for sender, receiver, sent, got in self.streams():
            missing = sorted(set(range(1, sent + 1)) - set(got))
            if missing:
                out.append(f"{sender.name} -> {receiver.name}: lost {len(missing)} of {sent}: {missing[:10]}")
            dups = len(got) - len(set(got))
            if dups:
                out.append(f"{sender.name} -> {receiver.name}: {dups} duplicated")
            if any(b <= a for a, b in itertools.pairwise(got)):
                out.append(f"{sender.name} -> {receiver.name}: out of order: {got[:20]}")
        for p in self.peers:
            out += p.seq_anomalies[:5]
            unexpected = {code: n for code, n in p.errors.items()
                          if code not in RETRIED_CODES and not code.startswith("http-")}
            if unexpected:
                out.append(f"{p.name}: errors {unexpected}")
            if p.kept:
                out.append(f"{p.name}: {len(p.kept)} messages never confirmed")
        return out + self._strays()


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


async def _main(args: argparse.Namespace) -> int:
    async with Load(args.url, args.ca, args.peers, args.polling_share, args.room_size, args.interval) as load:
        await load.flowing()
        await asyncio.sleep(args.duration)
        await load.settle()
    print(json.dumps(load.report(), indent=2))
    problems = load.problems()
    problems.sort(key=lambda line: " lost " in line)  # the rarer kinds first
    for line in problems[:50]:
        print("PROBLEM", line)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="https://NAME:PORT of the deployment")
    parser.add_argument("--ca", help="CA file to trust")
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--polling-share", type=float, default=0.1)
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a peer's messages")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load")
    raise SystemExit(asyncio.run(_main(parser.parse_args())))
