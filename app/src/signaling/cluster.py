"""The Redis hub: many instances on many hosts form one signaling service.

Redis holds every session, room and mailbox (see cluster_lua.py for the key
layout); an instance holds only the sockets of the peers connected to it.
Delivering a message is one atomic script: it checks the mode rules, numbers
the message in the target's mailbox stream and publishes it to the instance
that holds the target's socket (or hands it back to the caller when that is
this instance). Because the stream is the truth and publishing only a fast
path, a peer can resume on any instance, a long-poll can land on any
instance, and a gap in what arrived over pub/sub (a Redis restart, a
resume racing a delivery) is filled from the stream in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any, cast

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from . import cluster_lua as lua
from . import protocol as p
from .config import Settings
from .hub import BaseHub
from .keys import METRICS
from .metrics import Metrics
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

    WebSocket peers get the same code as an error frame (see ``RedisHub``); a
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


class RedisHub(BaseHub[ClusterSession]):
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        super().__init__(settings, metrics)
        self.name = settings.name
        self._name_b = self.name.encode()
        self._listening = False
        self.channel = f"{PREFIX}i:{self.name}"
        self.redis: aioredis.Redis | None = None
        self.healthy = False
        self.waiters: dict[str, asyncio.Future[bool]] = {}   # long-polls hanging here
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

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
        r = self.redis
        self._deliver = r.register_script(lua.DELIVER)
        self._admit = r.register_script(lua.ADMIT)
        self._pong = r.register_script(lua.PONG)
        self._relay = r.register_script(lua.RELAY)
        self._join = r.register_script(lua.JOIN)
        self._leave_s = r.register_script(lua.LEAVE)
        self._close_s = r.register_script(lua.CLOSE)
        self._expire = r.register_script(lua.EXPIRE)
        self._claim = r.register_script(lua.CLAIM)
        self._release = r.register_script(lua.RELEASE)
        self._refresh = r.register_script(lua.REFRESH)
        await super().start()
        self._tasks.append(asyncio.create_task(self._listen_forever(), name="signaling-subscriber"))
        try:  # a first check, so /ready is right from the start; not fatal
            await asyncio.wait_for(self._subscribed.wait(), 5)
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
        await super().stop()
        if self.redis is not None:
            await self.redis.aclose()

    @property
    def ready(self) -> bool:
        return self.healthy and not self.draining

    @property
    def client(self) -> aioredis.Redis:
        """The Redis client, which ``start`` makes before anything uses it."""
        assert self.redis is not None, "RedisHub.start() has not run"
        return self.redis

    async def _xrange(self, key: str, min: str = "-", count: int | None = None) -> Entries:
        """The entries of stream ``key`` from id ``min`` on, oldest first."""
        return cast(Entries, await self.client.xrange(key, min=min, count=count))

    def _args(self, *rest: Any) -> list[Any]:
        return [PREFIX, self.settings.resume_queue, self.name, *rest]

    # -- pub/sub ---------------------------------------------------------------

    async def _listen_forever(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self.client.ping()
                if not self.healthy:
                    log.info("redis reachable", extra={"channel": self.channel})
                self.healthy = self._listening = True
                self._subscribed.set()
                backoff = 0.1
                for sess in list(self.sessions.values()):  # whatever was published while we were away
                    self.spawn(self.catch_up(sess))
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
                self.healthy = self._listening = False
                try:
                    await pubsub.aclose()
                except REDIS_ERRORS:
                    pass
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _on_message(self, data: bytes) -> None:
        if data.startswith(b"K "):  # another instance took this session over
            sess = self.sessions.get(data[2:].decode())
            if sess is not None and sess.ws is not None:
                ws = sess.ws
                self._forget_local(sess)
                await ws.close(code=1008, message=b"resumed elsewhere")
            return
        sid, seq, frame = data.split(b" ", 2)
        peer = sid.decode()
        sess = self.sessions.get(peer)
        if sess is not None:
            await self.offer(sess, int(seq), frame)
        elif (waiter := self.waiters.get(peer)) is not None and not waiter.done():
            waiter.set_result(True)

    # -- ordered delivery to local sockets ---------------------------------------

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
                entries = await self._xrange(f"{PREFIX}q:{sess.id}", min=f"{sess.sent + 1}-0", count=256)
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
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}s:{sess.id}", mapping={
            "token": sess.token, "room": "", "role": "", "name": "", "seq": 0, "sent": 0, "recv": 0,
            "inst": self.name if ws else "", "transport": transport,
        })
        pipe.set(f"{PREFIX}t:{sess.token}", sess.id)
        pipe.sadd(f"{PREFIX}public", sess.id)
        pipe.zadd(f"{PREFIX}exp", {sess.id: deadline})
        await pipe.execute()
        if ws:
            self.sessions[sess.id] = sess
            self.by_token[sess.token] = sess
        self.metrics.sessions_opened[transport] += 1
        return sess

    async def find(self, token: str | None) -> ClusterSession | None:
        if not token or len(token) > 64:
            return None
        local = self.by_token.get(token)
        if local is not None:
            return local
        sid = cast("bytes | None", await self.client.get(f"{PREFIX}t:{token}"))
        if sid is None:
            return None
        state = await self.client.hmget(
            f"{PREFIX}s:{sid.decode()}", "room", "role", "name", "seq", "sent", "token", "recv")
        if state[3] is None or state[5] != token.encode():
            return None
        sess = ClusterSession("poll", self.settings, time.monotonic())
        sess.id, sess.token = sid.decode(), token
        sess.load(state)
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
        state = await self._claim(args=self._args(found.id, time.time() + s.idle_timeout + s.resume_window))
        if not state:
            return None
        sess = ClusterSession("ws", s, time.monotonic())
        sess.id, sess.token = found.id, token
        sess.load(state)
        previous = state[5].decode() if state[5] else ""
        if previous and previous != self.name:
            await self.client.publish(f"{PREFIX}i:{previous}", b"K " + sess.id.encode())
        self.sessions[sess.id] = sess
        self.by_token[token] = sess
        return sess

    async def lost_after(self, sess: Session, after: int) -> int:
        oldest = await self._xrange(f"{PREFIX}q:{sess.id}", count=1)
        first = int(oldest[0][0].split(b"-", 1)[0]) if oldest else sess.seq + 1
        return max(0, first - 1 - after)

    async def attach(self, sess: ClusterSession, ws: Socket, after: int) -> None:
        sess.sent = after
        sess.ws = ws
        sess.detached_at = None
        if sess.seq > after or after:
            await self.catch_up(sess)

    async def detach(self, sess: ClusterSession, ws: Socket) -> None:
        if sess.ws is not ws:
            return
        self._forget_local(sess)
        try:
            await self._release(
                args=self._args(sess.id, sess.sent, time.time() + self.settings.resume_window, sess.gen))
        except REDIS_ERRORS as exc:
            log.warning("release failed", extra={"peer": sess.id, "error": str(exc)})

    async def close(self, sess: Session) -> None:
        if sess.closed:
            return
        sess.closed = True
        self._forget_local(sess)
        await self._close_s(args=self._args(sess.id))
        waiter = self.waiters.get(sess.id)
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    async def poll(self, sess: Session, after: int, ack: int | None, wait: float) -> tuple[list[bytes], int]:
        s = self.settings
        qkey = f"{PREFIX}q:{sess.id}"
        if ack is not None:
            await self.client.xtrim(qkey, minid=f"{ack + 1}-0")
        previous = self.waiters.get(sess.id)
        if previous is not None and not previous.done():
            previous.set_result(False)
        waiter = self.waiters[sess.id] = asyncio.get_running_loop().create_future()
        state = await self._claim(args=self._args(sess.id, time.time() + wait + s.poll_timeout))
        gen = int(state[7]) if state else 0
        last = after
        try:
            entries = await self._xrange(qkey, min=f"{after + 1}-0")
            if not entries and wait and not self.draining:
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), wait)
                except TimeoutError:
                    pass
                superseded = waiter.done() and waiter.result() is False
                entries = [] if superseded else await self._xrange(qkey, min=f"{after + 1}-0")
            if entries:
                last = int(entries[-1][0].split(b"-", 1)[0])
            return [fields[b"f"] for _, fields in entries], await self.lost_after(sess, after)
        finally:
            if not waiter.done():
                waiter.cancel()
            if self.waiters.get(sess.id) is waiter:  # not superseded by a newer poll here
                del self.waiters[sess.id]
                await self._release(args=self._args(sess.id, last, time.time() + s.poll_timeout, gen))

    # -- messages --------------------------------------------------------------

    # The scripts of these check and count the client sequence number with the effect.
    admits_itself = p.RELAYED | {"join", "leave", "ping"}

    async def refuse(self, sess: Session, strikes: int) -> bool:
        try:
            return await super().refuse(sess, strikes)
        except REDIS_ERRORS as exc:  # the answer is a courtesy; the message is dropped either way
            log.warning("redis error while refusing a message", extra={"peer": sess.id, "error": str(exc)})
            return True

    async def handle(self, sess: Session, msg: Any, now: float) -> None:
        try:
            await super().handle(sess, msg, now)
        except REDIS_ERRORS as exc:
            log.warning("redis error while handling a message", extra={"peer": sess.id, "error": str(exc)})
            self.metrics.errors[p.UNAVAILABLE] += 1
            if sess.ws is None:
                raise
            try:  # outside the numbered stream: Redis is what numbers it
                await sess.ws.send_frame(p.dumps(p.error(p.UNAVAILABLE, "cluster backend unreachable; retry")), TEXT)
            except SEND_ERRORS:
                pass

    async def _local(self, sid: str, result: Any, prefix: bytes) -> None:
        """After a delivery script: write to the socket here if the target is ours."""
        seq, inst = result
        if inst == self._name_b:
            sess = self.sessions.get(sid)
            if sess is not None:
                await self.offer(sess, int(seq), prefix + b"%d}" % int(seq))
            elif (waiter := self.waiters.get(sid)) is not None and not waiter.done():
                waiter.set_result(True)

    async def deliver(self, sess: Session, prefix: bytes) -> None:
        result = await self._deliver(args=self._args(sess.id, prefix))
        if result:
            await self._local(sess.id, result, prefix)

    async def admit(self, sess: Session, cseq: int) -> int:
        return self._counted(sess, cseq, await self._admit(args=self._args(sess.id, cseq)))

    @staticmethod
    def _counted(sess: Session, cseq: Any, verdict: int) -> int:
        """Mirror in ``sess`` what a script decided about ``cseq`` (for answers
        that report it, like a polling POST's ``received``)."""
        if verdict == p.HANDLE and cseq != "":
            sess.received = int(cseq)
            sess.gap_noted = False
        return verdict

    async def pong(self, sess: Session, msg: dict[str, Any]) -> None:
        cseq = msg.get("cseq") or ""  # null means none given
        ref = b'"ref":%s,' % p.dumps(msg["id"]) if "id" in msg else b""
        result = await self._pong(args=self._args(sess.id, cseq, ref))
        if isinstance(result, int):
            await self.admitted(sess, self._counted(sess, cseq, -2 - result), msg.get("id"))
            return
        self._counted(sess, cseq, p.HANDLE)
        if result:  # {seq, inst, received}
            await self._local(sess.id, result[:2], b'{"type":"pong",%s"received":%s,"seq":' % (ref, result[2]))

    async def ack(self, sess: Session, seq: int) -> None:
        await self.client.xtrim(f"{PREFIX}q:{sess.id}", minid=f"{min(seq, sess.sent) + 1}-0")

    async def relay(self, sess: Session, kind: str, msg: dict[str, Any], now: float) -> None:
        target = msg["to"]
        ref = msg.get("id")
        cseq = msg.get("cseq") or ""  # null means none given
        try:
            if target == sess.id:
                raise p.ProtocolError(p.FORBIDDEN, "you may not signal that peer", ref)
            prefix = b"%s%s\",\"data\":%s,\"seq\":" % (
                b'{"type":"%s","from":"' % kind.encode(), sess.id.encode(), p.encode_data(msg))
        except p.ProtocolError:  # refused before the script: count it handled here
            if isinstance(cseq, int) and not await self.admitted(sess, await self.admit(sess, cseq), ref):
                return
            raise
        result = await self._relay(args=self._args(sess.id, target, prefix, int(self.settings.public_mode), cseq))
        if isinstance(result, int) and result <= -3:
            await self.admitted(sess, self._counted(sess, cseq, -2 - result), ref)
            return
        self._counted(sess, cseq, p.HANDLE)
        if result == -1:
            raise p.ProtocolError(p.UNKNOWN_PEER, "no peer with that id", ref)
        if result == -2:
            raise p.ProtocolError(p.FORBIDDEN, "you may not signal that peer", ref)
        await self._local(target, result, prefix)
        self.metrics.relayed[kind] += 1
        self.metrics.observe_latency(time.monotonic() - now)

    async def join(self, sess: Session, msg: dict[str, Any]) -> None:
        s = self.settings
        ref = msg.get("id")
        cseq = msg.get("cseq") or ""  # null means none given
        if not s.private_mode:
            if isinstance(cseq, int) and not await self.admitted(sess, await self.admit(sess, cseq), ref):
                return
            raise p.ProtocolError(p.FORBIDDEN, "rooms are switched off on this server", ref)
        room, role, name = msg["room"], msg["role"], msg.get("name", "")
        secret = msg.get("secret")
        digest = hashlib.sha256(f"{room}\0{secret}".encode()).hexdigest() if secret is not None else ""
        me = {"id": sess.id, "role": role, "name": name}
        note = prefix_of({"type": "peer-joined", "room": room, "peer": me})
        result = await self._join(
            args=self._args(sess.id, room, role, digest, s.room_max_peers, p.dumps(me), note, cseq))
        status = result[0].decode()
        if status in ("repeat", "gap"):
            await self.admitted(sess, self._counted(sess, cseq, p.REPEAT if status == "repeat" else p.GAP), ref)
            return
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

    async def leave(self, sess: Session, msg: dict[str, Any]) -> None:
        cseq = msg.get("cseq") or ""  # null means none given
        room = await self._leave_s(args=self._args(sess.id, cseq))
        if isinstance(room, int):  # 1 repeat, 2 gap
            await self.admitted(sess, self._counted(sess, cseq, room), msg.get("id"))
            return
        self._counted(sess, cseq, p.HANDLE)
        if not room:
            raise p.ProtocolError(p.BAD_MESSAGE, "not in a room", msg.get("id"))
        sess.room, sess.role = None, None
        reply: dict[str, Any] = {"type": "left", "room": room.decode()}
        if "id" in msg:
            reply["ref"] = msg["id"]
        await self.deliver(sess, prefix_of(reply))

    async def public_peers(self, sess: Session) -> list[str]:
        members = cast("list[bytes]", await self.client.srandmember(f"{PREFIX}public", 1000))
        return sorted(m.decode() for m in members if m.decode() != sess.id)

    # -- liveness ------------------------------------------------------------

    async def sweep(self, now: float) -> None:
        await super().sweep(now)   # pings and idle drops of the sockets held here
        s = self.settings
        wall = time.time()
        try:
            ids = [sid for sid, sess in self.sessions.items() if sess.ws is not None]
            for i in range(0, len(ids), 500):
                await self._refresh(args=self._args(wall + s.idle_timeout + s.resume_window, *ids[i:i + 500]))
            expired = await self._expire(args=self._args(wall, 200))
            if expired:
                log.info("sessions expired", extra={"count": len(expired)})
            await self.client.ping()
            self.healthy = self._listening
        except REDIS_ERRORS as exc:
            self.healthy = False
            log.warning("redis unreachable during sweep", extra={"error": str(exc)})

    def gauges(self) -> dict[str, tuple[str, dict[str, float] | float]]:
        gauges = super().gauges()
        gauges["signaling_redis_up"] = ("1 while Redis answers.", int(self.healthy))
        pool = self.redis.connection_pool if self.redis is not None else None
        if pool is not None:
            gauges["signaling_redis_connections"] = ("Connections of the Redis pool by state.", {
                "in_use": len(pool._in_use_connections), "idle": len(pool._available_connections)})
        return gauges
