"""The Redis backend: many instances on many hosts form one signaling service.

Redis holds every session, room and mailbox (see cluster_lua.py for the key
layout); an instance holds only the sockets of the peers connected to it.
Delivering a message is one atomic script: it checks the mode rules, numbers
the message in the target's mailbox stream and publishes it to the instance
that holds the target's socket (or hands it back to the caller when that is
this instance). Because the stream is the truth and publishing only a fast
path, a peer can resume on any instance, a long-poll can land on any
instance, and a gap in what arrived over pub/sub (a Redis restart, a
resume racing a delivery) is filled from the stream in order.

``RedisBackend`` is the hub's backend (hub.py); it is made of ``RedisBus``
(pub/sub between instances), ``RedisMailbox`` (the mailbox streams and the
ordered writing to local sockets) and ``RedisStore`` (sessions and rooms).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from . import cluster_lua as lua
from . import protocol as p
from .config import Settings
from .hub import Hub
from .keys import METRICS
from .metrics import Gauges, Metrics
from .rooms import RoomRef
from .session import SEND_ERRORS, TEXT, Session, prefix_of
from .web_util import error_response

if TYPE_CHECKING:
    from .wsconn import Socket

log = logging.getLogger("signaling.cluster")

PREFIX = "sig:"
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
REDIS_CONNECTIONS = 64  # per instance; Redis allows 10,000 clients

# A stream's entries, (id, fields). The client leaves responses undecoded (no
# decode_responses), so ids, field names and values are bytes; redis-py's hints
# also allow the str of a decoding client.
Entries = list[tuple[bytes, dict[bytes, bytes]]]


@web.middleware
async def unavailable_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP requests that need Redis while it is unreachable answer 503 ``unavailable``.

    WebSocket peers get the same code as an error frame (see ``Hub.handle``); a
    long-polling peer gets it here, on the request that could not be handled,
    and retries. Installed by ``create_app`` only in cluster mode.
    """
    try:
        return await handler(request)
    except REDIS_ERRORS as exc:
        if not request.path.startswith("/api/sessions"):
            raise  # only the session endpoints use the hub; an upload's disk error is not Redis's doing
        request.app[METRICS].errors[p.UNAVAILABLE] += 1
        log.warning("redis unreachable during %s %s: %s", request.method, request.path, exc)
        return error_response(p.UNAVAILABLE, "cluster backend unreachable; retry", status=503)


class ClusterSession(Session):
    """A session whose mailbox lives in Redis; frames arrive numbered."""

    __slots__ = ("reorder", "fetching", "gen")

    def __init__(self, transport: str, settings: Settings, now: float) -> None:
        super().__init__(transport, 1, now, settings.rate_limit_burst)
        self.reorder: dict[int, bytes] = {}
        self.fetching = False
        self.gen = 0  # claim generation of the socket holding the session (CLAIM/RELEASE)

    def load(self, state: list[Any]) -> None:
        """Take room, role, name, seq, sent (0-4), recv (6) and the claim
        generation (7, CLAIM only) from a CLAIM or HMGET answer."""
        room, role, name, seq, sent = (v.decode() if isinstance(v, bytes) else v for v in state[:5])
        self.room = RoomRef(room) if room else None
        self.role = role or None
        self.name = name or ""
        self.seq = int(seq or 0)
        self.sent = int(sent or 0)
        self.received = int(state[6] or 0)
        if len(state) > 7:
            self.gen = int(state[7])

    async def write(self, seq: int, frame: bytes) -> None:
        self.sent = seq
        ws = self.ws
        if ws is not None:
            try:
                await ws.send_frame(frame, TEXT)
            except SEND_ERRORS:
                pass

    async def flush(self) -> None:
        while (frame := self.reorder.pop(self.sent + 1, None)) is not None:
            await self.write(self.sent + 1, frame)


class _Part:
    """A part of the Redis backend: the settings and, once started, the shared client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.name
        self.redis: aioredis.Redis | None = None

    def use(self, client: aioredis.Redis) -> None:
        self.redis = client

    @property
    def client(self) -> aioredis.Redis:
        """The Redis client, which ``RedisBackend.start`` makes before anything uses it."""
        assert self.redis is not None, "RedisBackend.start() has not run"
        return self.redis

    def _args(self, *rest: Any) -> list[Any]:
        return [PREFIX, self.settings.resume_queue, self.name, *rest]


class RedisBus(_Part):
    """Pub/sub between instances: this instance's channel, and whether Redis answers.

    Frames for sessions held here arrive as ``<id> <seq> <frame>`` (``on_frame``),
    a session another instance took over as ``K <id>`` (``on_kick``); after each
    (re)subscription ``on_connect`` fills what was published while away.
    """

    def __init__(self, settings: Settings, on_frame: Callable[[str, int, bytes], Awaitable[None]],
                 on_kick: Callable[[str], Awaitable[None]], on_connect: Callable[[], None]) -> None:
        super().__init__(settings)
        self.channel = f"{PREFIX}i:{self.name}"
        self.healthy = False
        self.listening = False
        self.subscribed = asyncio.Event()
        self._on_frame, self._on_kick, self._on_connect = on_frame, on_kick, on_connect

    async def kick(self, instance: str, sid: str) -> None:
        """Tell ``instance`` to close its socket of session ``sid``: it was resumed here."""
        await self.client.publish(f"{PREFIX}i:{instance}", b"K " + sid.encode())

    async def listen_forever(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self.client.ping()
                if not self.healthy:
                    log.info("redis reachable", extra={"channel": self.channel})
                self.healthy = self.listening = True
                self.subscribed.set()
                backoff = 0.1
                self._on_connect()  # whatever was published while we were away
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is not None and message["type"] == "message":
                        await self._on_message(message["data"])
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except REDIS_ERRORS as exc:
                if self.healthy:
                    log.warning("redis unreachable", extra={"error": str(exc)})
                self.healthy = self.listening = False
                try:
                    await pubsub.aclose()
                except REDIS_ERRORS:
                    pass
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _on_message(self, data: bytes) -> None:
        if data.startswith(b"K "):  # another instance took this session over
            await self._on_kick(data[2:].decode())
            return
        sid, seq, frame = data.split(b" ", 2)
        await self._on_frame(sid.decode(), int(seq), frame)


class RedisMailbox(_Part):
    """The sessions' mailboxes: one stream each (``q:<id>``), numbered by the delivery
    scripts, read by resumes and long-polls, trimmed by acks; and the ordered writing of
    what arrives to the sockets held here, gaps filled from the stream."""

    def __init__(self, settings: Settings, hub: Hub[ClusterSession]) -> None:
        super().__init__(settings)
        self._name_b = self.name.encode()
        self.sessions = hub.sessions
        self.spawn = hub.spawn
        self.waiters: dict[str, asyncio.Future[bool]] = {}   # long-polls hanging here

    def use(self, client: aioredis.Redis) -> None:
        super().use(client)
        self.deliver_s = client.register_script(lua.DELIVER)
        self.relay_s = client.register_script(lua.RELAY)
        self.pong_s = client.register_script(lua.PONG)

    async def entries(self, sid: str, after: int | None = None, count: int | None = None) -> Entries:
        """The entries of ``sid``'s stream after seq ``after`` (None: all), oldest first."""
        min = "-" if after is None else f"{after + 1}-0"
        return cast(Entries, await self.client.xrange(f"{PREFIX}q:{sid}", min=min, count=count))

    async def deliver(self, sid: str, prefix: bytes) -> Any:
        """Number ``prefix`` into ``sid``'s stream and publish it: ``{seq, inst}`` when
        ``inst`` is this instance, which writes it itself (cluster_lua.py)."""
        return await self.deliver_s(args=self._args(sid, prefix))

    async def relay(self, sid: str, target: str, prefix: bytes, public_mode: bool, cseq: Any) -> Any:
        """DELIVER from ``sid`` to ``target`` if the mode rules let it, with ``sid``'s ``cseq`` checked."""
        return await self.relay_s(args=self._args(sid, target, prefix, int(public_mode), cseq))

    async def pong(self, sid: str, cseq: Any, ref: bytes) -> Any:
        return await self.pong_s(args=self._args(sid, cseq, ref))

    async def trim(self, sid: str, upto: int) -> None:
        """Forget the entries up to seq ``upto``."""
        await self.client.xtrim(f"{PREFIX}q:{sid}", minid=f"{upto + 1}-0")

    async def lost_after(self, sess: Session, after: int) -> int:
        oldest = await self.entries(sess.id, count=1)
        first = int(oldest[0][0].split(b"-", 1)[0]) if oldest else sess.seq + 1
        return max(0, first - 1 - after)

    # -- arriving frames -------------------------------------------------------

    async def arrived(self, sid: str, seq: int, frame: bytes) -> None:
        """Frame ``seq`` of ``sid`` was published to this instance."""
        sess = self.sessions.get(sid)
        if sess is not None:
            await self.offer(sess, seq, frame)
        elif (waiter := self.waiters.get(sid)) is not None and not waiter.done():
            waiter.set_result(True)

    async def local(self, sid: str, result: Any, prefix: bytes) -> None:
        """After a delivery script: write to the socket here if the target is ours."""
        seq, inst = result
        if inst == self._name_b:
            sess = self.sessions.get(sid)
            if sess is not None:
                await self.offer(sess, int(seq), prefix + b"%d}" % int(seq))
            elif (waiter := self.waiters.get(sid)) is not None and not waiter.done():
                waiter.set_result(True)

    async def offer(self, sess: ClusterSession, seq: int, frame: bytes) -> None:
        """Write frame ``seq`` to the session's socket in order, fetching gaps from the stream."""
        if seq <= sess.sent or seq in sess.reorder:
            return
        if seq != sess.sent + 1 or sess.fetching:
            sess.reorder[seq] = frame
            if not sess.fetching:
                self.spawn(self.catch_up(sess))
            return
        await sess.write(seq, frame)
        if sess.reorder:
            await sess.flush()

    async def catch_up(self, sess: ClusterSession) -> None:
        """Write everything in the mailbox stream after ``sess.sent``, in order."""
        if sess.fetching:
            return
        sess.fetching = True
        try:
            for _ in range(1000):  # bounded; each round moves forward or ends
                entries = await self.entries(sess.id, sess.sent, count=256)
                for entry_id, fields in entries:
                    seq = int(entry_id.split(b"-", 1)[0])
                    if seq > sess.sent:
                        await sess.write(seq, fields[b"f"])
                for seq in [s for s in sess.reorder if s <= sess.sent]:
                    del sess.reorder[seq]
                if not entries:
                    break
        except REDIS_ERRORS as exc:
            log.warning("catch-up failed", extra={"peer": sess.id, "error": str(exc)})
        finally:
            sess.fetching = False
        await sess.flush()


class RedisStore(_Part):
    """Sessions, tokens, rooms and expiry deadlines (the ``s:``, ``t:``, ``r:``, ``m:``,
    ``public`` and ``exp`` keys of cluster_lua.py), changed by atomic scripts."""

    def use(self, client: aioredis.Redis) -> None:
        super().use(client)
        self.admit_s = client.register_script(lua.ADMIT)
        self.join_s = client.register_script(lua.JOIN)
        self.leave_s = client.register_script(lua.LEAVE)
        self.close_s = client.register_script(lua.CLOSE)
        self.expire_s = client.register_script(lua.EXPIRE)
        self.claim_s = client.register_script(lua.CLAIM)
        self.release_s = client.register_script(lua.RELEASE)
        self.refresh_s = client.register_script(lua.REFRESH)

    async def create(self, sess: Session, deadline: float, held: bool) -> None:
        """Store a new session, held by this instance (a WebSocket) or by none (polling)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}s:{sess.id}", mapping={
            "token": sess.token, "room": "", "role": "", "name": "", "seq": 0, "sent": 0, "recv": 0,
            "inst": self.name if held else "", "transport": sess.transport,
        })
        pipe.set(f"{PREFIX}t:{sess.token}", sess.id)
        pipe.sadd(f"{PREFIX}public", sess.id)
        pipe.zadd(f"{PREFIX}exp", {sess.id: deadline})
        await pipe.execute()

    async def lookup(self, token: str) -> tuple[str, list[Any]] | None:
        """The id and state (``ClusterSession.load``) of the session ``token`` belongs to."""
        sid = cast("bytes | None", await self.client.get(f"{PREFIX}t:{token}"))
        if sid is None:
            return None
        state = await self.client.hmget(
            f"{PREFIX}s:{sid.decode()}", "room", "role", "name", "seq", "sent", "token", "recv")
        if state[3] is None or state[5] != token.encode():
            return None
        return sid.decode(), state

    async def claim(self, sid: str, deadline: float) -> Any:
        """Hold ``sid`` on this instance until ``deadline``: its state, or nothing if it is gone."""
        return await self.claim_s(args=self._args(sid, deadline))

    async def release(self, sid: str, sent: int, deadline: float, gen: int) -> Any:
        """Let go of ``sid`` (if claim generation ``gen`` still holds it), to expire at ``deadline``."""
        return await self.release_s(args=self._args(sid, sent, deadline, gen))

    async def close(self, sid: str) -> None:
        await self.close_s(args=self._args(sid))

    async def admit(self, sid: str, cseq: int) -> int:
        return cast(int, await self.admit_s(args=self._args(sid, cseq)))

    async def join(self, sid: str, *rest: Any) -> Any:
        return await self.join_s(args=self._args(sid, *rest))

    async def leave(self, sid: str, cseq: Any) -> Any:
        return await self.leave_s(args=self._args(sid, cseq))

    async def public(self) -> list[bytes]:
        return cast("list[bytes]", await self.client.srandmember(f"{PREFIX}public", 1000))

    async def keep(self, ids: list[str], deadline: float) -> None:
        """Push the deadline of the sessions held here to ``deadline``."""
        for i in range(0, len(ids), 500):
            await self.refresh_s(args=self._args(deadline, *ids[i:i + 500]))

    async def expire(self, now: float) -> Any:
        return await self.expire_s(args=self._args(now, 200))


class RedisBackend:
    """Sessions, rooms and mailboxes in Redis; see ``hub.Backend`` for the operations.

    Made of a bus (``RedisBus``), the mailboxes (``RedisMailbox``) and a store
    (``RedisStore``), which share one connection pool.
    """

    inline = False
    # The scripts of these check and count the client sequence number with the effect.
    admits_itself = p.RELAYED | {"join", "leave", "ping"}
    unavailable: tuple[type[BaseException], ...] = REDIS_ERRORS

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.name
        self.redis: aioredis.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def bind(self, hub: Hub[ClusterSession]) -> None:
        self.hub = hub
        self.sessions = hub.sessions
        self.by_token = hub.by_token
        self.store = RedisStore(self.settings)
        self.mailbox = RedisMailbox(self.settings, hub)
        self.bus = RedisBus(self.settings, self.mailbox.arrived, self._kicked, self._reconnected)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        # A blocking pool: a burst of work (hundreds of peers resuming at once after a
        # proxy reload) queues for a connection instead of failing with "Too many
        # connections", the plain pool's answer beyond its size. It queues without a
        # timeout of its own (every command has its socket timeouts): on Python 3.11 a
        # waiter timing out just after it was woken swallows the wake-up (asyncio.Condition,
        # fixed in 3.13), and enough of those left waiters asleep beside idle connections,
        # failing with "No connection available" for minutes after a resume storm.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.settings.redis_url, max_connections=REDIS_CONNECTIONS, timeout=None,
            socket_connect_timeout=2, socket_timeout=5, health_check_interval=10,
        )
        self.redis = aioredis.Redis.from_pool(pool)
        for part in (self.store, self.mailbox, self.bus):
            part.use(self.redis)
        self._tasks.append(asyncio.create_task(self.bus.listen_forever(), name="signaling-subscriber"))
        try:  # a first check, so /ready is right from the start; not fatal
            await asyncio.wait_for(self.bus.subscribed.wait(), 5)
        except TimeoutError:
            log.warning("redis not reachable yet; /ready answers 503 until it is")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    @property
    def ready(self) -> bool:
        return self.bus.healthy

    def _reconnected(self) -> None:
        for sess in list(self.sessions.values()):
            self.hub.spawn(self.mailbox.catch_up(sess))

    async def _kicked(self, sid: str) -> None:
        sess = self.sessions.get(sid)
        if sess is not None and sess.ws is not None:
            ws = sess.ws
            self._forget_local(sess)
            await ws.close(code=1008, message=b"resumed elsewhere")

    # -- sessions ------------------------------------------------------------

    def _forget_local(self, sess: Session) -> None:
        if self.sessions.get(sess.id) is sess:
            del self.sessions[sess.id]
            self.by_token.pop(sess.token, None)
        sess.ws = None

    async def open(self, transport: str) -> ClusterSession:
        s = self.settings
        sess = ClusterSession(transport, s, time.monotonic())
        ws = transport == "ws"
        deadline = time.time() + (s.idle_timeout + s.resume_window if ws else s.poll_timeout)
        await self.store.create(sess, deadline, ws)
        if ws:
            self.sessions[sess.id] = sess
            self.by_token[sess.token] = sess
        return sess

    async def find(self, token: str | None) -> ClusterSession | None:
        if not token or len(token) > 64:
            return None
        local = self.by_token.get(token)
        if local is not None:
            return local
        found = await self.store.lookup(token)
        if found is None:
            return None
        sess = ClusterSession("poll", self.settings, time.monotonic())
        sess.id, sess.token = found[0], token
        sess.load(found[1])
        return sess

    async def resume(self, token: str) -> ClusterSession | None:
        found = await self.find(token)
        if found is None:
            return None
        s = self.settings
        if found.ws is not None:           # an older socket on this instance
            old = found.ws
            self._forget_local(found)
            await old.close(code=1008, message=b"resumed elsewhere")
        state = await self.store.claim(found.id, time.time() + s.idle_timeout + s.resume_window)
        if not state:
            return None
        sess = ClusterSession("ws", s, time.monotonic())
        sess.id, sess.token = found.id, token
        sess.load(state)
        previous = state[5].decode() if state[5] else ""
        if previous and previous != self.name:
            await self.bus.kick(previous, sess.id)
        self.sessions[sess.id] = sess
        self.by_token[token] = sess
        return sess

    async def lost_after(self, sess: ClusterSession, after: int) -> int:
        return await self.mailbox.lost_after(sess, after)

    async def attach(self, sess: ClusterSession, ws: Socket, after: int) -> None:
        sess.sent = after
        sess.ws = ws
        sess.detached_at = None
        if sess.seq > after or after:
            await self.mailbox.catch_up(sess)

    async def detach(self, sess: ClusterSession, ws: Socket) -> None:
        if sess.ws is not ws:
            return
        self._forget_local(sess)
        try:
            await self.store.release(sess.id, sess.sent, time.time() + self.settings.resume_window, sess.gen)
        except REDIS_ERRORS as exc:
            log.warning("release failed", extra={"peer": sess.id, "error": str(exc)})

    async def end(self, sess: ClusterSession) -> None:
        self._forget_local(sess)
        await self.store.close(sess.id)
        waiter = self.mailbox.waiters.get(sess.id)
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    async def poll(self, sess: ClusterSession, after: int, ack: int | None, wait: float) -> tuple[list[bytes], int]:
        s = self.settings
        mailbox, waiters = self.mailbox, self.mailbox.waiters
        if ack is not None:
            await mailbox.trim(sess.id, ack)
        previous = waiters.get(sess.id)
        if previous is not None and not previous.done():
            previous.set_result(False)
        waiter = waiters[sess.id] = asyncio.get_running_loop().create_future()
        state = await self.store.claim(sess.id, time.time() + wait + s.poll_timeout)
        gen = int(state[7]) if state else 0
        last = after
        try:
            entries = await mailbox.entries(sess.id, after)
            if not entries and wait and not self.hub.draining:
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), wait)
                except TimeoutError:
                    pass
                superseded = waiter.done() and waiter.result() is False
                entries = [] if superseded else await mailbox.entries(sess.id, after)
            if entries:
                last = int(entries[-1][0].split(b"-", 1)[0])
            return [fields[b"f"] for _, fields in entries], await mailbox.lost_after(sess, after)
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiters.get(sess.id) is waiter:  # not superseded by a newer poll here
                del waiters[sess.id]
                await self.store.release(sess.id, last, time.time() + s.poll_timeout, gen)

    # -- messages --------------------------------------------------------------

    async def deliver(self, sess: ClusterSession, prefix: bytes) -> None:
        result = await self.mailbox.deliver(sess.id, prefix)
        if result:
            await self.mailbox.local(sess.id, result, prefix)

    async def admit(self, sess: ClusterSession, cseq: int) -> int:
        return self._counted(sess, cseq, await self.store.admit(sess.id, cseq))

    @staticmethod
    def _counted(sess: Session, cseq: Any, verdict: int) -> int:
        """Mirror in ``sess`` what a script decided about ``cseq`` (for answers
        that report it, like a polling POST's ``received``)."""
        if verdict == p.HANDLE and cseq != "":
            sess.received = int(cseq)
            sess.gap_noted = False
        return verdict

    async def pong(self, sess: ClusterSession, msg: dict[str, Any]) -> int:
        cseq = msg.get("cseq") or ""  # null means none given
        ref = b'"ref":%s,' % p.dumps(msg["id"]) if "id" in msg else b""
        result = await self.mailbox.pong(sess.id, cseq, ref)
        if isinstance(result, int):
            return self._counted(sess, cseq, -2 - result)
        self._counted(sess, cseq, p.HANDLE)
        if result:  # {seq, inst, received}
            await self.mailbox.local(sess.id, result[:2], b'{"type":"pong",%s"received":%s,"seq":' % (ref, result[2]))
        return p.HANDLE

    async def ack(self, sess: ClusterSession, seq: int) -> None:
        await self.mailbox.trim(sess.id, min(seq, sess.sent))

    async def relay(self, sess: ClusterSession, kind: str, msg: dict[str, Any]) -> int:
        target = msg["to"]
        ref = msg.get("id")
        cseq = msg.get("cseq") or ""  # null means none given
        try:
            if target == sess.id:
                raise p.ProtocolError(p.FORBIDDEN, "you may not signal that peer", ref)
            prefix = b"%s%s\",\"data\":%s,\"seq\":" % (
                b'{"type":"%s","from":"' % kind.encode(), sess.id.encode(), p.encode_data(msg))
        except p.ProtocolError:  # refused before the script: count it handled here
            if isinstance(cseq, int) and (verdict := await self.admit(sess, cseq)) != p.HANDLE:
                return verdict
            raise
        result = await self.mailbox.relay(sess.id, target, prefix, self.settings.public_mode, cseq)
        if isinstance(result, int) and result <= -3:
            return self._counted(sess, cseq, -2 - result)
        self._counted(sess, cseq, p.HANDLE)
        if result == -1:
            raise p.ProtocolError(p.UNKNOWN_PEER, "no peer with that id", ref)
        if result == -2:
            raise p.ProtocolError(p.FORBIDDEN, "you may not signal that peer", ref)
        await self.mailbox.local(target, result, prefix)
        return p.HANDLE

    async def join(self, sess: ClusterSession, msg: dict[str, Any]) -> int:
        s = self.settings
        ref = msg.get("id")
        cseq = msg.get("cseq") or ""  # null means none given
        room, role, name = msg["room"], msg["role"], msg.get("name", "")
        secret = msg.get("secret")
        digest = hashlib.sha256(f"{room}\0{secret}".encode()).hexdigest() if secret is not None else ""
        me = {"id": sess.id, "role": role, "name": name}
        note = prefix_of({"type": "peer-joined", "room": room, "peer": me})
        result = await self.store.join(sess.id, room, role, digest, s.room_max_peers, p.dumps(me), note, cseq)
        status = result[0].decode()
        if status in ("repeat", "gap"):
            return self._counted(sess, cseq, p.REPEAT if status == "repeat" else p.GAP)
        self._counted(sess, cseq, p.HANDLE)
        if status == "already":
            raise p.ProtocolError(p.BAD_MESSAGE, f"already in room {result[1].decode()!r}; leave first", ref)
        if status == "gone":
            raise p.ProtocolError(p.UNAUTHORIZED, "session expired", ref)
        if status != "ok":
            raise p.ProtocolError(status, {
                p.BAD_SECRET: "wrong or missing room secret", p.ROOM_HAS_HOST: "this room already has a host",
                p.ROOM_FULL: f"room holds at most {s.room_max_peers} peers"}[status], ref)
        sess.room, sess.role, sess.name = RoomRef(room), role, name
        peers = [orjson.loads(v) for v in result[2::2]]
        reply: dict[str, Any] = {"type": "joined", "room": room, "role": role, "peers": peers}
        if ref is not None:
            reply["ref"] = ref
        await self.deliver(sess, prefix_of(reply))
        return p.HANDLE

    async def leave(self, sess: ClusterSession, msg: dict[str, Any]) -> int:
        cseq = msg.get("cseq") or ""  # null means none given
        room = await self.store.leave(sess.id, cseq)
        if isinstance(room, int):  # 1 repeat, 2 gap
            return self._counted(sess, cseq, room)
        self._counted(sess, cseq, p.HANDLE)
        if not room:
            raise p.ProtocolError(p.BAD_MESSAGE, "not in a room", msg.get("id"))
        sess.room, sess.role = None, None
        reply: dict[str, Any] = {"type": "left", "room": room.decode()}
        if "id" in msg:
            reply["ref"] = msg["id"]
        await self.deliver(sess, prefix_of(reply))
        return p.HANDLE

    async def public_peers(self, sess: ClusterSession) -> list[str]:
        members = await self.store.public()
        return sorted(m.decode() for m in members if m.decode() != sess.id)

    # -- liveness ------------------------------------------------------------

    async def sweep(self, now: float) -> None:
        """After the hub's pings and idle drops of the sockets held here: keep their
        sessions alive, expire the sessions of every instance that are due."""
        s = self.settings
        wall = time.time()
        try:
            ids = [sid for sid, sess in self.sessions.items() if sess.ws is not None]
            await self.store.keep(ids, wall + s.idle_timeout + s.resume_window)
            expired = await self.store.expire(wall)
            if expired:
                log.info("sessions expired", extra={"count": len(expired)})
            await self.store.client.ping()
            self.bus.healthy = self.bus.listening
        except REDIS_ERRORS as exc:
            self.bus.healthy = False
            log.warning("redis unreachable during sweep", extra={"error": str(exc)})

    def rooms_here(self) -> int:
        return 0  # rooms live in Redis, not on an instance

    def gauges(self) -> Gauges:
        gauges: Gauges = {"signaling_redis_up": ("1 while Redis answers.", int(self.bus.healthy))}
        pool = self.redis.connection_pool if self.redis is not None else None
        if pool is not None:
            gauges["signaling_redis_connections"] = ("Connections of the Redis pool by state.", {
                "in_use": len(pool._in_use_connections), "idle": len(pool._available_connections)})
        return gauges


def make_redis_hub(settings: Settings, metrics: Metrics) -> Hub[ClusterSession]:
    """The hub of an instance of a cluster: the dispatcher over a ``RedisBackend``."""
    return Hub(settings, metrics, RedisBackend(settings))
