"""A lean server-side WebSocket connection (RFC 6455), driven by callbacks.

aiohttp answers the HTTP upgrade request; then ``take_over`` writes the
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
or not), ping/pong/close, no extensions (permessage-deflate is not offered).
Protocol errors close with 1002, messages above ``max_size`` with 1009.
Writes never wait: a peer that stops reading while more than
``MAX_BUFFERED`` bytes wait for it is cut off (its session keeps the
messages for a resume).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import struct

from aiohttp import WSMsgType, web
from aiohttp.http import WS_KEY

try:  # the C version aiohttp uses itself
    from aiohttp._websocket.helpers import websocket_mask
except ImportError:  # pragma: no cover - layout of another aiohttp version
    def websocket_mask(mask: bytes, data: bytearray) -> None:
        n = len(data)
        k = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
        data[:] = (int.from_bytes(data, "little") ^ k).to_bytes(n, "little")

log = logging.getLogger("signaling.ws")

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
PROTOCOL_ERROR, MESSAGE_TOO_BIG = 1002, 1009
NO_STATUS = 1005            # a close frame without a code
LINGER = 2.0                # seconds a lingering close waits for the client to close its side
MAX_BUFFERED = 4 << 20      # bytes queued for a peer that does not read
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")
_CLOSE = struct.Struct("!H")


def frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One unmasked server frame with FIN set."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return _LEN16.pack(0x80 | opcode, 126, n) + payload
    return _LEN64.pack(0x80 | opcode, 127, n) + payload


class Connection(asyncio.Protocol):
    """One WebSocket after the handshake. Subclasses implement the ``on_*`` hooks.

    The same interface as the parts of ``aiohttp.web.WebSocketResponse`` the
    hub uses: ``send_frame``, ``ping``, ``close`` (coroutines that never
    wait), ``closed``.
    """

    __slots__ = ("transport", "max_size", "buf", "frag_op", "frags", "frag_size", "closing", "deaf")

    def __init__(self, max_size: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.max_size = max_size
        self.buf = bytearray()      # an incomplete frame (grows in place: no quadratic copying)
        self.frag_op = 0            # opcode of a fragmented message in progress
        self.frags: list[bytes] | None = None
        self.frag_size = 0          # bytes in frags so far
        self.closing = False        # we sent a close frame or saw the socket go
        self.deaf = False           # stop_reading() was called: input is neither read nor parsed

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
            self.frags = None
            self.on_close(client_code)

    def pause_writing(self) -> None:  # writes never wait; see write()
        pass

    def resume_writing(self) -> None:
        pass

    def stop_reading(self) -> None:
        """Ignore everything the client sends from now on: the rest of the input at hand is
        not parsed, and the socket is not read (TCP holds the client back) until the close."""
        self.deaf = True
        self.buf = bytearray()
        self.frags = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
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
            opcode = b0 & 0x0F
            if b0 & 0x70 or not b1 & 0x80:  # reserved bits (no extensions) or an unmasked client frame
                self._fail(b"protocol error")
                return
            if n > self.max_size or (opcode == OP_CONT and n + self.frag_size > self.max_size):
                self.hang_up(MESSAGE_TOO_BIG, b"message too big")
                return
            stop = head + 4 + n
            if stop > end:
                break
            payload = bytearray(data[head + 4:stop])
            if n:
                websocket_mask(bytes(data[head:head + 4]), payload)
            pos = stop
            if not self._frame(b0 & 0x80, opcode, payload):
                return
        if pos < end:
            self.buf = bytearray(data[pos:]) if pos or not isinstance(data, bytearray) else data

    def _frame(self, fin: int, opcode: int, payload: bytearray) -> bool:
        """One unmasked frame; False when the connection is over."""
        if opcode == OP_TEXT or opcode == OP_BINARY:
            if self.frags is not None:
                return self._fail(b"expected a continuation frame")
            if fin:
                self.on_message(WSMsgType.TEXT if opcode == OP_TEXT else WSMsgType.BINARY, payload)
            else:
                self.frag_op, self.frags, self.frag_size = opcode, [bytes(payload)], len(payload)
        elif opcode == OP_CONT:
            if self.frags is None:
                return self._fail(b"unexpected continuation frame")
            self.frags.append(bytes(payload))
            self.frag_size += len(payload)
            if fin:
                whole, self.frags = b"".join(self.frags), None
                self.on_message(WSMsgType.TEXT if self.frag_op == OP_TEXT else WSMsgType.BINARY, whole)
        elif opcode >= OP_CLOSE and (not fin or len(payload) > 125):
            return self._fail(b"bad control frame")
        elif opcode == OP_PING:
            self.write(frame(bytes(payload), OP_PONG))
            self.on_message(WSMsgType.PING, payload)
        elif opcode == OP_PONG:
            self.on_message(WSMsgType.PONG, payload)
        elif opcode == OP_CLOSE:
            code = _CLOSE.unpack_from(payload)[0] if len(payload) >= 2 else NO_STATUS
            self.hang_up(code if len(payload) >= 2 else 1000, client_code=code)
            return False
        else:
            return self._fail(b"unknown opcode")
        return not (self.closing or self.deaf)

    def _fail(self, why: bytes) -> bool:
        self.hang_up(PROTOCOL_ERROR, why)
        return False


def take_over(request: web.Request, conn: Connection) -> None:
    """Answer the upgrade with 101 and hand the socket from aiohttp to ``conn``.

    Raises ``web.HTTPBadRequest`` (before anything is written) when the request
    is no valid WebSocket handshake. Afterwards aiohttp has forgotten the
    connection: the handler must not write a response (it returns one, which
    aiohttp fails to send and ignores).
    """
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise web.HTTPBadRequest(text="not a WebSocket handshake")
    key = request.headers["Sec-WebSocket-Key"]
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_KEY).digest())
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
    # aiohttp lets go: no transport to close, out of the server's connection list,
    # keep-alive timer cancelled. Its handler task ends when ours returns.
    handler.transport = None
    # The handler task goes on (the caller still awaits the hub): keep aiohttp
    # from cancelling it as it would a request whose client left, which it does
    # when run with handler_cancellation=True (its test server does).
    handler._task_handler = None
    handler.connection_lost(None)
    transport.resume_reading()  # in case aiohttp had paused it for buffered bytes
    if tail:
        conn.data_received(tail)
