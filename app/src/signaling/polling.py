"""Transport B: HTTP long-polling under ``/api/sessions`` (docs/protocol.md).

Same sessions, same mailboxes as the WebSocket transport: a polling peer and
a WebSocket peer talk to each other, and a polling session may later resume
over a WebSocket with its token.
"""

from __future__ import annotations

import time

from aiohttp import web

from . import protocol as p
from .keys import HUB, SETTINGS
from .session import Session
from .web_util import error_response, json_response, query_int
from .ws import welcome

MAX_BATCH = 64          # messages in one POST
MAX_WAIT = 30           # seconds a GET may hang
DEFAULT_WAIT = 25


async def _session(request: web.Request) -> Session | None:
    """The session named in the path, if the bearer token is its own."""
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer":
        return None
    sess = await request.app[HUB].find(token.strip())
    if sess is None or sess.id != request.match_info["id"]:
        return None
    return sess


def _unauthorized() -> web.Response:
    return error_response(p.UNAUTHORIZED, "missing, wrong or expired session token")


async def create(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    if hub.draining:
        return error_response(p.FORBIDDEN, "this instance is shutting down", status=503)
    sess = await hub.open("poll")
    body = welcome(sess, request.app[SETTINGS])
    del body["type"]
    return json_response(body, status=201)


async def send(request: web.Request) -> web.Response:
    sess = await _session(request)
    if sess is None:
        return _unauthorized()
    hub = request.app[HUB]
    limit = request.app[SETTINGS].max_message_size
    if request.content_length is not None and request.content_length > limit * MAX_BATCH:
        return error_response(p.TOO_LARGE, f"body is larger than {limit * MAX_BATCH} bytes")
    raw = await request.content.read(limit * MAX_BATCH + 1)
    try:
        items = p.parse_batch(raw, limit, MAX_BATCH)
    except p.ProtocolError as exc:
        return error_response(exc.code, exc.message)
    now = time.monotonic()
    for item in items:
        if len(raw) > limit and p.encoded_size(item) > limit:
            await hub.error(sess, p.TOO_LARGE, f"message is larger than {limit} bytes")
            continue
        if not await hub.receive(sess, item, now):
            await hub.close(sess)
            return error_response(p.RATE_LIMITED, "persistent flooding: session closed")
    return json_response({"accepted": len(items), "received": sess.received}, status=202)


async def receive(request: web.Request) -> web.Response:
    sess = await _session(request)
    if sess is None:
        return _unauthorized()
    hub = request.app[HUB]
    try:
        wait = query_int(request, "wait", DEFAULT_WAIT, 0, MAX_WAIT)
        ack = query_int(request, "ack", None, 0, 2**63 - 1)
    except p.ProtocolError as exc:
        return error_response(exc.code, exc.message)
    if sess.waiter is not None and not sess.waiter.done():
        sess.waiter.set_result(False)  # a newer poll supersedes the one still hanging
    sess.transport = "poll"
    sess.polling += 1
    sess.detached_at = None
    try:
        frames, lost = await hub.poll(sess, sess.sent if ack is None else ack, ack, wait)
    finally:
        sess.polling -= 1
        if sess.polling == 0:
            sess.detached_at = time.monotonic()
    headers = {"Cache-Control": "no-store"}
    if lost:
        headers["Signaling-Lost"] = str(lost)
    return web.Response(body=b"[" + b",".join(frames) + b"]", content_type="application/json", headers=headers)


async def delete(request: web.Request) -> web.Response:
    sess = await _session(request)
    if sess is None:
        return _unauthorized()
    await request.app[HUB].close(sess)
    return web.Response(status=204)
