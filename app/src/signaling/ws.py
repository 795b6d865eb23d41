"""Transport A: WebSocket signaling at ``GET /ws`` (docs/protocol.md)."""

from __future__ import annotations

import logging
import time

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from . import protocol as p
from .ice import ice_servers
from .keys import HUB, SETTINGS
from .session import Session
from .web_util import error_response, origin_allowed, query_int

log = logging.getLogger("signaling.ws")

# Frames above this are cut off by aiohttp with close code 1009; frames
# between max_message_size and this get a `too-large` error and the
# connection stays up.
HARD_FRAME_LIMIT = 1 << 20
CLOSE_UNAUTHORIZED = 4401


def welcome(sess: Session, settings, lost: int | None = None) -> dict:
    """The ``welcome`` object; also the body of ``POST /api/sessions``."""
    msg = {
        "type": "welcome",
        "id": sess.id,
        "token": sess.token,
        "heartbeat": settings.heartbeat,
        "resume": settings.resume_window,
        "ice_servers": ice_servers(settings, sess.id, time.time()),
    }
    if lost is not None:  # a resume
        msg.update(resumed=True, room=sess.room and sess.room.name, role=sess.role, lost=lost)
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

    ws = web.WebSocketResponse(autoping=False, max_msg_size=HARD_FRAME_LIMIT, compress=False)
    await ws.prepare(request)

    if token is not None:
        sess = await hub.resume(token)
        if sess is None:
            hub.metrics.resume_failures += 1
            await ws.send_frame(p.dumps(p.error(p.UNAUTHORIZED, "unknown or expired resume token")), WSMsgType.TEXT)
            await ws.close(code=CLOSE_UNAUTHORIZED, message=b"resume refused")
            return ws
        after = sess.sent if ack is None else ack
        lost = await hub.lost_after(sess, after)
        await ws.send_frame(p.dumps(welcome(sess, settings, lost)), WSMsgType.TEXT)
        hub.metrics.resumes += 1
    else:
        sess = await hub.open("ws")
        after = 0
        await ws.send_frame(p.dumps(welcome(sess, settings)), WSMsgType.TEXT)
    sess.transport = "ws"
    sess.last_rx = sess.last_ping = time.monotonic()
    await hub.attach(sess, ws, after)
    client_code = None
    try:
        client_code = await _read_loop(hub, settings, sess, ws)
    finally:
        await hub.detach(sess, ws)
        if client_code == WSCloseCode.OK and not sess.closed and sess.ws is None:
            await hub.close(sess)  # the client hung up on purpose: no resume
    return ws


async def _read_loop(hub, settings, sess: Session, ws: web.WebSocketResponse) -> int | None:
    """Serve one socket; return the close code the client sent, if it closed first."""
    receive = ws.receive
    limit = settings.max_message_size
    loads = orjson.loads
    monotonic = time.monotonic
    TEXT, PING, PONG = WSMsgType.TEXT, WSMsgType.PING, WSMsgType.PONG
    while True:
        msg = await receive()
        kind = msg.type
        now = sess.last_rx = monotonic()
        if kind is TEXT:
            data = msg.data
            if len(data) > limit or (len(data) * 4 > limit and len(data.encode()) > limit):
                await hub.error(sess, p.TOO_LARGE, f"message is larger than {limit} bytes")
                continue
            try:
                obj = loads(data)
            except orjson.JSONDecodeError as exc:
                await hub.error(sess, p.BAD_JSON, f"not valid JSON: {exc.msg}")
                continue
            if not await hub.receive(sess, obj, now):
                log.warning("closing flooding peer", extra={"peer": sess.id})
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"rate limit")
                return None
        elif kind is PING:
            await ws.pong(msg.data)
        elif kind is PONG:
            pass
        elif kind is WSMsgType.BINARY:
            await hub.error(sess, p.BAD_MESSAGE, "binary frames are not part of the protocol; send JSON text")
        elif kind is WSMsgType.CLOSE:
            return msg.data
        else:  # CLOSING (we closed it), CLOSED, ERROR
            return None

