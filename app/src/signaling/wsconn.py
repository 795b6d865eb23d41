"""A lean server-side WebSocket connection (RFC 6455), driven by callbacks.

aiohttp parses the HTTP upgrade request; ``take_over`` checks it, writes the
``101`` answer itself and moves the TCP transport from aiohttp's request
handler to a ``Connection``, and aiohttp forgets the connection. Why: with
aiohttp's ``WebSocketResponse`` an idle peer keeps its whole request alive
(headers, parser, handler, two tasks and their coroutine frames, reader
queue, writer): about 13 KiB each, above the 10 KiB budget for an idle
connection (bench/idle.py). A ``Connection`` is one object with slots; frames
are parsed in ``data_received`` and handed to ``on_message`` with no task
and no await per message, which is also what makes relaying fast
(bench/relay.py).

What it speaks: masked client frames, text and binary messages (fragmented
or not), ping/pong/close, no extensions (permessage-deflate is not offered),
no subprotocols. docs/protocol.md ("WebSocket framing") lists every answer:

* the handshake: a GET over HTTP/1.1 with ``Upgrade: websocket``,
  ``Connection: upgrade``, a 16-byte key and no body, else 400; a
  ``Sec-WebSocket-Version`` other than 13 (or none) gets 426 naming 13;
* protocol errors close with 1002 (a bad close frame too), text or a close
  reason that is not UTF-8 with 1007 (text: ``ws.Peer``), messages above
  ``max_size`` with 1009, judged by the frame header before its payload;
* memory: a message being assembled is one ``bytearray`` (never more than
  ``max_size``), whatever the number of its fragments;
* time and frames: a fragmented message must be complete within
  ``FRAGMENT_DEADLINE`` seconds, and frames that are not a whole message by
  themselves (fragments, pings, pongs, closes) are limited to ``FRAME_RATE``
  per second with a burst of ``FRAME_BURST``; either breach closes with 1008.
  Whole messages are the session's rate limit's (ws.py).

Nothing is read from the client until ``listen()``: what arrived with the
upgrade request waits, so nothing is answered before ``welcome``.

Writes never wait: a peer that stops reading while more than
``MAX_BUFFERED`` bytes wait for it is cut off (its session keeps the
messages for a resume).

aiohttp's parts used beyond its public API are listed in ``missing_internals``;
``check_aiohttp`` refuses to start without them (app.py, __main__.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import importlib
import logging
import struct
import time
from typing import Protocol

import aiohttp
from aiohttp import WSMsgType, web

try:  # the C version aiohttp uses itself; check_aiohttp() says so if it is gone
    from aiohttp._websocket.helpers import websocket_mask
except ImportError:  # pragma: no cover - refused at start-up

    def websocket_mask(mask: bytes, data: bytearray) -> None:
        raise AiohttpMismatch("aiohttp._websocket.helpers.websocket_mask is missing")

log = logging.getLogger("signaling.ws")

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
PROTOCOL_ERROR, INVALID_TEXT, POLICY_VIOLATION, MESSAGE_TOO_BIG = 1002, 1007, 1008, 1009
NO_STATUS = 1005            # a close frame without a code
LINGER = 2.0                # seconds a lingering close waits for the client to close its side
MAX_BUFFERED = 4 << 20      # bytes queued for a peer that does not read
FRAGMENT_DEADLINE = 10.0    # seconds from a message's first fragment to its last
FRAME_RATE = 1000.0         # frames/s that are not a whole message (fragments, control frames)...
FRAME_BURST = 4096          # ...and how many of them at once
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")
_CLOSE = struct.Struct("!H")
_WHOLE_TEXT, _WHOLE_BINARY = 0x80 | OP_TEXT, 0x80 | OP_BINARY  # first byte of an unfragmented message


def frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One unmasked server frame with FIN set."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return _LEN16.pack(0x80 | opcode, 126, n) + payload
    return _LEN64.pack(0x80 | opcode, 127, n) + payload


def close_code_valid(code: int) -> bool:
    """A code a client may send in a close frame (RFC 6455 section 7.4, IANA's registry):
    1000-1003, 1007-1014, and 3000-4999 for libraries and applications. 1004-1006 and 1015
    are reserved or must never be sent; below 1000 and 1016-2999 are not in use."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class Socket(Protocol):
    """What sessions and hubs use of a peer's WebSocket: a ``Connection`` (``ws.Peer``)."""

    async def send_frame(self, payload: bytes, opcode: WSMsgType, /) -> None: ...

    async def ping(self) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class Connection(asyncio.Protocol):
    """One WebSocket after the handshake. Subclasses implement the ``on_*`` hooks.

    The same interface as the parts of ``aiohttp.web.WebSocketResponse`` the
    hub uses: ``send_frame``, ``ping``, ``close`` (coroutines that never
    wait), ``closed``.
    """

    __slots__ = ("transport", "max_size", "buf", "frag_op", "frag", "frag_deadline", "closing", "deaf",
                 "frame_rate", "frame_burst", "tokens", "tokens_at")

    def __init__(self, max_size: int, frame_rate: float = FRAME_RATE, frame_burst: int = FRAME_BURST) -> None:
        self.transport: asyncio.Transport | None = None
        self.max_size = max_size
        self.buf = bytearray()      # an incomplete frame (grows in place: no quadratic copying)
        self.frag_op = 0            # opcode of a fragmented message in progress
        self.frag: bytearray | None = None  # its payload so far (one buffer, however many fragments)
        self.frag_deadline = 0.0    # when it must be complete
        self.closing = False        # we sent a close frame or saw the socket go
        self.deaf = False           # stop_reading() was called: input is neither read nor parsed
        self.frame_rate = frame_rate
        self.frame_burst = frame_burst
        self.tokens: float = frame_burst  # the frame budget (a token bucket), full
        self.tokens_at = 0.0        # when it was last refilled (0: never used)

    # -- hooks -----------------------------------------------------------------

    def on_message(self, kind: WSMsgType, payload: bytes | bytearray) -> None:
        """A complete TEXT, BINARY or PONG message (PINGs are answered here)."""

    def on_close(self, code: int | None) -> None:
        """The connection is gone; ``code`` is the client's close code if it sent one."""

    # -- sending -----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.closing

    async def send_frame(self, payload: bytes, opcode: WSMsgType = WSMsgType.TEXT) -> None:
        self.write(frame(payload, opcode))

    def write(self, data: bytes) -> None:
        transport = self.transport
        if self.closing or transport is None or transport.is_closing():
            raise ConnectionResetError("WebSocket is closed")
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            log.warning("dropping a peer that does not read")
            transport.abort()

    async def ping(self, payload: bytes = b"") -> None:
        self.write(frame(payload, OP_PING))

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """Send a close frame and hang up (no wait for the client's answer)."""
        return self.hang_up(code, message)

    def hang_up(self, code: int, message: bytes = b"", client_code: int | None = None, linger: bool = False) -> bool:
        """Send a close frame and close. ``linger``: half-close instead, and read and drop what
        the client still sends until it closes (at most LINGER seconds). Closing a socket with
        unread input resets it, and the reset can destroy the close frame before the client
        reads it: a client that was still writing (a flood) would see 1006, not our code."""
        if self.closing:
            return False
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(frame(_CLOSE.pack(code) + message[:123], OP_CLOSE))
            if linger and transport.can_write_eof():
                transport.write_eof()
                transport.resume_reading()
                asyncio.get_running_loop().call_later(LINGER, transport.abort)
            else:
                transport.close()
        self._lost(client_code)
        return True

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(None)

    def _lost(self, client_code: int | None) -> None:
        if not self.closing:
            self.closing = True
            self.buf = bytearray()
            self.frag = None
            self.on_close(client_code)

    def pause_writing(self) -> None:  # writes never wait; see write()
        pass

    def resume_writing(self) -> None:
        pass

    def listen(self) -> None:
        """Start reading: first what came with the upgrade request (take_over kept it), then
        the socket. Until then the client's frames wait, unanswered, in TCP's buffers."""
        if self.closing or self.deaf or self.transport is None:
            return
        held, self.buf = self.buf, bytearray()
        if held:
            self.data_received(held)
        if not (self.closing or self.deaf):
            self.transport.resume_reading()

    def stop_reading(self) -> None:
        """Ignore everything the client sends from now on: the rest of the input at hand is
        not parsed, and the socket is not read (TCP holds the client back) until the close."""
        self.deaf = True
        self.buf = bytearray()
        self.frag = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def data_received(self, data: bytes | bytearray) -> None:
        if self.closing or self.deaf:
            return
        if self.buf:  # the rest of a frame arriving in pieces: parse from the growing buffer
            self.buf += data
            data = self.buf
            self.buf = bytearray()
        pos, end = 0, len(data)
        while end - pos >= 2:
            b0, b1 = data[pos], data[pos + 1]
            n = b1 & 0x7F
            head = pos + 2
            if n == 126:
                if end - head < 2:
                    break
                n = (data[head] << 8) | data[head + 1]
                head += 2
            elif n == 127:
                if end - head < 8:
                    break
                n = int.from_bytes(data[head:head + 8], "big")
                head += 8
                if n >> 63:
                    self._fail(b"64-bit length with the most significant bit set")
                    return
            if not b1 & 0x80:
                self._fail(b"unmasked client frame")
                return
            # The header alone decides: a whole text or binary message (the hot path) only
            # needs its size checked; anything else goes through _header, before its payload.
            if b0 == _WHOLE_TEXT or b0 == _WHOLE_BINARY:
                if n > self.max_size:
                    self._too_big()
                    return
            elif not self._header(b0, n):
                return
            stop = head + 4 + n
            if stop > end:
                break
            payload = bytearray(data[head + 4:stop])
            if n:
                websocket_mask(bytes(data[head:head + 4]), payload)
            pos = stop
            if not self._frame(b0 & 0x80, b0 & 0x0F, payload):
                return
        if pos < end:
            self.buf = bytearray(data[pos:]) if pos or not isinstance(data, bytearray) else data

    def _header(self, b0: int, n: int) -> bool:
        """Check the header of a frame that is not a whole text or binary message, as soon as
        it is in (its payload may follow much later, or never); False when the connection is
        over. It may run more than once for a frame that arrives in pieces: no side effects."""
        opcode = b0 & 0x0F
        if b0 & 0x70:
            return self._fail(b"reserved bits set")
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                return self._fail(b"unknown opcode")
            if n > 125:
                return self._fail(b"control frame longer than 125 bytes")
            if not b0 & 0x80:
                return self._fail(b"fragmented control frame")
        elif opcode == OP_CONT:
            if self.frag is None:
                return self._fail(b"unexpected continuation frame")
            if n + len(self.frag) > self.max_size:
                return self._too_big()
        elif opcode > OP_BINARY:
            return self._fail(b"unknown opcode")
        elif self.frag is not None:
            return self._fail(b"expected a continuation frame")
        elif n > self.max_size:
            return self._too_big()
        return True

    def _frame(self, fin: int, opcode: int, payload: bytearray) -> bool:
        """One unmasked frame whose header passed; False when the connection is over."""
        if opcode == OP_TEXT or opcode == OP_BINARY:
            if self.frag is not None:
                return self._fail(b"expected a continuation frame")
            if fin:  # a whole message: the session's rate limit counts these (ws.py)
                self.on_message(WSMsgType.TEXT if opcode == OP_TEXT else WSMsgType.BINARY, payload)
                return not (self.closing or self.deaf)
            if not self._spend():
                return False
            self.frag_op, self.frag = opcode, payload
            self.frag_deadline = time.monotonic() + FRAGMENT_DEADLINE
            return True
        if not self._spend():
            return False
        if opcode == OP_CONT:
            self.frag += payload  # type: ignore[operator]  # (_header checked there is one)
            if fin:
                whole, self.frag = self.frag, None
                self.on_message(WSMsgType.TEXT if self.frag_op == OP_TEXT else WSMsgType.BINARY, whole)
        elif opcode == OP_PING:
            self.write(frame(bytes(payload), OP_PONG))
            self.on_message(WSMsgType.PING, payload)
        elif opcode == OP_PONG:
            self.on_message(WSMsgType.PONG, payload)
        else:  # OP_CLOSE (_header refused the others)
            return self._close_frame(payload)
        return not (self.closing or self.deaf)

    def _spend(self) -> bool:
        """Take one frame that is not a whole message from the budget, and check that a
        fragmented message in progress is still within its deadline."""
        now = time.monotonic()
        if self.frag is not None and now > self.frag_deadline:
            return self._policy(b"fragmented message not completed in time")
        tokens = self.tokens
        if self.tokens_at:
            tokens = min(float(self.frame_burst), tokens + (now - self.tokens_at) * self.frame_rate)
        if tokens < 1.0:
            return self._policy(b"too many frames")
        self.tokens, self.tokens_at = tokens - 1.0, now
        return True

    def _close_frame(self, payload: bytearray) -> bool:
        """The client's close frame: answer with its code (1000 when it has none), or fail
        the connection when the frame is malformed (RFC 6455 sections 5.5.1, 7.4.1)."""
        if not payload:
            return self.end(1000, client_code=NO_STATUS)
        if len(payload) == 1:
            return self._fail(b"close frame with a 1-byte payload")
        code = _CLOSE.unpack_from(payload)[0]
        if not close_code_valid(code):
            return self._fail(b"invalid close code")
        try:
            payload[2:].decode()
        except UnicodeDecodeError:
            return self.end(INVALID_TEXT, b"close reason is not UTF-8")
        return self.end(code, client_code=code)

    def end(self, code: int, why: bytes = b"", client_code: int | None = None) -> bool:
        """Close because of what the client sent: its close frame (``client_code``), or a
        frame that fails the connection. A lingering close (see hang_up), so the client
        reads our code. Returns False. A subclass that answers messages in tasks lets
        them finish first (ws.Peer)."""
        self.hang_up(code, why, client_code=client_code, linger=True)
        return False

    def _fail(self, why: bytes) -> bool:
        return self.end(PROTOCOL_ERROR, why)

    def _too_big(self) -> bool:
        return self.end(MESSAGE_TOO_BIG, b"message too big")

    def _policy(self, why: bytes) -> bool:
        log.warning("closing a peer: %s", why.decode())
        return self.end(POLICY_VIOLATION, why)


# -- the handshake -------------------------------------------------------------------


def handshake_key(request: web.Request) -> str:
    """The client's ``Sec-WebSocket-Key`` if ``request`` is a WebSocket handshake we accept
    (RFC 6455 section 4.2.1); else raise the HTTP error to answer with (section 4.2.2)."""
    if request.method != "GET":
        raise web.HTTPBadRequest(text="a WebSocket handshake is a GET request")
    if request.version < (1, 1):
        raise web.HTTPBadRequest(text="a WebSocket handshake needs HTTP/1.1")
    headers = request.headers
    upgrade = headers.get("Upgrade", "")
    if not upgrade.isascii() or upgrade.strip().lower() != "websocket":
        raise web.HTTPBadRequest(text="not a WebSocket handshake: Upgrade: websocket is missing")
    tokens = {t.strip().lower() for value in headers.getall("Connection", ()) for t in value.split(",")}
    if "upgrade" not in tokens:
        raise web.HTTPBadRequest(text="not a WebSocket handshake: Connection: upgrade is missing")
    if request.body_exists:
        raise web.HTTPBadRequest(text="a WebSocket handshake has no body")
    if headers.getall("Sec-WebSocket-Version", ()) != ["13"]:
        raise web.HTTPUpgradeRequired(text="WebSocket version 13 only (RFC 6455)",
                                      headers={"Sec-WebSocket-Version": "13", "Upgrade": "websocket"})
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid = False
    if not valid or len(headers.getall("Sec-WebSocket-Key")) != 1:
        raise web.HTTPBadRequest(text="Sec-WebSocket-Key must be 16 bytes in base64")
    return key


def take_over(request: web.Request, conn: Connection) -> None:
    """Answer the upgrade with 101 and hand the socket from aiohttp to ``conn``.

    Raises an ``web.HTTPException`` (before anything is written) when the
    request is no valid WebSocket handshake. Afterwards aiohttp has forgotten
    the connection: the handler must not write a response (it returns one,
    which aiohttp fails to send and ignores). ``conn`` reads nothing until its
    ``listen()``: the frames that came with the request wait in its buffer.
    """
    key = handshake_key(request)
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest())
    handler = request.protocol
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client went away during the handshake")
    tail = handler._message_tail  # frames the client sent right behind its request
    handler._message_tail = b""
    transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    transport.set_protocol(conn)
    conn.connection_made(transport)
    # Nothing is read until conn.listen(): not before welcome is written.
    transport.pause_reading()
    conn.buf = bytearray(tail)
    # aiohttp lets go: no transport to close, out of the server's connection list,
    # keep-alive timer cancelled. Its handler task ends when ours returns.
    handler.transport = None
    # The handler task goes on (the caller still awaits the hub): keep aiohttp
    # from cancelling it as it would a request whose client left, which it does
    # when run with handler_cancellation=True (its test server does).
    handler._task_handler = None
    handler.connection_lost(None)


# -- aiohttp's internals ---------------------------------------------------------------


class AiohttpMismatch(RuntimeError):
    """The installed aiohttp lacks what take_over and Connection rely on."""


def missing_internals() -> list[str]:
    """What this module uses of aiohttp beyond its public API and cannot find in the
    installed version (empty when all is there). app/pyproject.toml bounds aiohttp to
    versions CI ran; this catches an install outside them."""
    missing = []
    web_protocol = importlib.import_module("aiohttp.web_protocol")
    handler = getattr(web_protocol, "RequestHandler", None)
    # Slots of the request handler that take_over reads and resets, and the handler's own
    # connection_lost (not the one of its base class), which it calls to make aiohttp let go.
    for name in ("_message_tail", "_task_handler", "transport"):
        if handler is None or not hasattr(handler, name):
            missing.append(f"aiohttp.web_protocol.RequestHandler.{name}")
    if handler is None or "connection_lost" not in vars(handler):
        missing.append("aiohttp.web_protocol.RequestHandler.connection_lost")
    for name in ("protocol", "transport"):
        if not hasattr(web.BaseRequest, name):
            missing.append(f"aiohttp.web.BaseRequest.{name}")
    try:
        mask = importlib.import_module("aiohttp._websocket.helpers").websocket_mask
        probe = bytearray(b"\x00\x01\x02\x03\x04")
        mask(b"\x01\x01\x01\x01", probe)  # (bytes, bytearray), in place, as data_received calls it
        works = probe == b"\x01\x00\x03\x02\x05"
    except (ImportError, AttributeError, TypeError):
        works = False
    if not works:
        missing.append("aiohttp._websocket.helpers.websocket_mask(bytes, bytearray)")
    return missing


def check_aiohttp() -> None:
    """Raise AiohttpMismatch naming the aiohttp version and what it lacks, if anything."""
    missing = missing_internals()
    if missing:
        raise AiohttpMismatch(
            f"aiohttp {aiohttp.__version__} lacks what signaling's WebSocket layer (wsconn.py) relies on: "
            f"{', '.join(missing)}. Install the aiohttp version app/pyproject.toml allows."
        )
