"""RFC 6455 conformance of the signaling WebSocket, frame by frame (issue 11).

One suite, written once, run on three paths: against the app directly on both
hubs (app/tests/test_rfc6455.py: real ``python -m signaling`` processes, the
Redis one with Debian's redis-server), and through nginx and Apache with TLS on
a deployment's published 443 (molecule/default and molecule/apache,
``tests/test_ws_conformance.py``). Nothing here but the standard library: a raw
client (``Target``, ``Handshake``, ``WS``) that writes every byte itself, and
the cases (``CASES``), grouped as the Autobahn|Testsuite groups them:

H  the opening handshake (RFC 6455 section 4): what is accepted, what gets
   400 or 426, frames that come with the request wait for ``welcome``
1  framing: payload lengths and their encodings, masking, header-only verdicts
2  pings and pongs
3  reserved bits
4  opcodes
5  fragmentation
6  UTF-8 in text messages
7  close handling: codes, reasons, what follows a close
9  limits: message sizes, the fragment deadline, the frame budget, and the
   server's memory under a fragment flood and under one-byte fragments

The server is no echo server, so every case observes it through the
signaling protocol (docs/protocol.md): a JSON ``ping`` gets a ``pong`` with the
same ``ref``, text that is not JSON gets ``bad-json``, a binary message
``bad-message``, an oversized one ``too-large``; a WebSocket ping gets its
pong; a broken frame gets the close code of the RFC.

Through a proxy some answers differ, legitimately: the proxy reads the
handshake first and may answer it itself or rewrite it before the app sees it.
Such cases say what each path answers (``APP``, ``NGINX``, ``APACHE``) and why.
After the 101 both proxies pass the frames through unchanged, so the frame
cases expect the same everywhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

APP, NGINX, APACHE = "app", "nginx", "apache"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# The server's limits (docs/protocol.md, "WebSocket framing"); the cases prove them.
MESSAGE_LIMIT = 65536          # max_message_size (default): bigger messages get too-large
FRAME_LIMIT = 1 << 20          # bigger messages close with 1009
FRAGMENT_DEADLINE = 10.0       # seconds from a message's first fragment to its last
FRAME_BURST = 4096             # frames that are not whole messages, at once...
FRAME_RATE = 1000              # ...and per second
# A connection may hold one message being assembled (at most FRAME_LIMIT) plus a
# small constant: the bound on the growth of the server's resident set, in KiB,
# during one attack. Measured growth with the bound in place: under 1 MiB. Without
# it (a list entry per fragment) the floods below cost 16 MiB and more.
MEMORY_BOUND_KIB = FRAME_LIMIT // 1024 + 3 * 1024

TIMEOUT = 5.0                  # seconds to wait for any one answer


# -- where to connect, and how to read the server's memory ----------------------------------------------------------


class Memory(NamedTuple):
    rss: int   # VmRSS, KiB
    hwm: int   # VmHWM (the peak since the last reset_peak), KiB


def parse_status(text: str) -> Memory:
    """VmRSS and VmHWM from the text of /proc/PID/status."""
    values = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()
              if line.startswith(("VmRSS:", "VmHWM:"))}
    return Memory(values["VmRSS"], values["VmHWM"])


@dataclass
class Target:
    """A WebSocket endpoint: where to connect, what to send as Host, and which path
    (``APP``, ``NGINX`` or ``APACHE``) answers. ``memory`` and ``reset_peak`` read the
    server processes (every app instance behind a proxy) and reset their peak
    resident sets; the memory cases need them, and hand what they measured to
    ``record`` if there is one."""

    host: str
    port: int
    via: str = APP
    tls: ssl.SSLContext | None = None
    server_name: str | None = None          # SNI; default host
    host_header: str | None = None          # default host:port
    path: str = "/ws"
    memory: Callable[[], dict[str, Memory]] | None = None
    reset_peak: Callable[[], None] | None = None
    record: Callable[[str, dict[str, Any]], None] | None = None  # keeps a memory case's figures
    interval: float = 0.0   # seconds between connections at least (a proxy's per-address rate limit)
    _last: float = field(default=0.0, repr=False)

    @property
    def authority(self) -> str:
        return self.host_header or f"{self.host}:{self.port}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        wait = self._last + self.interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last = time.monotonic()
        return await asyncio.wait_for(asyncio.open_connection(
            self.host, self.port, ssl=self.tls, server_hostname=(self.server_name or self.host) if self.tls else None,
            limit=1 << 21), TIMEOUT)


# -- frames --------------------------------------------------------------------------------------------------------


def client_frame(payload: bytes = b"", opcode: int = TEXT, *, fin: bool = True, rsv: int = 0,
                 masked: bool = True, length: int | None = None) -> bytes:
    """One client frame, masked unless told otherwise. ``length`` announces another
    payload length than ``payload``'s (for header-only cases); ``rsv`` is or-ed into
    the first byte (0x40, 0x20, 0x10)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ k).to_bytes(n, "little")


def fragments(payload: bytes, size: int, opcode: int = TEXT) -> list[bytes]:
    """``payload`` as a fragmented message of ``size``-byte fragments (at least two)."""
    parts = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
    if len(parts) == 1:
        parts.append(b"")
    last = len(parts) - 1
    return [client_frame(part, opcode if i == 0 else CONT, fin=i == last) for i, part in enumerate(parts)]


def ping_json(ref: Any, size: int | None = None) -> bytes:
    """A JSON ``ping`` with ``id`` ``ref``, padded to exactly ``size`` bytes if given."""
    text = json.dumps({"type": "ping", "id": ref}, ensure_ascii=False).encode()
    if size is None:
        return text
    pad = size - len(text) - len(b',"pad":""')
    assert pad >= 0, f"{size} bytes is too short for a ping"
    return text[:-1] + b',"pad":"' + b"x" * pad + b'"}'


class Frame(NamedTuple):
    fin: bool
    opcode: int
    payload: bytes


class Closed(Exception):
    """The server closed the TCP connection (or reset it)."""


# -- the opening handshake ---------------------------------------------------------------------------------------


class Answer(NamedTuple):
    """The server's answer to an upgrade request: status, headers (lower-case names), raw head."""

    status: int
    headers: dict[str, str]
    head: bytes


def request(t: Target, *, method: str = "GET", version: str = "HTTP/1.1", key: str | None = "",
            ws_version: str | None = "13", upgrade: str | None = "websocket", connection: str | None = "Upgrade",
            extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """An upgrade request; ``None`` leaves a header out, ``key=""`` makes a random key."""
    key = base64.b64encode(os.urandom(16)).decode() if key == "" else key
    lines = [f"{method} {t.path} {version}", f"Host: {t.authority}"]
    for name, value in (("Upgrade", upgrade), ("Connection", connection), ("Sec-WebSocket-Key", key),
                        ("Sec-WebSocket-Version", ws_version), *extra):
        if value is not None:
            lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    except asyncio.IncompleteReadError as exc:
        raise Closed(f"no answer to the upgrade request: {exc.partial!r}") from None
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, head)


async def handshake(t: Target, raw: bytes | None = None, *, then: bytes = b"", **kw: Any) -> tuple[Answer, WS]:
    """Send an upgrade request (``raw`` as is, else ``request(t, **kw)``) with ``then`` in
    the same write; the answer's head and the connection."""
    reader, writer = await t.connect()
    writer.write((raw if raw is not None else request(t, **kw)) + then)
    await writer.drain()
    try:
        return await _read_answer(reader), WS(reader, writer)
    except BaseException:
        writer.close()
        raise


async def refused(t: Target, **kw: Any) -> Answer:
    """The answer to an upgrade request the server must refuse (the connection is closed)."""
    answer, ws = await handshake(t, **kw)
    ws.abort()
    return answer


async def welcomed(t: Target, *, then: bytes = b"") -> WS:
    """A connection past the handshake and its ``welcome``."""
    answer, ws = await handshake(t, then=then)
    try:
        assert answer.status == 101, answer.head
        welcome = await ws.json()
        assert welcome["type"] == "welcome", welcome
    except BaseException:
        await ws.done()
        raise
    return ws


@contextlib.asynccontextmanager
async def session(t: Target) -> AsyncIterator[WS]:
    """``async with session(t) as ws``: a welcomed connection, closed at the end."""
    ws = await welcomed(t)
    try:
        yield ws
    finally:
        await ws.done()


# -- the connection ------------------------------------------------------------------------------------------------


class WS:
    """A WebSocket after its 101: raw frames out, server frames in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, *frames: bytes) -> bool:
        """Write ``frames`` in one write; False if the server had closed already."""
        try:
            self.writer.write(b"".join(frames))
            await self.writer.drain()
        except (ConnectionError, ssl.SSLError):
            return False
        return True

    async def trickle(self, data: bytes, pause: float = 0.0) -> None:
        """``data`` one byte per write."""
        for i in range(len(data)):
            await self.send(data[i:i + 1])
            if pause:
                await asyncio.sleep(pause)

    async def frame(self, timeout: float = TIMEOUT) -> Frame:
        """The next server frame. Server frames are never masked (RFC 6455 section 5.1)."""
        try:
            b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await asyncio.wait_for(self.reader.readexactly(2), timeout))[0]
            elif n == 127:
                n = struct.unpack("!Q", await asyncio.wait_for(self.reader.readexactly(8), timeout))[0]
            payload = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as exc:
            raise Closed(repr(exc)) from None
        assert not b1 & 0x80, "a masked server frame"
        assert not b0 & 0x70, "reserved bits set in a server frame"
        return Frame(bool(b0 & 0x80), b0 & 0x0F, payload)

    async def message(self, timeout: float = TIMEOUT) -> Frame:
        """The next frame that is not the server's own heartbeat ping."""
        while True:
            got = await self.frame(timeout)
            if got.opcode != PING:
                return got

    async def json(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        got = await self.message(timeout)
        assert got.opcode == TEXT, f"expected a text frame, got {got}"
        return json.loads(got.payload)

    async def pong(self, ref: Any) -> None:
        """Send a JSON ping and expect its pong next (nothing else in between)."""
        await self.send(client_frame(ping_json(ref)))
        await self.expect_pong(ref)

    async def expect_pong(self, ref: Any) -> None:
        msg = await self.json()
        assert msg["type"] == "pong" and msg.get("ref") == ref, msg

    async def expect_error(self, code: str) -> None:
        msg = await self.json()
        assert msg["type"] == "error" and msg["code"] == code, msg

    async def close_code(self, timeout: float = TIMEOUT) -> int | None:
        """Read up to the server's close frame: its code (None for a close frame without
        one). Any other frame before it fails the case."""
        got = await self.message(timeout)
        assert got.opcode == CLOSE, f"expected a close frame, got {got}"
        assert len(got.payload) != 1 and len(got.payload) <= 125, got
        return struct.unpack("!H", got.payload[:2])[0] if got.payload else None

    async def expect_close(self, code: int, timeout: float = TIMEOUT) -> None:
        """The server's close frame carries ``code``, and then it closes the connection."""
        assert await self.close_code(timeout) == code
        assert await self.eof(), "the server sent more after its close frame"

    async def until_close(self, timeout: float = TIMEOUT) -> int | None:
        """Skip what comes up to the server's close frame (pongs to a flood...): its code."""
        deadline = time.monotonic() + timeout
        while True:
            got = await self.frame(max(0.01, deadline - time.monotonic()))
            if got.opcode == CLOSE:
                return struct.unpack("!H", got.payload[:2])[0] if got.payload else None

    async def eof(self, timeout: float = TIMEOUT) -> bool:
        """True when the server closes the connection within ``timeout`` without sending more."""
        try:
            return await asyncio.wait_for(self.reader.read(1), timeout) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    def abort(self) -> None:
        self.writer.close()

    async def done(self) -> None:
        """End a case's connection without leaving it to the garbage collector."""
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass


# -- the cases -------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    run: Callable[[Target], Awaitable[None]]
    seconds: float = 0.5   # about how long it takes (the slow ones are marked for a reader)
    memory: bool = False   # needs Target.memory


CASES: list[Case] = []


def case(id: str, **kw: Any) -> Callable[[Callable[[Target], Awaitable[None]]], Callable[[Target], Awaitable[None]]]:
    def register(fn: Callable[[Target], Awaitable[None]]) -> Callable[[Target], Awaitable[None]]:
        CASES.append(Case(id, fn, **kw))
        return fn
    return register


def each(ids_and_values: dict[str, Any], **kw: Any) -> Callable[[Callable[..., Awaitable[None]]], None]:
    """Register one case per ``{id: value}``; the function gets (target, value)."""
    def register(fn: Callable[..., Awaitable[None]]) -> None:
        for id, value in ids_and_values.items():
            CASES.append(Case(id, (lambda v: lambda t: fn(t, v))(value), **kw))
    return register


async def _protocol_error(t: Target, *frames: bytes, code: int = 1002, before: int = 0) -> None:
    """Send ``frames`` in one write; ``before`` JSON pongs, then close ``code`` and the end."""
    async with session(t) as ws:
        await ws.send(*frames)
        for ref in range(before):
            await ws.expect_pong(ref)
        await ws.expect_close(code)


async def _still_open(ws: WS) -> None:
    await ws.pong("still-open")


# H: the opening handshake --------------------------------------------------------------------------------------------


@case("H.1 RFC 6455's example key: 101, its accept value, no extension or subprotocol chosen, welcome first")
async def _(t: Target) -> None:
    answer, ws = await handshake(t, key="dGhlIHNhbXBsZSBub25jZQ==",
                                 extra=(("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
                                        ("Sec-WebSocket-Protocol", "chat, superchat")))
    try:
        assert answer.status == 101, answer.head
        assert answer.headers.get("upgrade", "").lower() == "websocket", answer.head
        assert "upgrade" in answer.headers.get("connection", "").lower(), answer.head
        assert answer.headers.get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", answer.head
        assert "sec-websocket-extensions" not in answer.headers, answer.head  # permessage-deflate is not offered
        assert "sec-websocket-protocol" not in answer.headers, answer.head    # no subprotocols
        assert (await ws.json())["type"] == "welcome"
        # Deflate was not negotiated, so a compressed (RSV1) frame is a protocol error.
        await ws.send(client_frame(b"\x01\x00", rsv=0x40))
        await ws.expect_close(1002)
    finally:
        await ws.done()


@case("H.2 header names and tokens in any case, Connection with several tokens (Firefox): 101")
async def _(t: Target) -> None:
    raw = (f"GET {t.path} HTTP/1.1\r\nhost: {t.authority}\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n"
           f"sec-websocket-key: {base64.b64encode(os.urandom(16)).decode()}\r\nsec-websocket-version: 13\r\n\r\n")
    answer, ws = await handshake(t, raw.encode())
    try:
        assert answer.status == 101, answer.head
        assert (await ws.json())["type"] == "welcome"
    finally:
        await ws.done()


def _426(answer: Answer) -> None:
    """RFC 6455 section 4.4: an unsupported version gets 426 naming the versions supported."""
    assert answer.status == 426, answer.head
    assert answer.headers.get("sec-websocket-version") == "13", answer.head


# Versions: RFC 6455 is version 13; 7 and 8 are drafts (hybi-07/-08) aiohttp still took.
@each({f"H.3.{i} Sec-WebSocket-Version {v or 'missing'}: 426 with Sec-WebSocket-Version: 13": v
       for i, v in enumerate(["8", "7", "12", "14", "abc", None], 1)})
async def _(t: Target, version: str | None) -> None:
    _426(await refused(t, ws_version=version))


# Requests that are no RFC 6455 handshake at all: 400 (section 4.2.1: "such as 400").
_NOT_A_HANDSHAKE = {
    "H.4.1 HTTP/1.0": dict(version="HTTP/1.0"),
    "H.4.2 HEAD": dict(method="HEAD"),
    "H.4.3 no Sec-WebSocket-Key": dict(key=None),
    "H.4.4 a key of 15 bytes": dict(key=base64.b64encode(os.urandom(15)).decode()),
    "H.4.5 a key that is not base64": dict(key="!" * 24),
    "H.4.6 no Upgrade header": dict(upgrade=None),
    "H.4.7 Upgrade: h2c": dict(upgrade="h2c"),
    "H.4.8 Connection without upgrade": dict(connection="keep-alive"),
}
# Both proxies talk HTTP/1.1 to the app whatever the client spoke, so the app cannot refuse an
# HTTP/1.0 upgrade behind them: the proxies' /ws locations refuse it themselves with 400
# (plugins/plugin_utils/nginx.py and apache.py), and H.4.1 expects 400 on every path.
# What the proxies make of some of them before the app sees them: PROXIED[via] lists the cases
# a proxy turns into a complete handshake (101 and welcome).
PROXIED: dict[str, set[str]] = {
    NGINX: {
        # nginx sets Connection from its $connection_upgrade map, "upgrade" whenever the client
        # sent Upgrade: the app gets a complete handshake.
        "H.4.8 Connection without upgrade",
    },
    APACHE: {
        # mod_proxy's upgrade=websocket goes by the Upgrade header alone and sends the app
        # Connection: Upgrade: a complete handshake.
        "H.4.8 Connection without upgrade",
    },
}


async def _welcome_frame(ws: WS) -> None:
    first = await ws.frame()
    assert first.opcode == TEXT and json.loads(first.payload)["type"] == "welcome", first


@each({f"{id}: 400": (id, kw) for id, kw in _NOT_A_HANDSHAKE.items()})
async def _(t: Target, id_kw: tuple[str, dict[str, Any]]) -> None:
    id, kw = id_kw
    reader, writer = await t.connect()
    ws = WS(reader, writer)
    try:
        await ws.send(request(t, **kw))
        answer = await _read_answer(reader)
        if id in PROXIED.get(t.via, set()):
            assert answer.status == 101, answer.head
            await _welcome_frame(ws)
        else:
            assert answer.status == 400, answer.head
    finally:
        await ws.done()


@each({"H.5 frames in the same write as the upgrade request wait for welcome": True,
       "H.6 frames sent right behind the request, before its 101 arrived, wait for welcome": False})
async def _(t: Target, same_write: bool) -> None:
    early = client_frame(b"early", PING) + client_frame(ping_json("early"))
    reader, writer = await t.connect()
    ws = WS(reader, writer)
    try:
        if same_write:
            await ws.send(request(t) + early)
        else:
            await ws.send(request(t))
            await ws.send(early[:6])
            await ws.send(early[6:])
        answer = await _read_answer(reader)
        assert answer.status == 101, answer.head
        await _welcome_frame(ws)
        assert await ws.message() == Frame(True, PONG, b"early")
        await ws.expect_pong("early")
    finally:
        await ws.done()


# 1: framing --------------------------------------------------------------------------------------------------------

@each({f"1.1.{i} a text message of {n} bytes: pong": n
       for i, n in enumerate([125, 126, 127, 128, 65535, MESSAGE_LIMIT], 1)})
async def _(t: Target, n: int) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(ping_json(n, n)))
        await ws.expect_pong(n)


@case("1.1.7 an empty text message: bad-json, open")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(b""))
        await ws.expect_error("bad-json")
        await _still_open(ws)


@each({f"1.2.{i} a binary message of {n} bytes: bad-message, open": n for i, n in enumerate([0, 125, 65536], 1)})
async def _(t: Target, n: int) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(os.urandom(n), BINARY))
        await ws.expect_error("bad-message")
        await _still_open(ws)


@case("1.3 two frames arriving one byte per write: two pongs")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.trickle(client_frame(ping_json(1)) + client_frame(ping_json(2, 300)))
        await ws.expect_pong(1)
        await ws.expect_pong(2)


@case("1.4 fifty frames in one write: fifty pongs in order")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.send(*(client_frame(ping_json(i)) for i in range(50)))
        for i in range(50):
            await ws.expect_pong(i)


@case("1.5 a 64-bit length with its most significant bit set: 1002 from the header alone")
async def _(t: Target) -> None:
    await _protocol_error(t, bytes([0x80 | TEXT, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + os.urandom(4))


@case("1.6 an unmasked client frame: 1002")
async def _(t: Target) -> None:
    await _protocol_error(t, client_frame(ping_json(0), masked=False))


@case("1.7 a frame announcing more than 1 MiB: 1009 from the header alone")
async def _(t: Target) -> None:
    await _protocol_error(t, client_frame(length=FRAME_LIMIT + 1), code=1009)


# 2: pings and pongs ------------------------------------------------------------------------------------------------

@each({"2.1 a ping without payload: an empty pong": b"",
       "2.2 a ping with 125 bytes of text: a pong with the same": b"*" * 125,
       "2.3 a ping with binary payload: a pong with the same": bytes(range(256))[:125]})
async def _(t: Target, payload: bytes) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(payload, PING))
        assert await ws.message() == Frame(True, PONG, payload)
        await _still_open(ws)


@case("2.4 a ping announcing 126 bytes: 1002 from the header alone")
async def _(t: Target) -> None:
    await _protocol_error(t, client_frame(b"", PING, length=126))


@case("2.5 unsolicited pongs, empty and with payload: ignored")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(b"", PONG), client_frame(b"unsolicited", PONG))
        await _still_open(ws)


@each({"2.6 ten pings in one write: ten pongs in order": 10,
       "9.5 a thousand pings in one write (within the frame budget): a thousand pongs in order": 1000})
async def _(t: Target, pings: int) -> None:
    async with session(t) as ws:
        await ws.send(*(client_frame(b"%d" % i, PING) for i in range(pings)))
        for i in range(pings):
            assert await ws.message() == Frame(True, PONG, b"%d" % i)
        await _still_open(ws)


@each({"2.7 a fragmented ping: 1002": PING, "2.8 a fragmented pong: 1002": PONG})
async def _(t: Target, opcode: int) -> None:
    await _protocol_error(t, client_frame(b"frag", opcode, fin=False), client_frame(b"ment", CONT))


@case("2.9 a ping, then a close: the pong, then the close answered")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(b"last", PING), client_frame(struct.pack("!H", 1000), CLOSE))
        assert await ws.message() == Frame(True, PONG, b"last")
        await ws.expect_close(1000)


# 3: reserved bits --------------------------------------------------------------------------------------------------

_RSV = {"RSV1": 0x40, "RSV2": 0x20, "RSV3": 0x10, "RSV1-3": 0x70}
_RSV_FRAMES = {"text": lambda rsv: client_frame(ping_json(9), rsv=rsv),
               "binary": lambda rsv: client_frame(b"\x00", BINARY, rsv=rsv),
               "ping": lambda rsv: client_frame(b"x", PING, rsv=rsv),
               "continuation": lambda rsv: client_frame(b"{", fin=False) + client_frame(b"}", CONT, rsv=rsv)}


@each({f"3.{i} {bits} on a {kind} frame, after a good message: its pong, then 1002": (bits, kind)
       for i, (bits, kind) in enumerate(((b, k) for k in _RSV_FRAMES for b in _RSV), 1)})
async def _(t: Target, bits_kind: tuple[str, str]) -> None:
    bits, kind = bits_kind
    await _protocol_error(t, client_frame(ping_json(0)), _RSV_FRAMES[kind](_RSV[bits]), before=1)


# 4: opcodes --------------------------------------------------------------------------------------------------------

@each({f"4.{1 if op < 8 else 2}.{op} reserved {'data' if op < 8 else 'control'} opcode {op:#x}, after a good "
       f"message: its pong, then 1002": op for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)})
async def _(t: Target, opcode: int) -> None:
    await _protocol_error(t, client_frame(ping_json(0)), client_frame(b"reserved", opcode), before=1)


# 5: fragmentation ----------------------------------------------------------------------------------------------------

@each({"5.1 a text message in two fragments: pong": 20,
       "5.2 a text message in one-byte fragments: pong": 1,
       "5.3 a text message in 60-byte fragments, 1,000 of them: pong": 60})
async def _(t: Target, size: int) -> None:
    async with session(t) as ws:
        message = ping_json("fragmented", 60_000 if size == 60 else None)
        await ws.send(*fragments(message, size))
        await ws.expect_pong("fragmented")


@case("5.4 empty fragments first, between and last: pong")
async def _(t: Target) -> None:
    async with session(t) as ws:
        msg = ping_json("empty")
        await ws.send(client_frame(b"", fin=False), client_frame(msg[:5], CONT, fin=False),
                      client_frame(b"", CONT, fin=False), client_frame(msg[5:], CONT, fin=False),
                      client_frame(b"", CONT))
        await ws.expect_pong("empty")


@case("5.5 a ping and a pong between fragments: the pong first, then the message's")
async def _(t: Target) -> None:
    async with session(t) as ws:
        msg = ping_json(7)
        await ws.send(client_frame(msg[:5], fin=False), client_frame(b"between", PING),
                      client_frame(msg[5:12], CONT, fin=False), client_frame(b"", PONG), client_frame(msg[12:], CONT))
        assert await ws.message() == Frame(True, PONG, b"between")
        await ws.expect_pong(7)


@case("5.6 fragments in separate writes 50 ms apart: pong")
async def _(t: Target) -> None:
    async with session(t) as ws:
        for part in fragments(ping_json("slow"), 8):
            await ws.send(part)
            await asyncio.sleep(0.05)
        await ws.expect_pong("slow")


@case("5.7 a fragmented binary message: bad-message, open")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.send(*fragments(os.urandom(300), 100, BINARY))
        await ws.expect_error("bad-message")
        await _still_open(ws)


@each({"5.8 a continuation frame with FIN and no message begun: 1002": client_frame(b"x", CONT),
       "5.9 a continuation frame without FIN and no message begun: 1002": client_frame(b"x", CONT, fin=False),
       "5.10 a new text message inside a fragmented one: 1002":
           client_frame(b"{", fin=False) + client_frame(b"{}"),
       "5.11 a new fragmented message inside a fragmented one: 1002":
           client_frame(b"{", fin=False) + client_frame(b"{", BINARY, fin=False)})
async def _(t: Target, frames: bytes) -> None:
    await _protocol_error(t, frames)


@case("5.12 a close in the middle of a fragmented message: answered")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(b'{"type":', fin=False), client_frame(struct.pack("!H", 1000) + b"bye", CLOSE))
        await ws.expect_close(1000)


# 6: UTF-8 ------------------------------------------------------------------------------------------------------------

@each({"6.1.1 two-byte characters: pong with the same id": "caf\u00e9",
       "6.1.2 three-byte characters: pong with the same id": "\u20ac\u2603",
       "6.1.3 four-byte characters: pong with the same id": "\U0001f600\U0010ffff"})
async def _(t: Target, text: str) -> None:
    async with session(t) as ws:
        await ws.pong(text)


@case("6.2 a character split across fragments: pong")
async def _(t: Target) -> None:
    async with session(t) as ws:
        msg = ping_json("\U0001f600")
        cut = msg.index(b"\xf0") + 2
        await ws.send(client_frame(msg[:cut], fin=False), client_frame(msg[cut:], CONT))
        await ws.expect_pong("\U0001f600")


_INVALID_UTF8 = {
    "a lone continuation byte": b"\x80",
    "an overlong slash": b"\xc0\xaf",
    "an encoded surrogate": b"\xed\xa0\x80",
    "a code point above U+10FFFF": b"\xf4\x90\x80\x80",
    "a truncated four-byte sequence": b"\xf0\x9f\x98",
    "the byte 0xFF": b"\xff",
}


@each({f"6.3.{i} {what}, in one frame: 1007": raw for i, (what, raw) in enumerate(_INVALID_UTF8.items(), 1)})
async def _(t: Target, raw: bytes) -> None:
    await _protocol_error(t, client_frame(b'{"type":"ping","id":"' + raw + b'"}'), code=1007)


@each({f"6.4.{i} {what}, split across fragments: 1007": raw
       for i, (what, raw) in enumerate(list(_INVALID_UTF8.items())[:3], 1)})
async def _(t: Target, raw: bytes) -> None:
    msg = b'{"type":"ping","id":"' + raw + b'"}'
    cut = msg.index(raw) + 1
    await _protocol_error(t, client_frame(msg[:cut], fin=False), client_frame(msg[cut:], CONT), code=1007)


@case("6.6 a good message, invalid UTF-8, another good message, in one write: a pong, then 1007 (nothing after)")
async def _(t: Target) -> None:
    await _protocol_error(t, client_frame(ping_json(0)), client_frame(b'{"type":"ping","id":"\xff"}'),
                          client_frame(ping_json("after")), code=1007, before=1)


@case("6.5 valid UTF-8 that is not JSON: bad-json, open")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.send(client_frame("Hello-\u00b5@\u00df\u00f6\u00e4\u00fc\u00e0\u00e1-UTF-8!!".encode()))
        await ws.expect_error("bad-json")
        await _still_open(ws)


# 7: close handling -------------------------------------------------------------------------------------------------

@case("7.1 a close frame without payload: 1000")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(b"", CLOSE))
        await ws.expect_close(1000)


@case("7.2 a close, then a message: only the close is answered")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(struct.pack("!H", 1000), CLOSE), client_frame(ping_json("late")),
                      client_frame(b"late", PING))
        await ws.expect_close(1000)


@case("7.3 a close reason of 123 bytes: the code echoed")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(struct.pack("!H", 1001) + b"r" * 123, CLOSE))
        await ws.expect_close(1001)


@case("7.4 a close with a 1-byte payload: 1002")
async def _(t: Target) -> None:
    await _protocol_error(t, client_frame(b"\x03", CLOSE))


@case("7.5 a close announcing 126 bytes: 1002 from the header alone")
async def _(t: Target) -> None:
    await _protocol_error(t, client_frame(b"", CLOSE, length=126))


@case("7.6 a close reason that is not UTF-8: 1007")
async def _(t: Target) -> None:
    await _protocol_error(t, client_frame(struct.pack("!H", 1000) + b"bad \xce\xba\xe1\xbd\xb9\xcf\x83\xed\xa0\x80",
                                          CLOSE), code=1007)


_VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
_INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@each({f"7.7.{i} close code {code}: echoed": code for i, code in enumerate(_VALID_CODES, 1)})
async def _(t: Target, code: int) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(struct.pack("!H", code) + b"bye", CLOSE))
        await ws.expect_close(code)


@each({f"7.9.{i} close code {code}, not to be sent: 1002": code for i, code in enumerate(_INVALID_CODES, 1)})
async def _(t: Target, code: int) -> None:
    await _protocol_error(t, client_frame(struct.pack("!H", code), CLOSE))


# 9: limits ---------------------------------------------------------------------------------------------------------

@case("9.1 a text message just over max_message_size: too-large, open")
async def _(t: Target) -> None:
    async with session(t) as ws:
        await ws.send(client_frame(ping_json(1, MESSAGE_LIMIT + 1)))
        await ws.expect_error("too-large")
        await _still_open(ws)


@each({"9.2.1 a text message of exactly 1 MiB in one frame: too-large, open": 0,
       "9.2.2 a text message of exactly 1 MiB in 16 fragments: too-large, open": 16})
async def _(t: Target, parts: int) -> None:
    async with session(t) as ws:
        msg = ping_json(1, FRAME_LIMIT)
        await ws.send(*(fragments(msg, FRAME_LIMIT // parts) if parts else [client_frame(msg)]))
        await ws.expect_error("too-large")
        await _still_open(ws)


@case("9.3 fragments adding up past 1 MiB: 1009 from the header of the one going over")
async def _(t: Target) -> None:
    chunk = b"x" * 65536
    frames = [client_frame(chunk, fin=False)] + [client_frame(chunk, CONT, fin=False)] * 15
    await _protocol_error(t, *frames, client_frame(b"", CONT, length=1), code=1009)


@case("9.4 a fragmented message not finished within the deadline, kept alive by pings: 1008",
      seconds=FRAGMENT_DEADLINE + 1)
async def _(t: Target) -> None:
    async with session(t) as ws:
        start = time.monotonic()
        await ws.send(client_frame(b'{"type":"ping",', fin=False))
        code = None
        while code is None:
            assert time.monotonic() - start < FRAGMENT_DEADLINE + 3, "still open past the fragment deadline"
            await ws.send(client_frame(b"", CONT, fin=False), client_frame(b"alive", PING))
            got = await ws.message(FRAGMENT_DEADLINE)
            if got.opcode == CLOSE:
                code = struct.unpack("!H", got.payload[:2])[0]
            else:
                assert got == Frame(True, PONG, b"alive"), got
                await asyncio.sleep(0.5)
        elapsed = time.monotonic() - start
        assert code == 1008
        assert FRAGMENT_DEADLINE <= elapsed <= FRAGMENT_DEADLINE + 3, elapsed
        assert await ws.eof()


async def _flood(t: Target, name: str, first: bytes, unit: bytes, units: int, every: int = 0,
                 extra: bytes = b"") -> None:
    """Send ``first``, then up to ``units`` copies of ``unit`` (with ``extra`` after every
    ``every``-th) in writes of 10,000, until the server closes; expect 1008 (the floods
    never finish a message: without the frame budget nothing would close them), and the
    peak resident set of every server process to grow less than MEMORY_BOUND_KIB.

    Each write gets 50 ms for the server's close before the next. A client writing on
    regardless gets the same close from the app, but through nginx not always to see:
    nginx closes the client's side with the flood still unread, which resets the
    connection, and the reset can destroy the close frame before it is read."""
    assert t.memory is not None and t.reset_peak is not None, "a memory case needs Target.memory"
    async with session(t) as ws:
        await asyncio.sleep(0.2)
        await asyncio.to_thread(t.reset_peak)
        before = await asyncio.to_thread(t.memory)
        closing = asyncio.ensure_future(ws.until_close(timeout=30))
        batch = unit * 10000
        if every:
            batch = b"".join(unit * every + extra for _ in range(10000 // every))
        sent = 0
        if await ws.send(first):
            while sent < units and not closing.done():
                if not await ws.send(batch):
                    break
                sent += 10000
                await asyncio.wait({closing}, timeout=0.05)
        try:
            code = await closing
        except Closed:
            code = None  # reset: read below what the memory says; the code is asserted last
        await asyncio.sleep(0.5)
        after = await asyncio.to_thread(t.memory)
        growth = {proc: after[proc].hwm - before[proc].rss for proc in before}
        if t.record is not None:
            t.record(name, {"close": code, "units_sent": sent, "peak_growth_kib": growth})
        assert max(growth.values()) < MEMORY_BOUND_KIB, \
            f"peak resident set grew by {growth} KiB (bound {MEMORY_BOUND_KIB}) after {sent} units"
        assert code == 1008, f"close {code} after {sent} of {units} units"


@case("9.6 a fragment flood: 2,000,000 empty continuation frames with a ping every 10,000, never finished: "
      "1008 within the frame budget, memory bounded", seconds=2, memory=True)
async def _(t: Target) -> None:
    await _flood(t, "fragment flood", client_frame(b"{", fin=False), client_frame(b"", CONT, fin=False), 2_000_000,
                 every=10000, extra=client_frame(b"alive", PING))


@case("9.7 one-byte fragments: a 1 MiB message in 1,048,000 fragments: 1008 within the frame budget, "
      "memory bounded", seconds=2, memory=True)
async def _(t: Target) -> None:
    await _flood(t, "one-byte fragments", client_frame(b"x", fin=False), client_frame(b"x", CONT, fin=False),
                 1_048_000)


@case("9.8 a ping flood: 1008 within the frame budget", seconds=1, memory=True)
async def _(t: Target) -> None:
    await _flood(t, "ping flood", b"", client_frame(b"", PING), 200_000)
