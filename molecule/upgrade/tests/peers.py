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
* A frame that reaches an instance after it started closing the socket is
  never read (the close handshake discards data frames). So after each tick's
  messages a peer sends ``ping`` with an id: the ``pong`` echoing it is queued
  like any message (so it is replayed after a resume) and proves the server
  took everything before that ping. After a resume, once the replay is through
  (the pong of a fresh ping), the peer sends again, in order, what no pong
  covered, and records each such resend.
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

TICK = 0.4  # seconds between a peer's messages: the polling peer stays under the proxy's 10 API requests/s
RESUME_ATTEMPTS = 300  # about 30 s of retries while the proxy finds a live instance
POLL_WAIT = 5  # seconds a long poll hangs; short, so stopping is quick
RETRY_DELAY = 0.5  # before a failed HTTP request goes again (the proxy rate-limits /api/)


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
    resent: set[int]  # numbers the sender sent again (unconfirmed when the connection broke)
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
    last_seq: int = 0
    welcomes: list[dict] = field(default_factory=list)  # every welcome, the first and the resumed ones
    anomalies: list[str] = field(default_factory=list)
    server_errors: list[dict] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    resent: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    received: dict[str, list[Arrival]] = field(default_factory=lambda: defaultdict(list))
    joined: asyncio.Event = field(default_factory=asyncio.Event)

    def _handle(self, msg: dict, names: dict[str, str]) -> None:
        """Record one server message (after welcome)."""
        seq = msg.get("seq")
        if seq is not None:
            if seq != self.last_seq + 1:
                self.anomalies.append(f"{self.name}: seq {seq} after {self.last_seq}")
            self.last_seq = max(self.last_seq, seq)
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
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._barrier = 0
        self._resyncs = 0
        self._unconfirmed: list[tuple[int, list[tuple[str, int, str]]]] = []  # (ping id, frames before it)
        self._pongs: dict[int, asyncio.Future] = {}
        self._online = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._closing = False
        self._reader: asyncio.Task | None = None
        self._resumes: set[asyncio.Task] = set()  # referenced until done: the loop keeps weak ones

    @property
    def unconfirmed(self) -> int:
        return sum(len(frames) for _, frames in self._unconfirmed)

    async def connect(self, http: aiohttp.ClientSession, base: str, names: dict[str, str]) -> None:
        self._http, self._base, self._names = http, base, names
        ws = await http.ws_connect(f"{base}/ws")
        welcome = await ws.receive_json()
        assert welcome["type"] == "welcome", welcome
        self.welcomes.append(welcome)
        self.id, self.token = welcome["id"], welcome["token"]
        names[self.id] = self.name
        self._attach(ws)
        await ws.send_json({"type": "join", "room": self.room, "role": self.role, "name": self.name})
        await self.joined.wait()
        self._online.set()

    def _attach(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._reader = asyncio.create_task(self._read(ws), name=f"read-{self.name}")

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                obj = json.loads(msg.data)
                if obj.get("type") == "pong" and "ref" in obj:
                    self._confirm(obj["ref"])
                self._handle(obj, self._names)
                continue
            if self._closing:
                return
            code = msg.data if msg.type is aiohttp.WSMsgType.CLOSE else None
            self.outages.append(Outage(code, time.monotonic()))
            self._online.clear()
            for waiter in self._pongs.values():  # a resume waiting on this socket gives up
                if not waiter.done():
                    waiter.set_exception(ConnectionResetError("connection lost"))
            self._pongs.clear()
            resume = asyncio.create_task(self._resume(), name=f"resume-{self.name}")
            self._resumes.add(resume)
            resume.add_done_callback(self._resumes.discard)
            return

    def _confirm(self, ref: int | str) -> None:
        if isinstance(ref, int):  # a tick's ping: the server took everything sent before it
            while self._unconfirmed and self._unconfirmed[0][0] <= ref:
                self._unconfirmed.pop(0)
        waiter = self._pongs.pop(ref, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _ping(self, frames: list[tuple[str, int, str]]) -> None:
        """Send frames then a ping; the pong, when it comes, confirms them."""
        self._barrier += 1
        self._unconfirmed.append((self._barrier, frames))
        for _, _, text in frames:
            await self._ws.send_str(text)
        await self._ws.send_json({"type": "ping", "id": self._barrier})

    async def _replayed(self) -> None:
        """Return once the server has replayed everything queued before now.

        The ping's id is a string: its pong ends the replay but confirms nothing
        sent on the old connection (frames the old instance never read came
        before it in our numbering, not on this connection).
        """
        self._resyncs += 1
        ref = f"resync-{self._resyncs}"
        waiter = self._pongs[ref] = asyncio.get_running_loop().create_future()
        await self._ws.send_json({"type": "ping", "id": ref})
        await asyncio.wait_for(waiter, 10)

    async def _resume(self) -> None:
        for _ in range(RESUME_ATTEMPTS):
            try:
                ws = await self._http.ws_connect(f"{self._base}/ws?resume={self.token}&ack={self.last_seq}")
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.1)
                continue
            try:
                welcome = await ws.receive_json()
            except (TypeError, ValueError, aiohttp.ClientError):  # closed before its welcome
                await asyncio.sleep(0.1)
                continue
            self.welcomes.append(welcome)
            if welcome.get("type") != "welcome":  # refused: the checks report it
                await ws.close()
                return
            self.outages[-1].resumed_at = time.monotonic()
            self._attach(ws)
            async with self._send_lock:
                try:
                    await self._replayed()
                    again = [frame for _, frames in self._unconfirmed for frame in frames]
                    for target, n, _ in again:
                        self.resent[target].add(n)
                    self._unconfirmed.clear()
                    if again:
                        await self._ping(again)
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
        if self._ws is not None:
            await self._ws.close(code=1000)
        if self._reader is not None:
            await self._reader


class PollingPeer(Peer):
    """A long-polling peer (transport B)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.transport = "polling"
        self._unsent: list[tuple[str, int, str]] = []
        self._stop = asyncio.Event()
        self.retries = 0  # failed requests sent again

    @property
    def unconfirmed(self) -> int:
        return len(self._unsent)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def connect(self, http: aiohttp.ClientSession, base: str, names: dict[str, str]) -> None:
        self._http, self._base, self._names = http, base, names
        async with http.post(f"{base}/api/sessions") as resp:
            assert resp.status == 201, await resp.text()
            welcome = await resp.json()
        self.welcomes.append(welcome)
        self.id, self.token = welcome["id"], welcome["token"]
        names[self.id] = self.name
        self._poller = asyncio.create_task(self._poll(), name=f"poll-{self.name}")
        join = {"type": "join", "room": self.room, "role": self.role, "name": self.name}
        self._unsent.append(("", 0, json.dumps(join)))
        await self._flush()
        await self.joined.wait()

    async def _poll(self) -> None:
        url = f"{self._base}/api/sessions/{self.id}/messages"
        while not self._stop.is_set():
            try:
                async with self._http.get(url, params={"wait": POLL_WAIT, "ack": self.last_seq},
                                          headers=self._auth()) as resp:
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                    if int(resp.headers.get("Signaling-Lost", 0)):
                        self.anomalies.append(f"{self.name}: Signaling-Lost {resp.headers['Signaling-Lost']}")
                    for msg in await resp.json():
                        self._handle(msg, self._names)
            except (aiohttp.ClientError, OSError):
                self.retries += 1
                await asyncio.sleep(RETRY_DELAY)

    async def _flush(self) -> None:
        """POST everything not yet taken, until a 202 says it was."""
        while self._unsent:
            batch = [json.loads(text) for _, _, text in self._unsent]
            try:
                async with self._http.post(f"{self._base}/api/sessions/{self.id}/messages",
                                           json=batch, headers=self._auth()) as resp:
                    if resp.status == 202:
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
        async with self._http.delete(f"{self._base}/api/sessions/{self.id}", headers=self._auth()):
            pass


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
            "duplicates": sum(len(s.duplicates) for s in streams),
            "polling_retries": sum(getattr(p, "retries", 0) for p in self.peers),
            "longest_outage_s": round(max(outages, default=0.0), 3),
            "longest_gap_s": round(max((s.longest_gap for s in streams), default=0.0), 3),
        }
