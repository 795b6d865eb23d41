"""The memory backend: every session, room and mailbox of one instance, in this process.

The embedded default (no ``redis_url``). A session's mailbox is its own bounded
queue (session.py); rooms are ``rooms.Room`` objects; sessions are the hub's
``sessions``. Nothing here waits on I/O but writes to sockets, so the hub is
``inline`` (ws.py handles a message right where it is read).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

from . import protocol as p
from .config import Settings
from .rooms import Room, may_signal, peer_info
from .session import Session, prefix_of

if TYPE_CHECKING:
    from .metrics import Gauges
    from .wsconn import Socket

# Prefixes of relayed messages, built once: b'{"type":"offer","from":"'.
_RELAY_HEAD = {kind: b'{"type":"%s","from":"' % kind.encode() for kind in p.RELAYED}


class Host(Protocol):
    """What this backend needs of the hub it serves (hub.Hub): a protocol, so that
    this module, which hub.py imports, imports nothing of hub.py."""

    settings: Settings
    sessions: dict[str, Session]
    by_token: dict[str, Session]
    draining: bool


class MemoryBackend:
    """Sessions and rooms of one instance; see ``hub.Backend`` for the operations."""

    inline = True
    admits_itself: frozenset[str] = frozenset()
    unavailable: tuple[type[BaseException], ...] = ()

    def __init__(self) -> None:
        self.rooms: dict[str, Room[Session]] = {}

    def bind(self, hub: Host) -> None:
        self.hub = hub
        self.settings = hub.settings
        self.sessions = hub.sessions
        self.by_token = hub.by_token

    @property
    def ready(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def close(self) -> None:
        pass

    # -- sessions ------------------------------------------------------------

    async def open(self, transport: str) -> Session:
        s = self.settings
        sess = Session(transport, s.resume_queue, time.monotonic(), s.rate_limit_burst)
        self.sessions[sess.id] = sess
        self.by_token[sess.token] = sess
        return sess

    async def find(self, token: str | None) -> Session | None:
        return self._find(token)

    def _find(self, token: str | None) -> Session | None:
        if not token:
            return None
        sess = self.by_token.get(token)
        return None if sess is None or sess.closed else sess

    async def resume(self, token: str) -> Session | None:
        sess = self._find(token)
        if sess is not None and sess.ws is not None:
            old = sess.ws
            await self.detach(sess, old)
            await old.close(code=1008, message=b"resumed elsewhere")
        return sess

    async def lost_after(self, sess: Session, after: int) -> int:
        return sess.lost_after(after)

    async def attach(self, sess: Session, ws: Socket, after: int) -> None:
        await sess.attach(ws, after)

    async def detach(self, sess: Session, ws: Socket) -> None:
        if sess.ws is ws:
            sess.detach(time.monotonic())

    async def end(self, sess: Session) -> None:
        if sess.room is not None:
            await self._leave(sess)
        self.sessions.pop(sess.id, None)
        self.by_token.pop(sess.token, None)
        if sess.waiter is not None and not sess.waiter.done():
            sess.waiter.set_result(False)

    async def poll(self, sess: Session, after: int, ack: int | None, wait: float) -> tuple[list[bytes], int]:
        if ack is not None:
            sess.forget(ack)
        frames = sess.pending(after)
        if not frames and wait and not self.hub.draining:
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

    # -- messages --------------------------------------------------------------

    async def deliver(self, sess: Session, prefix: bytes) -> None:
        await sess.push(prefix)

    async def admit(self, sess: Session, cseq: int) -> int:
        return sess.admit(cseq)

    async def pong(self, sess: Session, msg: dict[str, Any]) -> int:
        reply: dict[str, Any] = {"type": "pong", "received": sess.received}
        if "id" in msg:
            reply["ref"] = msg["id"]
        await sess.push(prefix_of(reply))
        return p.HANDLE

    async def ack(self, sess: Session, seq: int) -> None:
        sess.forget(seq)

    async def relay(self, sess: Session, kind: str, msg: dict[str, Any]) -> int:
        target = self.sessions.get(msg["to"])
        if target is None:
            raise p.ProtocolError(p.UNKNOWN_PEER, "no peer with that id", msg.get("id"))
        if not may_signal(sess, target, self.settings.public_mode):
            raise p.ProtocolError(p.FORBIDDEN, "you may not signal that peer", msg.get("id"))
        await target.push(b"%s%s\",\"data\":%s,\"seq\":" % (_RELAY_HEAD[kind], sess.id.encode(), p.encode_data(msg)))
        return p.HANDLE

    async def join(self, sess: Session, msg: dict[str, Any]) -> int:
        s = self.settings
        ref = msg.get("id")
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
        await sess.push(prefix_of(reply))
        note = prefix_of({"type": "peer-joined", "room": name, "peer": peer_info(sess)})
        for other in visible:
            await other.push(note)
        return p.HANDLE

    async def leave(self, sess: Session, msg: dict[str, Any]) -> int:
        room = sess.room
        if room is None:
            raise p.ProtocolError(p.BAD_MESSAGE, "not in a room", msg.get("id"))
        await self._leave(sess)
        reply: dict[str, Any] = {"type": "left", "room": room.name}
        if "id" in msg:
            reply["ref"] = msg["id"]
        await sess.push(prefix_of(reply))
        return p.HANDLE

    async def _leave(self, sess: Session) -> None:
        room = sess.room
        assert isinstance(room, Room)  # what join() made it
        visible: list[Session] = room.visible_to(sess)
        room.remove(sess)
        if not room.members:
            self.rooms.pop(room.name, None)
        note = prefix_of({"type": "peer-left", "room": room.name, "id": sess.id})
        for other in visible:
            await other.push(note)

    async def public_peers(self, sess: Session) -> list[str]:
        return [other.id for other in self.sessions.values() if other.room is None and other is not sess]

    # -- liveness ------------------------------------------------------------

    async def sweep(self, now: float) -> None:
        pass  # the hub's sweep expires this instance's sessions: all of them

    def rooms_here(self) -> int:
        return len(self.rooms)

    def gauges(self) -> Gauges:
        return {}
