"""Transport A: WebSocket signaling at ``GET /ws`` (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from aiohttp import WSCloseCode, WSMsgType, web
from orjson import JSONDecodeError, loads

from . import protocol as p
from .ice import ice_servers
from .keys import HUB, SETTINGS
from .session import Session
from .web_util import error_response, origin_allowed, query_int
from .wsconn import Connection, frame, take_over

log = logging.getLogger("signaling.ws")

# Messages (one frame or all the fragments of one) above this are cut off
# with close code 1009, judged by their frame headers; messages between
# max_message_size and this get a `too-large` error and the connection
# stays up.
HARD_FRAME_LIMIT = 1 << 20
CLOSE_UNAUTHORIZED = 4401
CLOSE_TRY_AGAIN = 1013  # RFC 6455 registry: "Try Again Later"


def welcome(sess: Session, settings, lost: int | None = None) -> dict:
    """The ``welcome`` object; also the body of ``POST /api/sessions``."""
    msg = {
        "type": "welcome",
        "id": sess.id,
        "token": sess.token,
        "heartbeat": settings.heartbeat,
        "resume": settings.resume_window,
        "rate_limit": {"rate": settings.rate_limit, "burst": settings.rate_limit_burst},
        "ice_servers": ice_servers(settings, sess.id, time.time()),
    }
    if lost is not None:  # a resume
        msg.update(resumed=True, room=sess.room and sess.room.name, role=sess.role, lost=lost,
                   received=sess.received)
    return msg


async def websocket(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    settings = request.app[SETTINGS]
    if hub.draining:
        return error_response(p.FORBIDDEN, "this instance is shutting down", status=503)
    if not origin_allowed(request, settings.allowed_origins):
        return error_response(p.FORBIDDEN, "origin not allowed")
    try:
        ack = query_int(request, "ack", None, 0, 2**63 - 1)
    except p.ProtocolError as exc:
        return error_response(exc.code, exc.message)
    token = request.query.get("resume")

    conn = Peer(hub, settings)
    take_over(request, conn)  # from here on the socket is ours, not aiohttp's
    sess = None
    try:
        if token is not None:
            sess = await hub.resume(token)
            if sess is None:
                hub.metrics.resume_failures += 1
                conn.write(frame(p.dumps(p.error(p.UNAUTHORIZED, "unknown or expired resume token"))))
                conn.hang_up(CLOSE_UNAUTHORIZED, b"resume refused")
                return _taken_over()
            after = sess.sent if ack is None else ack
            lost = await hub.lost_after(sess, after)
            conn.write(frame(p.dumps(welcome(sess, settings, lost))))
            hub.metrics.resumes += 1
        else:
            sess = await hub.open("ws")
            after = 0
            conn.write(frame(p.dumps(welcome(sess, settings))))
        sess.transport = "ws"
        sess.last_rx = sess.last_ping = time.monotonic()
        await hub.attach(sess, conn, after)
    except ConnectionResetError:  # the client left during the handshake
        if sess is not None and sess.ws is None and sess.detached_at is None:
            sess.detached_at = time.monotonic()  # the resume window runs; the sweeper ends it
        return _taken_over()
    except Exception as exc:  # noqa: BLE001 - the backend failed (cluster: Redis unreachable or overloaded)
        log.warning("could not open or resume a session", extra={"error": str(exc)})
        if sess is not None and sess.ws is None and sess.detached_at is None:
            sess.detached_at = time.monotonic()
        try:
            conn.write(frame(p.dumps(p.error(p.UNAVAILABLE, "cluster backend unreachable; try again"))))
        except ConnectionResetError:
            pass
        conn.hang_up(CLOSE_TRY_AGAIN, b"try again later")
        return _taken_over()
    conn.start(sess)
    return _taken_over()


def _taken_over() -> web.Response:
    """What the handler returns once the socket is taken over: aiohttp tries to
    send it on a connection it no longer has, and lets it go."""
    return web.Response(status=101)


class Peer(Connection):
    """The WebSocket of one session: frames in -> hub, close -> detach.

    Nothing is read from the client before ``start``: ``welcome`` (and on a
    resume, the replay) goes out first, then frames are parsed, the ones that
    came with the upgrade request first.

    Messages are handled one after the other, in order. With the in-memory
    hub (``hub.inline``) a message is handled right in ``data_received``: no
    task, no wake-up. Hubs that wait on a backend get a task per burst of
    messages, which ends when the burst is done.
    """

    __slots__ = ("hub", "settings", "sess", "backlog", "started", "gone")

    def __init__(self, hub, settings) -> None:
        super().__init__(HARD_FRAME_LIMIT)
        self.hub = hub
        self.settings = settings
        self.sess: Session | None = None
        self.backlog: deque | None = None   # work waiting behind a running task
        self.started = False
        self.gone: tuple[int | None] | None = None  # (close code,) when it closed before start

    @property
    def session(self) -> Session:
        """The session, which ``start`` sets before a frame is read or a close handled."""
        assert self.sess is not None
        return self.sess

    def start(self, sess: Session) -> None:
        """The session is attached and welcomed: detach it if the socket went meanwhile,
        else start reading."""
        self.sess = sess
        self.started = True
        if self.gone is not None:
            self._run(self._closed(self.gone[0]))
        else:
            self.listen()

    # -- frames in ---------------------------------------------------------------

    def on_message(self, kind: WSMsgType, payload: bytes | bytearray) -> None:
        sess = self.sess
        assert sess is not None  # nothing is read before start()
        now = sess.last_rx = time.monotonic()
        # The rate limit applies as frames are parsed, before any work is queued: a flood costs
        # a bucket check per message, and the close stops parsing what is left of its input.
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            strikes = self.hub.over_limit(sess, now)
            if strikes > self.settings.rate_limit_burst:
                log.warning("closing flooding peer", extra={"peer": sess.id})
                self.end(WSCloseCode.POLICY_VIOLATION, b"rate limit")  # after the work already queued
                return
            if strikes:
                self._run(self.hub.refuse(sess, strikes))
                return
        if kind is WSMsgType.TEXT:
            self._run(self._text(sess, payload, now))
        elif kind is WSMsgType.BINARY:
            self._run(self.hub.error(sess, p.BAD_MESSAGE, "binary frames are not part of the protocol; send JSON text"))

    async def _text(self, sess: Session, data: bytes | bytearray, now: float) -> None:
        hub, limit = self.hub, self.settings.max_message_size
        if len(data) > limit:
            if self._utf8(data):
                await hub.error(sess, p.TOO_LARGE, f"message is larger than {limit} bytes")
            return
        try:
            obj = loads(data)  # valid JSON is valid UTF-8: orjson checks
        except JSONDecodeError as exc:
            if self._utf8(data):
                await hub.error(sess, p.BAD_JSON, f"not valid JSON: {exc.msg}")
            return
        await hub.handle(sess, obj, now)  # the rate limit applied on arrival (on_message)

    def end(self, code: int, why: bytes = b"", client_code: int | None = None) -> bool:
        """Close for what the client sent, after the work already queued: the answers to
        the messages before the close (or the bad frame) go out first. Nothing more is
        parsed meanwhile."""
        if self.backlog is None:
            return super().end(code, why, client_code)
        self.stop_reading()
        self._run(self._end(code, why, client_code))
        return False

    async def _end(self, code: int, why: bytes, client_code: int | None) -> None:
        super().end(code, why, client_code)

    def _utf8(self, data: bytes | bytearray) -> bool:
        """RFC 6455 8.1: a text frame that is not UTF-8 fails the connection (1007). At once:
        this runs in turn, so what came before is answered, and what came after is not."""
        try:
            data.decode()
        except UnicodeDecodeError:
            super().end(WSCloseCode.INVALID_TEXT, b"text frame is not UTF-8")
            return False
        return True

    def on_close(self, code: int | None) -> None:
        if not self.started:
            self.gone = (code,)
            return
        self._run(self._closed(code))

    async def _closed(self, code: int | None) -> None:
        sess, hub = self.session, self.hub
        await hub.detach(sess, self)
        if code == WSCloseCode.OK and not sess.closed and sess.ws is None:
            await hub.close(sess)  # the client hung up on purpose: no resume

    # -- in order, inline when the hub allows ----------------------------------------

    def _run(self, coro) -> None:
        if self.backlog is not None:  # a task is still on earlier work
            self.backlog.append(coro)
            return
        if self.hub.inline:
            try:
                waiting_on = coro.send(None)
            except StopIteration:
                return
            except Exception:
                log.exception("message handling failed", extra={"peer": self.session.id})
                return
            self.backlog = deque()  # it had to wait after all: finish it in a task
            self.hub.spawn(self._work(_finish(coro, waiting_on)))
        else:
            self.backlog = deque()
            self.hub.spawn(self._work(coro))

    async def _work(self, coro) -> None:
        backlog = self.backlog
        try:
            while True:
                try:
                    await coro
                except Exception:
                    log.exception("message handling failed", extra={"peer": self.session.id})
                if not backlog:
                    return
                coro = backlog.popleft()
        finally:
            self.backlog = None


async def _finish(coro, waiting_on) -> None:
    """Run to its end a coroutine that was stepped by hand and now waits on ``waiting_on``."""
    while True:
        try:
            await (waiting_on if waiting_on is not None else asyncio.sleep(0))
        except Exception:  # noqa: BLE001 - the coroutine gets the outcome when it resumes
            pass
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
