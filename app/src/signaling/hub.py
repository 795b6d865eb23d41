"""The hub: the dispatcher every transport talks to, over a backend.

Transports (``ws.py``, ``polling.py``) turn frames and requests into calls on
the ``Hub``. The hub does what is the same however sessions are kept: the
rate limit, validation, client sequence numbers and the answers to them,
metrics, liveness (pings, idle drops) and draining. What differs, where
sessions, rooms and mailboxes live, is its ``Backend``'s: ``memory.py``'s
``MemoryBackend`` keeps them in this process (the embedded default),
``cluster.py``'s ``RedisBackend`` shares them over Redis between instances.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from . import protocol as p
from .config import Settings
from .memory import MemoryBackend
from .metrics import Gauges, Metrics
from .session import SEND_ERRORS, TEXT, Session, prefix_of

if TYPE_CHECKING:
    from .wsconn import Socket

log = logging.getLogger("signaling.hub")

STOP_WAIT = 2.0  # seconds stop() gives background work to finish, and again once cancelled

S = TypeVar("S", bound=Session)  # the type of session a backend makes and a hub holds


class Backend(Protocol[S]):
    """Where sessions, rooms and mailboxes live: what the hub leaves to its backend.

    The operations that carry a client sequence number the backend checks itself
    (``admits_itself``: in the same atomic step as the effect) answer with its
    verdict, ``p.HANDLE``, ``p.REPEAT`` or ``p.GAP``, which the hub answers; the
    others are admitted by the hub first and answer ``p.HANDLE``. A refusal the
    protocol defines is raised as ``p.ProtocolError``.
    """

    inline: bool  # ``receive`` never waits on I/O (see ``Hub.inline``)
    admits_itself: frozenset[str]  # message types whose operation checks ``cseq`` itself
    unavailable: tuple[type[BaseException], ...]  # errors that mean: the backend is unreachable

    def bind(self, hub: Hub[S]) -> None:
        """Called once by the hub it serves, which holds the sessions of this instance."""

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop taking work from elsewhere; runs before the hub's background work ends."""

    async def close(self) -> None:
        """Let go of connections; runs after the hub's background work ended."""

    # sessions
    async def open(self, transport: str) -> S: ...
    async def find(self, token: str | None) -> S | None: ...
    async def resume(self, token: str) -> S | None: ...
    async def lost_after(self, sess: S, after: int) -> int: ...
    async def attach(self, sess: S, ws: Socket, after: int) -> None: ...
    async def detach(self, sess: S, ws: Socket) -> None: ...
    async def end(self, sess: S) -> None: ...
    async def poll(self, sess: S, after: int, ack: int | None, wait: float) -> tuple[list[bytes], int]: ...

    # messages
    async def deliver(self, sess: S, prefix: bytes) -> None: ...
    async def admit(self, sess: S, cseq: int) -> int: ...
    async def pong(self, sess: S, msg: dict[str, Any]) -> int: ...
    async def ack(self, sess: S, seq: int) -> None: ...
    async def relay(self, sess: S, kind: str, msg: dict[str, Any]) -> int: ...
    async def join(self, sess: S, msg: dict[str, Any]) -> int: ...
    async def leave(self, sess: S, msg: dict[str, Any]) -> int: ...
    async def public_peers(self, sess: S) -> list[str]: ...

    # liveness
    async def sweep(self, now: float) -> None:
        """The backend's part of the sweep, after the hub's (sockets of this instance)."""

    def rooms_here(self) -> int: ...
    def gauges(self) -> Gauges: ...


class Hub(Generic[S]):
    """The dispatcher: what every hub does, over a backend that keeps sessions of type ``S``.

    Without a backend it is the in-memory hub (``memory.MemoryBackend``).
    """

    def __init__(self, settings: Settings, metrics: Metrics, backend: Backend[S] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        # The sessions whose socket (or, in memory, whose everything) is on this instance.
        self.sessions: dict[str, S] = {}
        self.by_token: dict[str, S] = {}
        self.draining = False
        self._stopping = False
        self._sweeper: asyncio.Task[None] | None = None
        # Tasks started for one piece of work (ws.py's message handling, the Redis backend's
        # catch-ups), held until done: the event loop keeps only weak references, and a
        # task nothing refers to may be collected mid-way (asyncio's documentation).
        self.background: set[asyncio.Task[Any]] = set()
        if backend is None:
            backend = cast("Backend[S]", MemoryBackend())
        self.backend = backend
        backend.bind(self)
        # The backend's operations, bound once: the relay path pays no extra lookup.
        self._admit = backend.admit
        self._relay = backend.relay
        self._admits_itself = backend.admits_itself
        self._unavailable = backend.unavailable

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        await self.backend.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="signaling-sweeper")

    async def stop(self) -> None:
        await self.backend.stop()
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
        await self.backend.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in a task held in ``background`` until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    @property
    def ready(self) -> bool:
        return self.backend.ready and not self.draining

    @property
    def inline(self) -> bool:
        """True when ``receive`` never waits on I/O, so a transport may step it
        by hand instead of running it in a task (ws.py). The memory backend writes
        to sockets without waiting; one that talks to a server is not inline."""
        return self.backend.inline

    # -- sessions ------------------------------------------------------------

    async def open(self, transport: str) -> S:
        """A new session for ``transport`` ("ws" or "poll")."""
        sess = await self.backend.open(transport)
        self.metrics.sessions_opened[transport] += 1
        return sess

    async def find(self, token: str | None) -> S | None:
        """The live session a token belongs to, or None."""
        return await self.backend.find(token)

    async def resume(self, token: str) -> S | None:
        """The session to continue after a dropped connection, or None.

        A socket the session still has (half-open, or simply older) is
        closed: the newest connection wins.
        """
        return await self.backend.resume(token)

    async def lost_after(self, sess: S, after: int) -> int:
        """Messages after ``after`` that no longer fit in the session's mailbox."""
        return await self.backend.lost_after(sess, after)

    async def attach(self, sess: S, ws: Socket, after: int) -> None:
        """Replay what ``sess`` missed after ``after`` to ``ws``, then deliver live."""
        await self.backend.attach(sess, ws, after)

    async def detach(self, sess: S, ws: Socket) -> None:
        """The WebSocket ``ws`` of ``sess`` is gone; the resume window starts."""
        await self.backend.detach(sess, ws)

    async def deliver(self, sess: S, prefix: bytes) -> None:
        """Push one message (a prefix, see session.py) into a session's mailbox."""
        await self.backend.deliver(sess, prefix)

    async def poll(self, sess: S, after: int, ack: int | None, wait: float) -> tuple[list[bytes], int]:
        """Frames after ``after`` for a long-poll, waiting up to ``wait`` seconds for one,
        and how many after ``after`` were lost."""
        return await self.backend.poll(sess, after, ack, wait)

    async def close(self, sess: S) -> None:
        """End a session for good: leave its room, forget it."""
        if sess.closed:
            return
        sess.closed = True
        await self.backend.end(sess)

    # -- messages --------------------------------------------------------------

    async def error(self, sess: S, code: str, message: str, ref: Any = None) -> None:
        self.metrics.errors[code] += 1
        await self.backend.deliver(sess, prefix_of(p.error(code, message, ref)))

    def over_limit(self, sess: S, now: float) -> int:
        """The rate limit, applied as a message arrives: 0 lets it through. Otherwise the
        message is dropped (counted as ``rate-limited``) and the answer is how many were dropped
        in a row; more than ``rate_limit_burst`` is a flood, which ends the connection."""
        s = self.settings
        if sess.allow(now, s.rate_limit, s.rate_limit_burst):
            return 0
        self.metrics.errors[p.RATE_LIMITED] += 1
        return sess.strikes

    async def refuse(self, sess: S, strikes: int) -> bool:
        """Answer a message the rate limit dropped: the first and every tenth of a run get
        ``rate-limited`` (a flood is not answered message for message). False for a flood."""
        s = self.settings
        if strikes > s.rate_limit_burst:
            return False
        if strikes == 1 or strikes % 10 == 0:
            try:
                await self.backend.deliver(
                    sess, prefix_of(p.error(p.RATE_LIMITED, f"more than {s.rate_limit:g} messages/s")))
            except self._unavailable as exc:  # the answer is a courtesy; the message is dropped either way
                log.warning("backend error while refusing a message", extra={"peer": sess.id, "error": str(exc)})
        return True

    async def receive(self, sess: S, msg: Any, now: float) -> bool:
        """The rate limit, then ``handle``. False means: close it (a flood)."""
        if strikes := self.over_limit(sess, now):
            return await self.refuse(sess, strikes)
        await self.handle(sess, msg, now)
        return True

    async def handle(self, sess: S, msg: Any, now: float) -> None:
        """Handle one decoded message from ``sess`` that the rate limit let through."""
        try:
            try:
                cseq = p.cseq_of(msg)
                try:
                    msg = p.validate(msg)
                except p.ProtocolError:  # a refused message counts as handled too
                    if cseq is not None and not await self.admitted(sess, await self._admit(sess, cseq)):
                        return
                    raise
                kind = msg["type"]
                if cseq is not None and kind not in self._admits_itself:
                    if not await self.admitted(sess, await self._admit(sess, cseq), msg.get("id")):
                        return
                if kind in p.RELAYED:
                    if verdict := await self._relay(sess, kind, msg):
                        await self.admitted(sess, verdict, msg.get("id"))
                        return
                    self.metrics.relayed[kind] += 1
                    self.metrics.observe_latency(time.monotonic() - now)
                    return
                if kind == "ping":
                    verdict = await self.backend.pong(sess, msg)
                elif kind == "join":
                    if not self.settings.private_mode:  # refused here: count it handled here
                        if cseq is not None and kind in self._admits_itself and not await self.admitted(
                                sess, await self._admit(sess, cseq), msg.get("id")):
                            return
                        raise p.ProtocolError(p.FORBIDDEN, "rooms are switched off on this server", msg.get("id"))
                    verdict = await self.backend.join(sess, msg)
                elif kind == "leave":
                    verdict = await self.backend.leave(sess, msg)
                elif kind == "list":
                    verdict = await self.list_peers(sess, msg)
                else:  # ack
                    await self.backend.ack(sess, msg["seq"])
                    return
                if verdict:
                    await self.admitted(sess, verdict, msg.get("id"))
            except p.ProtocolError as exc:
                await self.error(sess, exc.code, exc.message, exc.ref)
        except self._unavailable as exc:
            log.warning("backend error while handling a message", extra={"peer": sess.id, "error": str(exc)})
            self.metrics.errors[p.UNAVAILABLE] += 1
            if sess.ws is None:
                raise
            try:  # outside the numbered mailbox: the backend is what numbers it
                await sess.ws.send_frame(p.dumps(p.error(p.UNAVAILABLE, "cluster backend unreachable; retry")), TEXT)
            except SEND_ERRORS:
                pass

    async def admitted(self, sess: S, verdict: int, ref: Any = None) -> bool:
        """True to go on with a message; else answer as docs/protocol.md says:
        nothing for a repeat, ``out-of-order`` once per gap."""
        if verdict == p.HANDLE:
            return True
        if verdict == p.GAP and not sess.gap_noted:
            sess.gap_noted = True
            await self.error(sess, p.OUT_OF_ORDER,
                             "'cseq' skips ahead; send a ping and resend what follows the pong's 'received'", ref)
        return False

    async def list_peers(self, sess: S, msg: dict[str, Any]) -> int:
        s = self.settings
        if not (s.discovery and s.public_mode) or sess.room is not None:
            raise p.ProtocolError(p.FORBIDDEN, "peer discovery is switched off", msg.get("id"))
        peers = await self.backend.public_peers(sess)
        reply: dict[str, Any] = {"type": "peers", "peers": peers}
        if "id" in msg:
            reply["ref"] = msg["id"]
        await self.backend.deliver(sess, prefix_of(reply))
        return p.HANDLE

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
        """Ping WebSockets, drop idle ones, expire detached and polling sessions; then
        the backend's part."""
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
        await self.backend.sweep(now)

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

    def gauges(self) -> Gauges:
        conns: dict[str, float] = {"websocket": 0, "polling": 0}
        detached = 0
        for sess in self.sessions.values():
            if sess.ws is not None:
                conns["websocket"] += 1
            elif sess.polling:
                conns["polling"] += 1
            elif sess.transport == "ws":
                detached += 1
        gauges: Gauges = {
            "signaling_connections": ("Open connections by transport.", conns),
            "signaling_sessions": ("Live sessions on this instance.", len(self.sessions)),
            "signaling_sessions_detached": ("Sessions waiting for a resume.", detached),
            "signaling_rooms": ("Rooms with at least one member.", self.backend.rooms_here()),
            "signaling_draining": ("1 while the instance drains.", int(self.draining)),
        }
        gauges.update(self.backend.gauges())
        return gauges
