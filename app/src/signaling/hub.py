"""The hub: every session and room of one instance, and the routing rules.

Transports (``ws.py``, ``polling.py``) turn frames and requests into calls on
the hub; the hub decides who may talk to whom and pushes messages into the
target sessions' mailboxes. ``BaseHub`` holds what every hub does, for one
type of session; ``Hub`` is the in-memory hub, the embedded default, and
``cluster.py``'s ``RedisHub`` shares sessions and rooms over Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import protocol as p
from .config import Settings
from .metrics import Metrics
from .rooms import Room, may_signal, peer_info
from .session import Session, prefix_of

if TYPE_CHECKING:
    from .wsconn import Socket

log = logging.getLogger("signaling.hub")

# Prefixes of relayed messages, built once: b'{"type":"offer","from":"'.
_RELAY_HEAD = {kind: b'{"type":"%s","from":"' % kind.encode() for kind in p.RELAYED}
STOP_WAIT = 2.0  # seconds stop() gives background work to finish, and again once cancelled

S = TypeVar("S", bound=Session)  # the type of session a hub makes (``open``) and holds


class BaseHub(Generic[S]):
    """A hub for sessions of type ``S``; ``open``, which makes them, is the subclass's."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sessions: dict[str, S] = {}
        self.by_token: dict[str, S] = {}
        self.rooms: dict[str, Room[Session]] = {}
        self.draining = False
        self._stopping = False
        self._sweeper: asyncio.Task[None] | None = None
        # Tasks started for one piece of work (ws.py's message handling, the Redis hub's
        # catch-ups), held until done: the event loop keeps only weak references, and a
        # task nothing refers to may be collected mid-way (asyncio's documentation).
        self.background: set[asyncio.Task[Any]] = set()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="signaling-sweeper")

    async def stop(self) -> None:
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
        # Let the last pieces of work finish (detaching closed peers, in cluster mode while
        # Redis is still there), then cancel what is left.
        if self.background:
            await asyncio.wait(self.background, timeout=STOP_WAIT)
        for task in list(self.background):
            task.cancel()
        if self.background:
            await asyncio.wait(self.background, timeout=STOP_WAIT)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in a task held in ``background`` until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    @property
    def ready(self) -> bool:
        return not self.draining

    @property
    def inline(self) -> bool:
        """True when ``receive`` never waits on I/O, so a transport may step it
        by hand instead of running it in a task (ws.py). This hub writes to
        sockets without waiting; a subclass that talks to a backend is not
        inline unless it says so."""
        return type(self) is Hub

    # -- sessions ------------------------------------------------------------

    async def open(self, transport: str) -> S:
        """A new session for ``transport`` ("ws" or "poll")."""
        raise NotImplementedError

    async def find(self, token: str | None) -> S | None:
        """The live session a token belongs to, or None."""
        return self._find(token)

    def _find(self, token: str | None) -> S | None:
        if not token:
            return None
        sess = self.by_token.get(token)
        return None if sess is None or sess.closed else sess

    async def resume(self, token: str) -> S | None:
        """The session to continue after a dropped connection, or None.

        A socket the session still has (half-open, or simply older) is
        closed: the newest connection wins.
        """
        sess = self._find(token)
        if sess is not None and sess.ws is not None:
            old = sess.ws
            await self.detach(sess, old)
            await old.close(code=1008, message=b"resumed elsewhere")
        return sess

    async def lost_after(self, sess: Session, after: int) -> int:
        """Messages after ``after`` that no longer fit in the session's queue."""
        return sess.lost_after(after)

    async def attach(self, sess: S, ws: Socket, after: int) -> None:
        """Replay what ``sess`` missed after ``after`` to ``ws``, then deliver live."""
        await sess.attach(ws, after)

    async def detach(self, sess: S, ws: Socket) -> None:
        """The WebSocket ``ws`` of ``sess`` is gone; the resume window starts."""
        if sess.ws is ws:
            sess.detach(time.monotonic())

    async def deliver(self, sess: Session, prefix: bytes) -> None:
        """Push one message (a prefix, see session.py) into a session's mailbox."""
        await sess.push(prefix)

    async def poll(self, sess: Session, after: int, ack: int | None, wait: float) -> tuple[list[bytes], int]:
        """Frames after ``after`` for a long-poll, waiting up to ``wait`` seconds for one."""
        if ack is not None:
            sess.forget(ack)
        frames = sess.pending(after)
        if not frames and wait and not self.draining:
            waiter = sess.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(waiter, wait)
            except TimeoutError:
                pass
            finally:
                if sess.waiter is waiter:
                    sess.waiter = None
            superseded = waiter.done() and not waiter.cancelled() and waiter.result() is False
            frames = [] if superseded else sess.pending(after)
        if frames:
            sess.sent = max(sess.sent, sess.seq)
        return frames, sess.lost_after(after)

    async def close(self, sess: Session) -> None:
        """End a session for good: leave its room, forget it."""
        if sess.closed:
            return
        sess.closed = True
        if sess.room is not None:
            await self._leave(sess)
        self.sessions.pop(sess.id, None)
        self.by_token.pop(sess.token, None)
        if sess.waiter is not None and not sess.waiter.done():
            sess.waiter.set_result(False)

    # -- messages --------------------------------------------------------------

    async def error(self, sess: Session, code: str, message: str, ref: Any = None) -> None:
        self.metrics.errors[code] += 1
        await self.deliver(sess, prefix_of(p.error(code, message, ref)))

    # Message types whose handler checks the client sequence number itself, in
    # the same atomic step as its effect (the Redis hub). The others are
    # admitted by ``receive`` before they are handled.
    admits_itself: frozenset[str] = frozenset()

    def over_limit(self, sess: Session, now: float) -> int:
        """The rate limit, applied as a message arrives: 0 lets it through. Otherwise the
        message is dropped (counted as ``rate-limited``) and the answer is how many were dropped
        in a row; more than ``rate_limit_burst`` is a flood, which ends the connection."""
        s = self.settings
        if sess.allow(now, s.rate_limit, s.rate_limit_burst):
            return 0
        self.metrics.errors[p.RATE_LIMITED] += 1
        return sess.strikes

    async def refuse(self, sess: Session, strikes: int) -> bool:
        """Answer a message the rate limit dropped: the first and every tenth of a run get
        ``rate-limited`` (a flood is not answered message for message). False for a flood."""
        s = self.settings
        if strikes > s.rate_limit_burst:
            return False
        if strikes == 1 or strikes % 10 == 0:
            await self.deliver(sess, prefix_of(p.error(p.RATE_LIMITED, f"more than {s.rate_limit:g} messages/s")))
        return True

    async def receive(self, sess: Session, msg: Any, now: float) -> bool:
        """The rate limit, then ``handle``. False means: close it (a flood)."""
        if strikes := self.over_limit(sess, now):
            return await self.refuse(sess, strikes)
        await self.handle(sess, msg, now)
        return True

    async def handle(self, sess: Session, msg: Any, now: float) -> None:
        """Handle one decoded message from ``sess`` that the rate limit let through."""
        try:
            cseq = p.cseq_of(msg)
            try:
                msg = p.validate(msg)
            except p.ProtocolError:  # a refused message counts as handled too
                if cseq is not None and not await self.admitted(sess, await self.admit(sess, cseq)):
                    return
                raise
            kind = msg["type"]
            if cseq is not None and kind not in self.admits_itself:
                if not await self.admitted(sess, await self.admit(sess, cseq), msg.get("id")):
                    return
            if kind in p.RELAYED:
                await self.relay(sess, kind, msg, now)
            elif kind == "ping":
                await self.pong(sess, msg)
            elif kind == "join":
                await self.join(sess, msg)
            elif kind == "leave":
                await self.leave(sess, msg)
            elif kind == "list":
                await self.list_peers(sess, msg)
            else:  # ack
                await self.ack(sess, msg["seq"])
        except p.ProtocolError as exc:
            await self.error(sess, exc.code, exc.message, exc.ref)

    async def admit(self, sess: Session, cseq: int) -> int:
        """Count ``cseq`` handled if it is the next one expected (p.HANDLE), or say
        why not (p.REPEAT, p.GAP)."""
        return sess.admit(cseq)

    async def admitted(self, sess: Session, verdict: int, ref: Any = None) -> bool:
        """True to go on with a message; else answer as docs/protocol.md says:
        nothing for a repeat, ``out-of-order`` once per gap."""
        if verdict == p.HANDLE:
            return True
        if verdict == p.GAP and not sess.gap_noted:
            sess.gap_noted = True
            await self.error(sess, p.OUT_OF_ORDER,
                             "'cseq' skips ahead; send a ping and resend what follows the pong's 'received'", ref)
        return False

    async def pong(self, sess: Session, msg: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "pong", "received": sess.received}
        if "id" in msg:
            reply["ref"] = msg["id"]
        await self.deliver(sess, prefix_of(reply))

    async def ack(self, sess: Session, seq: int) -> None:
        """The client has everything up to ``seq``: forget it."""
        sess.forget(seq)

    async def relay(self, sess: Session, kind: str, msg: dict[str, Any], now: float) -> None:
        target = self.sessions.get(msg["to"])
        if target is None:
            raise p.ProtocolError(p.UNKNOWN_PEER, "no peer with that id", msg.get("id"))
        if not may_signal(sess, target, self.settings.public_mode):
            raise p.ProtocolError(p.FORBIDDEN, "you may not signal that peer", msg.get("id"))
        await self.deliver(
            target, b"%s%s\",\"data\":%s,\"seq\":" % (_RELAY_HEAD[kind], sess.id.encode(), p.encode_data(msg)))
        self.metrics.relayed[kind] += 1
        self.metrics.observe_latency(time.monotonic() - now)

    async def join(self, sess: Session, msg: dict[str, Any]) -> None:
        s = self.settings
        ref = msg.get("id")
        if not s.private_mode:
            raise p.ProtocolError(p.FORBIDDEN, "rooms are switched off on this server", ref)
        if sess.room is not None:
            raise p.ProtocolError(p.BAD_MESSAGE, f"already in room {sess.room.name!r}; leave first", ref)
        name, role = msg["room"], msg["role"]
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, msg.get("secret"))
        else:
            room.check_join(role, msg.get("secret"), s.room_max_peers, ref)
        room.add(sess, role, msg.get("name", ""))
        visible = room.visible_to(sess)
        reply: dict[str, Any] = {"type": "joined", "room": name, "role": role, "peers": [peer_info(m) for m in visible]}
        if ref is not None:
            reply["ref"] = ref
        await self.deliver(sess, prefix_of(reply))
        note = prefix_of({"type": "peer-joined", "room": name, "peer": peer_info(sess)})
        for other in visible:
            await self.deliver(other, note)

    async def leave(self, sess: Session, msg: dict[str, Any]) -> None:
        room = sess.room
        if room is None:
            raise p.ProtocolError(p.BAD_MESSAGE, "not in a room", msg.get("id"))
        await self._leave(sess)
        reply: dict[str, Any] = {"type": "left", "room": room.name}
        if "id" in msg:
            reply["ref"] = msg["id"]
        await self.deliver(sess, prefix_of(reply))

    async def _leave(self, sess: Session) -> None:
        room = sess.room
        assert isinstance(room, Room)  # what join() made it; the Redis hub has its own leave
        visible = room.visible_to(sess)
        room.remove(sess)
        if not room.members:
            self.rooms.pop(room.name, None)
        note = prefix_of({"type": "peer-left", "room": room.name, "id": sess.id})
        for other in visible:
            await self.deliver(other, note)

    async def list_peers(self, sess: Session, msg: dict[str, Any]) -> None:
        s = self.settings
        if not (s.discovery and s.public_mode) or sess.room is not None:
            raise p.ProtocolError(p.FORBIDDEN, "peer discovery is switched off", msg.get("id"))
        peers = await self.public_peers(sess)
        reply: dict[str, Any] = {"type": "peers", "peers": peers}
        if "id" in msg:
            reply["ref"] = msg["id"]
        await self.deliver(sess, prefix_of(reply))

    async def public_peers(self, sess: Session) -> list[str]:
        """Ids of the peers in no room, but ``sess``."""
        return [other.id for other in self.sessions.values() if other.room is None and other is not sess]

    # -- liveness ------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        tick = max(0.2, min(5.0, self.settings.heartbeat / 6))
        while not self._stopping:  # a flag too: a library may swallow one cancellation
            await asyncio.sleep(tick)
            try:
                await self.sweep(time.monotonic())
            except Exception:  # keep sweeping whatever one session did
                log.exception("sweep failed")

    async def sweep(self, now: float) -> None:
        """Ping WebSockets, drop idle ones, expire detached and polling sessions."""
        s = self.settings
        for sess in list(self.sessions.values()):
            ws = sess.ws
            if ws is not None:
                if now - sess.last_rx >= s.idle_timeout:
                    log.info("dropping idle peer", extra={"peer": sess.id})
                    await self.detach(sess, ws)
                    await ws.close(code=4408, message=b"idle timeout")
                elif now - sess.last_ping >= s.heartbeat:
                    sess.last_ping = now
                    try:
                        await ws.ping()
                    except Exception:  # noqa: BLE001 - the read loop sees the broken connection
                        pass
            elif sess.polling == 0 and sess.detached_at is not None:
                window = s.resume_window if sess.transport == "ws" else s.poll_timeout
                if now - sess.detached_at >= window:
                    await self.close(sess)

    async def drain(self) -> None:
        """Going away: refuse new work, send WebSocket peers elsewhere (1001)."""
        self.draining = True
        for sess in list(self.sessions.values()):
            if sess.ws is not None:
                ws = sess.ws
                await self.detach(sess, ws)
                await ws.close(code=1001, message=b"server going away")
            if sess.waiter is not None and not sess.waiter.done():
                sess.waiter.set_result(False)

    def gauges(self) -> dict[str, tuple[str, dict[str, float] | float]]:
        conns: dict[str, float] = {"websocket": 0, "polling": 0}
        detached = 0
        for sess in self.sessions.values():
            if sess.ws is not None:
                conns["websocket"] += 1
            elif sess.polling:
                conns["polling"] += 1
            elif sess.transport == "ws":
                detached += 1
        return {
            "signaling_connections": ("Open connections by transport.", conns),
            "signaling_sessions": ("Live sessions on this instance.", len(self.sessions)),
            "signaling_sessions_detached": ("Sessions waiting for a resume.", detached),
            "signaling_rooms": ("Rooms with at least one member.", len(self.rooms)),
            "signaling_draining": ("1 while the instance drains.", int(self.draining)),
        }


class Hub(BaseHub[Session]):
    """The in-memory hub: sessions and rooms live in this process."""

    async def open(self, transport: str) -> Session:
        s = self.settings
        sess = Session(transport, s.resume_queue, time.monotonic(), s.rate_limit_burst)
        self.sessions[sess.id] = sess
        self.by_token[sess.token] = sess
        self.metrics.sessions_opened[transport] += 1
        return sess
