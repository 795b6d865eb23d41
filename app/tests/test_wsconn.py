"""The WebSocket framing layer (wsconn.py) against RFC 6455, byte by byte.

A raw TCP client speaks to the real app: the handshake, fragmented messages
with a ping in between, frames arriving one byte at a time, and every way a
client can break the protocol, each with the close code the RFC gives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct

import pytest

from signaling.ws import HARD_FRAME_LIMIT

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def client_frame(payload: bytes, opcode: int = TEXT, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """One client frame (masked unless told otherwise)."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawPeer:
    """A WebSocket client with nothing between the test and the bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client, key: str | None = None) -> tuple[RawPeer, bytes]:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        key = base64.b64encode(os.urandom(16)).decode() if key is None else key
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: {client.host}:{client.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return cls(reader, writer), head

    async def frame(self, timeout: float = 3.0) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload). Server frames are never masked."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def json(self) -> dict:
        opcode, payload = await self.frame()
        assert opcode == TEXT, (opcode, payload)
        return json.loads(payload)

    async def close_code(self) -> int:
        """Read until the server's close frame; its code."""
        while True:
            opcode, payload = await self.frame()
            if opcode == CLOSE:
                return struct.unpack("!H", payload[:2])[0]

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 3) == b""


@pytest.fixture
async def raw(client):
    peer, head = await RawPeer.open(client)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert (await peer.json())["type"] == "welcome"
    yield peer
    peer.writer.close()


def ping_msg(n: int) -> bytes:
    return json.dumps({"type": "ping", "id": n}).encode()


async def test_handshake_accept_key_follows_the_rfc(client):
    # RFC 6455 section 1.3's example key and answer.
    peer, head = await RawPeer.open(client, key="dGhlIHNhbXBsZSBub25jZQ==")
    assert head.startswith(b"HTTP/1.1 101")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    peer.writer.close()


async def test_a_request_without_a_key_is_no_handshake(client):
    resp = await client.get("/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                            "Sec-WebSocket-Version": "13"})
    assert resp.status == 400


async def test_fragmented_message_with_a_ping_in_between(raw):
    msg = ping_msg(7)
    await raw.send(client_frame(msg[:5], TEXT, fin=False))
    await raw.send(client_frame(b"are you there", PING))
    await raw.send(client_frame(msg[5:12], CONT, fin=False))
    await raw.send(client_frame(msg[12:], CONT, fin=True))
    assert await raw.frame() == (PONG, b"are you there")
    assert (await raw.json())["ref"] == 7


async def test_a_frame_arriving_one_byte_at_a_time(raw):
    data = client_frame(ping_msg(1)) + client_frame(json.dumps({"type": "ping", "id": 2, "pad": "x" * 300}).encode())
    for i in range(len(data)):
        raw.writer.write(data[i:i + 1])
        await raw.writer.drain()
    assert (await raw.json())["ref"] == 1
    assert (await raw.json())["ref"] == 2


async def test_several_frames_in_one_segment(raw):
    await raw.send(b"".join(client_frame(ping_msg(n)) for n in range(5)))
    assert [(await raw.json())["ref"] for _ in range(5)] == list(range(5))


@pytest.mark.parametrize("bad", [
    pytest.param(client_frame(ping_msg(1), masked=False), id="unmasked"),
    pytest.param(client_frame(ping_msg(1), rsv=0x40), id="reserved-bit"),
    pytest.param(client_frame(b"x", 0x3), id="unknown-opcode"),
    pytest.param(client_frame(b"x", CONT), id="continuation-without-start"),
    pytest.param(client_frame(b"x" * 126, PING), id="control-frame-too-long"),
    pytest.param(client_frame(b"x", PING, fin=False), id="fragmented-control-frame"),
    pytest.param(client_frame(b"{", TEXT, fin=False) + client_frame(b"}", TEXT), id="new-message-inside-fragments"),
])
async def test_protocol_errors_close_with_1002(raw, bad):
    await raw.send(bad)
    assert await raw.close_code() == 1002
    assert await raw.eof()


async def test_an_announced_oversize_frame_closes_with_1009_before_its_payload(raw):
    head = bytes([0x80 | TEXT, 0x80 | 127]) + struct.pack("!Q", HARD_FRAME_LIMIT + 1) + os.urandom(4)
    await raw.send(head)  # no payload follows: the header alone is enough
    assert await raw.close_code() == 1009


async def test_fragments_adding_up_past_the_limit_close_with_1009(raw):
    chunk = b"x" * 60000
    frames = HARD_FRAME_LIMIT // len(chunk)
    await raw.send(client_frame(chunk, TEXT, fin=False))
    for _ in range(frames - 1):
        await raw.send(client_frame(chunk, CONT, fin=False))
    over = HARD_FRAME_LIMIT - frames * len(chunk) + 1
    # Only the header of the fragment that goes over: the server must judge it by its length.
    await raw.send(bytes([CONT, 0x80 | 126]) + struct.pack("!H", over) + os.urandom(4))
    assert await raw.close_code() == 1009


async def test_invalid_utf8_text_closes_with_1007(raw):
    await raw.send(client_frame(b'{"type":"ping","x":"\xff"}'))
    assert await raw.close_code() == 1007


async def test_a_client_close_is_answered_with_the_same_code(raw):
    await raw.send(client_frame(struct.pack("!H", 1000) + b"bye", CLOSE))
    assert await raw.close_code() == 1000
    assert await raw.eof()


async def test_binary_frames_get_an_error_and_the_connection_stays(raw):
    await raw.send(client_frame(b"\x00\x01", BINARY))
    error = await raw.json()
    assert error["type"] == "error" and error["code"] in ("bad-message", "bad-json")
    await raw.send(client_frame(ping_msg(3)))
    assert (await raw.json())["ref"] == 3


async def test_a_flood_in_one_write_is_cut_short_not_worked_through(make_client):
    """Thousands of messages arriving at once: the rate limit applies as frames are parsed, so
    the server answers the burst, closes with 1008, and never looks at the rest: the
    `rate-limited` count stops just past the burst instead of counting every message sent."""
    client = await make_client(rate_limit=5, rate_limit_burst=5)
    peer, _ = await RawPeer.open(client)
    assert (await peer.json())["type"] == "welcome"
    flood = 5000
    await peer.send(b"".join(client_frame(ping_msg(n)) for n in range(flood)))
    kinds = []
    while True:
        opcode, payload = await peer.frame()
        if opcode == CLOSE:
            break
        kinds.append(json.loads(payload).get("code") or json.loads(payload)["type"])
    assert struct.unpack("!H", payload[:2])[0] == 1008
    assert kinds[:5] == ["pong"] * 5 and "rate-limited" in kinds, kinds
    metrics = await (await client.get("/metrics")).text()
    limited = next(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith('signaling_errors_total{code="rate-limited"}'))
    assert limited == 5 + 1, f"{limited:g} messages counted rate-limited of {flood} sent"
    peer.writer.close()
