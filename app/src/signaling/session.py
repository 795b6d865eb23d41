"""A signaling session: identity, room membership and an ordered mailbox.

Every message the server sends a peer (after ``welcome``) goes through
``Session.push``: it gets the next sequence number, is kept in a bounded
queue, and is written to the WebSocket when one is attached. The queue is what
makes resume and poll retries lossless: a client that reconnects with
``ack=N`` gets every message after N that is still queued, in order.

Messages arrive here as a *prefix*: the encoded JSON object without its
closing brace, ending in ``"seq":``. Appending the number and ``}`` makes
the frame, so a relayed message is encoded exactly once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType
from aiohttp.client_exceptions import ClientConnectionResetError

from .protocol import GAP, HANDLE, REPEAT, dumps

if TYPE_CHECKING:
    from .rooms import RoomRef
    from .wsconn import Socket

TEXT = WSMsgType.TEXT
SEND_ERRORS = (ClientConnectionResetError, ConnectionResetError, RuntimeError)


def prefix_of(msg: dict[str, Any]) -> bytes:
    """Encode a message as a push prefix: ``{...,"seq":``."""
    return dumps(msg)[:-1] + b',"seq":'


class Session:
    __slots__ = (
        "id", "token", "transport", "room", "role", "name",
        "seq", "sent", "queue", "ws", "waiter",
        "last_rx", "last_ping", "detached_at", "polling",
        "tokens", "refilled", "strikes", "strike_start", "closed",
        "received", "gap_noted",
    )

    def __init__(self, transport: str, queue_size: int, now: float, burst: int) -> None:
        self.id = secrets.token_urlsafe(12)          # 16 characters, public
        self.token = secrets.token_urlsafe(32)       # 43 characters, secret
        self.transport = transport                   # "ws" | "poll"
        self.room: RoomRef | None = None
        self.role: str | None = None
        self.name = ""
        self.seq = 0            # last sequence number assigned
        self.sent = 0           # highest seq written to a socket or returned by a poll
        self.queue: deque[tuple[int, bytes]] = deque(maxlen=queue_size)
        self.ws: Socket | None = None
        self.waiter: asyncio.Future[bool] | None = None
        self.last_rx = now      # last frame (WebSocket) or poll (HTTP)
        self.last_ping = now
        self.detached_at: float | None = None if transport == "ws" else now
        self.polling = 0        # long-polls in progress
        self.tokens = float(burst)   # rate limit bucket
        self.refilled = now
        self.strikes = 0
        self.strike_start = now
        self.closed = False
        self.received = 0       # highest client sequence number (cseq) handled
        self.gap_noted = False  # an out-of-order error was sent for the current gap

    def __repr__(self) -> str:  # never shows the token
        return f"<Session {self.id} {self.transport} room={self.room and self.room.name}>"

    # -- mailbox -----------------------------------------------------------

    async def push(self, prefix: bytes) -> None:
        """Queue one message and write it to the attached WebSocket, if any."""
        self.seq = seq = self.seq + 1
        frame = prefix + b"%d}" % seq
        self.queue.append((seq, frame))
        ws = self.ws
        if ws is not None:
            try:
                await ws.send_frame(frame, TEXT)
            except SEND_ERRORS:
                return  # stays queued; a resume replays it
            if seq > self.sent:
                self.sent = seq
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(True)

    def pending(self, after: int) -> list[bytes]:
        """Frames with a sequence number above ``after``, oldest first."""
        queue = self.queue
        if not queue or queue[-1][0] <= after:
            return []
        return [frame for seq, frame in queue if seq > after]

    def lost_after(self, after: int) -> int:
        """How many messages after ``after`` were pushed out of the queue."""
        oldest = self.queue[0][0] if self.queue else self.seq + 1
        return max(0, oldest - 1 - after)

    def forget(self, upto: int) -> None:
        """Drop queued messages the client acknowledged (never unsent ones)."""
        upto = min(upto, self.sent)
        queue = self.queue
        while queue and queue[0][0] <= upto:
            queue.popleft()

    async def attach(self, ws: Socket, after: int) -> None:
        """Replay everything after ``after`` to ``ws``, then route new pushes to it."""
        while True:
            frames = self.pending(after)
            if not frames:
                break
            after = self.seq
            for frame in frames:
                await ws.send_frame(frame, TEXT)
        self.sent = max(self.sent, self.seq)
        self.ws = ws
        self.detached_at = None

    def detach(self, now: float) -> None:
        self.ws = None
        self.detached_at = now

    # -- client sequence numbers ----------------------------------------------

    def admit(self, cseq: int) -> int:
        """HANDLE the next expected ``cseq`` (and count it handled), or say
        it is a REPEAT of one handled or leaves a GAP (protocol.py)."""
        if cseq <= self.received:
            return REPEAT
        if cseq > self.received + 1:
            return GAP
        self.received = cseq
        self.gap_noted = False
        return HANDLE

    # -- rate limit ----------------------------------------------------------

    def allow(self, now: float, rate: float, burst: int) -> bool:
        """Token bucket: True if one more message may pass now."""
        tokens = self.tokens + (now - self.refilled) * rate
        self.refilled = now
        if tokens >= 1.0:
            self.tokens = min(tokens, burst) - 1.0
            return True
        self.tokens = tokens
        if now - self.strike_start > 10.0:
            self.strike_start = now
            self.strikes = 0
        self.strikes += 1
        return False
