"""A minimal, fast WebSocket client for load generation (RFC 6455, text frames).

Why not aiohttp's or websockets' client: the load generator must not be the
bottleneck, and a benchmark client only ever sends the same few frames. Here
each connection builds its (masked) frames once and sends them with one
``transport.write``; incoming frames are parsed in ``data_received`` and
handed to a plain callback, with no coroutine or task per message. On uvloop
one core drives well over 100k frames/s this way (``bench/relay.py
--client-check`` compares it with aiohttp's client).

Only what the benchmarks need: text frames out, text/ping/close in, no
fragmentation, no extensions. Everything else speaks the protocol through the
app's reference client, ``signaling.client``; that one costs the generator about
twice the CPU per relayed message (bench/README.md, "Why the load generator is
not the shared client"), which is why this hot loop stays separate.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl as ssl_module
import struct
from collections.abc import Callable

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` (done once per prepared frame)."""
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = OP_TEXT, key: bytes | None = None) -> bytes:
    """One complete, masked client frame (FIN set) carrying ``payload``."""
    key = key if key is not None else os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + key + mask(payload, key)


class WSClient(asyncio.Protocol):
    """One client connection. ``on_text(payload: bytes)`` gets every text frame."""

    __slots__ = ("transport", "buf", "on_text", "handshake", "opened", "closed", "key", "frames_in")

    def __init__(self, path_and_query: str, host: str, on_text: Callable[[bytes], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.on_text = on_text
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.handshake = (
            f"GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.frames_in = 0

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.handshake)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.opened.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(f"handshake refused: {status.decode(errors='replace')}"))
                self.transport.close()
                return
            self.opened.set_result(None)
        on_text = self.on_text
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            hdr = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if end - pos < hdr + n:
                break
            payload = bytes(buf[pos + hdr : pos + hdr + n])  # servers never mask
            pos += hdr + n
            op = b0 & 0x0F
            if op == OP_TEXT:
                self.frames_in += 1
                if on_text is not None:
                    on_text(payload)
            elif op == OP_PING:
                self.transport.write(client_frame(payload, OP_PONG))
            elif op == OP_CLOSE:
                self.transport.close()
                break
        if pos:
            del buf[:pos]

    # -- helpers -----------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        self.transport.write(client_frame(payload))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(struct.pack("!H", 1000), OP_CLOSE))
            self.transport.close()


async def connect(host: str, port: int, path: str, on_text: Callable[[bytes], None] | None = None,
                  local_addr: tuple[str, int] | None = None, timeout: float = 10.0,
                  ssl: ssl_module.SSLContext | None = None, server_name: str | None = None) -> WSClient:
    """An open WebSocket to ``host:port`` (TLS with ``ssl``). ``server_name`` is the Host header
    and the TLS SNI name (default ``host:port``/``host``): a proxy answers only its own names."""
    loop = asyncio.get_running_loop()
    host_header = f"{server_name or host}:{port}"
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: WSClient(path, host_header, on_text), host, port, local_addr=local_addr,
                               ssl=ssl, server_hostname=(server_name or host) if ssl else None),
        timeout,
    )
    await asyncio.wait_for(proto.opened, timeout)
    return proto
