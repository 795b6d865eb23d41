"""Live signaling peers: one room that keeps talking while the service changes.

``Room`` puts a host and several participants of one private room on the
deployed service, through the proxy: WebSocket peers and one long-polling
peer. Every ``TICK`` seconds each peer sends one numbered ``candidate`` to
everyone it may signal (the host to each participant, each participant to the
host); every receiver records each arrival, per sender. ``Room.streams()``
then tells what was sent and what arrived, for the tests to judge.

The peers do what docs/protocol.md asks of a careful client, nothing more:

* WebSocket: after any close that is not their own 1000 (1001 while an
  instance drains, a dropped connection), they reconnect with
  ``/ws?resume=TOKEN&ack=SEQ`` (SEQ: the highest ``seq`` processed) and record
  the ``welcome``: id, room, role and ``lost``. The server then replays what
  followed SEQ.
* They send reliably, as docs/protocol.md's "Reliable sending" says: each
  message carries the next ``cseq`` and is kept until a ``pong``'s
  ``received`` covers it (a ``ping`` follows each tick's messages). After a
  resume, and after an error that says a message was not handled
  (``unavailable`` while Redis restarts, then ``out-of-order`` for those that
  followed it), the peer pings and, once the pong came, sends every kept
  message again, in order, recording each such resend. Those errors are
  recorded apart (``retried_errors``): the protocol's answer, not a failure.
* Polling: ``202`` proves a batch was taken; a failed POST is sent again (and
  recorded as a resend). ``GET .../messages`` carries ``ack``, so an answer
  lost on the way is fetched again.

Every server message after ``welcome`` carries ``seq``; each peer records any
``seq`` that is not the previous one plus one (a message the server lost or
delivered twice), every ``error`` the server sent, and each outage (from the
close to the resumed ``welcome``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp

from signaling import client

TICK = 0.4  # seconds between a peer's messages: the polling peer stays under the proxy's 10 API requests/s
RESUME_ATTEMPTS = 300  # about 30 s of retries while the proxy finds a live instance
POLL_WAIT = 5  # seconds a long poll hangs; short, so stopping is quick
RETRY_DELAY = 0.5  # before a failed HTTP request goes again (the proxy rate-limits /api/)
RESYNC_DELAY = 0.2  # after an error that says a message was not handled, before the resync ping
RETRIED_CODES = {"unavailable", "out-of-order", "rate-limited"}  # errors that mean: not handled, resend


@dataclass
class Arrival:
    """One relayed message as a receiver saw it."""

    n: int
    at: float  # time.monotonic()


@dataclass
class Stream:
    """Everything one sender sent one receiver, and what arrived."""

    sender: str
    receiver: str
    sent: int  # messages numbered 1..sent
    resent: set[int]  # numbers the sender sent again (not yet received by the server when it resynced)
    arrivals: list[Arrival]

    @property
    def numbers(self) -> list[int]:
        return [a.n for a in self.arrivals]

    @property
    def duplicates(self) -> list[int]:
        seen: set[int] = set()
        dups = []
        for n in self.numbers:
            if n in seen:
                dups.append(n)
            seen.add(n)
        return dups

    @property
    def longest_gap(self) -> float:
        """Longest time between two consecutive arrivals, in seconds."""
        times = [a.at for a in self.arrivals]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


@dataclass
class Outage:
    """A WebSocket peer's time between losing its connection and its resumed welcome."""

    code: int | None  # close code the server sent, None for a dropped connection
    closed_at: float
    resumed_at: float | None = None

    @property
    def seconds(self) -> float:
        return (self.resumed_at or time.monotonic()) - self.closed_at


@dataclass
class Peer:
    """State and records common to both transports."""

    name: str
    role: str
    room: str
    transport: str = ""
    id: str = ""
    token: str = ""
    targets: dict[str, str] = field(default_factory=dict)  # name -> id of the peers it signals
    welcomes: list[dict] = field(default_factory=list)  # every welcome, the first and the resumed ones
    anomalies: list[str] = field(default_factory=list)
    server_errors: list[dict] = field(default_factory=list)
    retried_errors: list[dict] = field(default_factory=list)  # "not handled, send again" (RETRIED_CODES)
    outages: list[Outage] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    resent: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    received: dict[str, list[Arrival]] = field(default_factory=lambda: defaultdict(list))
    joined: asyncio.Event = field(default_factory=asyncio.Event)

    def _seq_gap(self, last: int, seq: int) -> None:
        """The connection's ``on_gap``: a message the server lost or delivered twice."""
        self.anomalies.append(f"{self.name}: seq {seq} after {last}")

    def _handle(self, msg: dict, names: dict[str, str]) -> None:
        """Record one server message (after welcome; its ``seq`` was checked by the connection)."""
        kind = msg.get("type")
        if kind == "joined":
            self.joined.set()
        elif kind == "candidate":
            data = msg["data"]
            if names.get(msg["from"]) != data["from"]:
                self.anomalies.append(f"{self.name}: message {data} came from id {msg['from']}")
            self.received[data["from"]].append(Arrival(data["n"], time.monotonic()))
        elif kind == "error":
            self.server_errors.append(msg)

    def next_frames(self) -> list[tuple[str, int, str]]:
        """This tick's messages: (target name, number, JSON text) for every target."""
        frames = []
        for target, target_id in self.targets.items():
            self.sent[target] += 1
            n = self.sent[target]
            text = json.dumps({"type": "candidate", "to": target_id, "data": {"from": self.name, "n": n}})
            frames.append((target, n, text))
        return frames


class WsPeer(Peer):
    """A WebSocket peer that resumes after every close but its own."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.transport = "websocket"
        self._conn: client.WsPeer | None = None
        self._barrier = 0
        self._resyncs = 0
        self._cseq = 0
        self._kept: list[tuple[int, str, int, str]] = []  # (cseq, target name, number, text) until received
        self._pongs: dict[int | str, asyncio.Future] = {}
        self._online = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._closing = False
        self._resyncing = False
        self._reader: asyncio.Task | None = None
        self._resumes: set[asyncio.Task] = set()  # referenced until done: the loop keeps weak ones

    @property
    def unconfirmed(self) -> int:
        return len(self._kept)

    async def connect(self, http: aiohttp.ClientSession, base: str, names: dict[str, str]) -> None:
        self._names = names
        conn = await client.WsPeer.connect(http, f"{base}/ws")
        conn.timeout, conn.on_gap = None, self._seq_gap  # reads wait as long as it takes; gaps recorded
        self.welcomes.append(conn.welcome)
        self.id, self.token = conn.id, conn.token
        names[self.id] = self.name
        self._attach(conn)
        await conn.send(type="join", room=self.room, role=self.role, name=self.name)
        await self.joined.wait()
        self._online.set()

    def _attach(self, conn: client.WsPeer) -> None:
        self._conn = conn
        self._reader = asyncio.create_task(self._read(conn), name=f"read-{self.name}")

    async def _read(self, conn: client.WsPeer) -> None:
        while True:
            try:
                obj = await conn.recv()
            except client.Closed as closed:
                code = closed.code  # the server's close code, None for a dropped connection
                break
            if obj.get("type") == "pong":
                self._confirm(obj)
            elif obj.get("type") == "error" and obj.get("code") in RETRIED_CODES:
                self.retried_errors.append(obj)
                self._resync_soon()
                continue
            self._handle(obj, self._names)
        if self._closing:
            return
        self.outages.append(Outage(code, time.monotonic()))
        self._online.clear()
        for waiter in self._pongs.values():  # a resume waiting on this socket gives up
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("connection lost"))
        self._pongs.clear()
        self._spawn(self._resume(), f"resume-{self.name}")

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._resumes.add(task)
        task.add_done_callback(self._resumes.discard)

    def _confirm(self, pong: dict) -> None:
        """A pong: forget what the server says it handled (its ``received``), then wake its waiter."""
        received = pong.get("received", 0)
        while self._kept and self._kept[0][0] <= received:
            self._kept.pop(0)
        waiter = self._pongs.pop(pong.get("ref"), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _ping(self, frames: list[tuple[str, int, str]]) -> None:
        """Send frames, each with the next ``cseq`` and kept until a pong's ``received`` covers it, then a ping."""
        for target, n, text in frames:
            self._cseq += 1
            text = f'{text[:-1]},"cseq":{self._cseq}}}'
            self._kept.append((self._cseq, target, n, text))
            await self._conn.send_text(text)
        self._barrier += 1
        await self._conn.send(type="ping", id=self._barrier)

    async def _resync(self) -> None:
        """docs/protocol.md, "Reliable sending": a ping; once its pong came (the server replayed what
        it had queued and said what it handled), every kept message above it again, in order."""
        self._resyncs += 1
        ref = f"resync-{self._resyncs}"
        waiter = self._pongs[ref] = asyncio.get_running_loop().create_future()
        await self._conn.send(type="ping", id=ref)
        await asyncio.wait_for(waiter, 10)
        again = list(self._kept)
        for _, target, n, text in again:
            self.resent[target].add(n)
            await self._conn.send_text(text)
        if again:
            self._barrier += 1
            await self._conn.send(type="ping", id=self._barrier)

    def _resync_soon(self) -> None:
        """After an error that says a message was not handled (Redis unreachable for a moment)."""
        if self._resyncing:
            return
        self._resyncing = True

        async def resync() -> None:
            await asyncio.sleep(RESYNC_DELAY)
            self._resyncing = False
            async with self._send_lock:
                try:
                    await self._resync()
                except (ConnectionError, aiohttp.ClientError, RuntimeError, TimeoutError):
                    pass  # the connection is going: its resume resyncs

        self._spawn(resync(), f"resync-{self.name}")

    async def _resume(self) -> None:
        for _ in range(RESUME_ATTEMPTS):
            try:
                conn = await self._conn.resume()
            except client.Refused as refused:
                if not isinstance(refused.message, dict):  # closed before its welcome
                    await asyncio.sleep(0.1)
                    continue
                if refused.message.get("code") in RETRIED_CODES:  # Redis unreachable: 1013, try again
                    self.retried_errors.append(refused.message)
                    await asyncio.sleep(0.1)
                    continue
                self.welcomes.append(refused.message)  # refused: the checks report it
                return
            except (aiohttp.ClientError, OSError, ValueError):
                await asyncio.sleep(0.1)
                continue
            self.welcomes.append(conn.welcome)
            self.outages[-1].resumed_at = time.monotonic()
            self._attach(conn)
            async with self._send_lock:
                try:
                    await self._resync()
                except (ConnectionError, aiohttp.ClientError, RuntimeError):
                    return  # this socket closed too; the resume its reader started takes over
                except TimeoutError:
                    self.anomalies.append(f"{self.name}: no pong after the replay within 10 s")
                    return
            self._online.set()
            return
        self.anomalies.append(f"{self.name}: could not resume in {RESUME_ATTEMPTS} attempts")

    async def tick(self) -> None:
        await self._online.wait()
        async with self._send_lock:
            frames = self.next_frames()
            try:
                await self._ping(frames)
            except (aiohttp.ClientError, ConnectionError, RuntimeError):
                pass  # the connection is going; the frames stay unconfirmed and go again after the resume

    async def close(self) -> None:
        self._closing = True
        if self._conn is not None:
            await self._conn.close(code=1000)
        if self._reader is not None:
            await self._reader


class PollingPeer(Peer):
    """A long-polling peer (transport B)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.transport = "polling"
        self._conn: client.PollingPeer | None = None
        self._unsent: list[tuple[str, int, str]] = []
        self._stop = asyncio.Event()
        self.retries = 0  # failed requests sent again

    @property
    def unconfirmed(self) -> int:
        return len(self._unsent)

    async def connect(self, http: aiohttp.ClientSession, base: str, names: dict[str, str]) -> None:
        self._names = names
        self._conn = await client.PollingPeer.create(http, base)
        self._conn.on_gap = self._seq_gap
        self.welcomes.append(self._conn.welcome)
        self.id, self.token = self._conn.id, self._conn.token
        names[self.id] = self.name
        self._poller = asyncio.create_task(self._poll(), name=f"poll-{self.name}")
        join = {"type": "join", "room": self.room, "role": self.role, "name": self.name}
        self._unsent.append(("", 0, json.dumps(join)))
        await self._flush()
        await self.joined.wait()

    async def _poll(self) -> None:
        def lost(n: int) -> None:
            self.anomalies.append(f"{self.name}: Signaling-Lost {n}")

        def retry(_exc: BaseException) -> None:
            self.retries += 1

        await self._conn.poll_until(self._stop, lambda msg: self._handle(msg, self._names), wait=POLL_WAIT,
                                    retry_delay=RETRY_DELAY, on_lost=lost, on_retry=retry)

    async def _flush(self) -> None:
        """POST everything not yet taken, until a 202 says it was."""
        while self._unsent:
            try:
                status, _ = await self._conn.post_text("[" + ",".join(text for _, _, text in self._unsent) + "]")
                if status == 202:
                    self._unsent.clear()
                    return
            except (aiohttp.ClientError, OSError):
                pass
            self.retries += 1
            for target, n, _ in self._unsent:
                if target:
                    self.resent[target].add(n)
            await asyncio.sleep(RETRY_DELAY)

    async def tick(self) -> None:
        self._unsent.extend(self.next_frames())
        await self._flush()

    async def close(self) -> None:
        self._stop.set()
        await self._poller
        await self._conn.close()


class Room:
    """A host and participants of one room, talking through ``base`` (https://NAME:PORT)."""

    def __init__(self, base: str, cafile: str, participants_ws: int = 2, participants_polling: int = 1,
                 room: str = "upgrade") -> None:
        self.base = base
        self._ssl = ssl.create_default_context(cafile=cafile)
        self.host = WsPeer("host", "host", room)
        self.participants: list[Peer] = [WsPeer(f"ws-{i}", "participant", room) for i in range(participants_ws)]
        self.participants += [PollingPeer(f"poll-{i}", "participant", room) for i in range(participants_polling)]
        self.peers: list[Peer] = [self.host, *self.participants]
        self._names: dict[str, str] = {}  # session id -> peer name
        self._talking = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Room:
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                                           timeout=aiohttp.ClientTimeout(total=POLL_WAIT + 30))
        await self.host.connect(self._http, self.base, self._names)
        for peer in self.participants:
            await peer.connect(self._http, self.base, self._names)
            peer.targets = {self.host.name: self.host.id}
            self.host.targets[peer.name] = peer.id
        self._talking.set()
        self._tasks = [asyncio.create_task(self._talk(peer), name=f"talk-{peer.name}") for peer in self.peers]
        return self

    async def _talk(self, peer: Peer) -> None:
        while self._talking.is_set():
            await peer.tick()
            await asyncio.sleep(TICK)

    async def flowing(self, messages: int = 5, timeout: float = 30) -> None:
        """Wait until every stream delivered ``messages`` messages."""
        deadline = time.monotonic() + timeout
        while any(len(s.arrivals) < messages for s in self.streams()):
            assert time.monotonic() < deadline, f"the room is not talking: {self.summary()}"
            await asyncio.sleep(0.1)

    async def settle(self, timeout: float = 30) -> None:
        """Stop sending; wait until everything sent is confirmed and has arrived."""
        self._talking.clear()
        await asyncio.gather(*self._tasks)
        deadline = time.monotonic() + timeout
        while any(p.unconfirmed for p in self.peers) or any(
            max(s.numbers, default=0) < s.sent for s in self.streams()
        ):
            if time.monotonic() > deadline:
                return  # the checks report what is missing
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc) -> None:
        self._talking.clear()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self.peers), return_exceptions=True)
        await self._http.close()

    def streams(self) -> list[Stream]:
        """One stream per (sender, receiver) pair: host -> each participant and back."""
        return [
            Stream(sender.name, receiver.name, sender.sent[receiver.name], set(sender.resent[receiver.name]),
                   list(receiver.received[sender.name]))
            for sender in self.peers
            for receiver in self.peers
            if receiver.name in sender.targets
        ]

    def summary(self) -> dict:
        """Figures for the report: totals, resumes, resends, the longest outage and gap."""
        streams = self.streams()
        outages = [o.seconds for p in self.peers for o in p.outages]
        return {
            "sent": sum(s.sent for s in streams),
            "received": sum(len(s.arrivals) for s in streams),
            "resumes": sum(len(p.welcomes) - 1 for p in self.peers),
            "resent": sum(len(s.resent) for s in streams),
            "retried_errors": sum(len(p.retried_errors) for p in self.peers),
            "duplicates": sum(len(s.duplicates) for s in streams),
            "polling_retries": sum(getattr(p, "retries", 0) for p in self.peers),
            "longest_outage_s": round(max(outages, default=0.0), 3),
            "longest_gap_s": round(max((s.longest_gap for s in streams), default=0.0), 3),
        }
