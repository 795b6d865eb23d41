"""Fragment attacks on one instance: what a hostile framing costs the server (issue 11).

One ``python -m signaling`` instance (default settings, ``idle_timeout`` 60 s)
runs on core ``SERVER_CPU``; this process, on ``CLIENT_CPU``, opens one raw
WebSocket, waits for ``welcome`` and then attacks with one of two framings:

``flood``
    a text message is begun and never finished: ``--frames`` empty continuation
    frames spread over ``--duration`` seconds, with a WebSocket ping every
    ``--ping-every`` seconds (pings reset the idle timer) until the end.
``tiny``
    one text message of ``--size`` bytes (under the 1 MiB frame limit) sent as
    one-byte fragments; the server's memory is read before the last fragment
    (what it holds) and after it (the peak).

The server's resident set is read from ``/proc/PID/status``: ``VmRSS`` before
and after, and ``VmHWM`` (the peak) after its high-water mark was reset
(``/proc/PID/clear_refs``) just before the attack. The report says how many
frames went out, whether and with which code the server closed, and after how
many seconds.

    .venv/bin/python bench/fragments.py flood --duration 72
    .venv/bin/python bench/fragments.py tiny --size 1048000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from wsclient import mask

OP_CONT, OP_TEXT, OP_CLOSE, OP_PING = 0x0, 0x1, 0x8, 0x9
KEY = b"\x01\x02\x03\x04"


def fragment(payload: bytes, opcode: int, fin: bool) -> bytes:
    """One masked client frame of at most 125 bytes."""
    assert len(payload) < 126
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload))) + KEY + mask(payload, KEY)


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        return {line.split(":")[0]: int(line.split()[1]) for line in fh if line.startswith(("VmRSS:", "VmHWM:"))}


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")


class Closed(Exception):
    pass


async def read_frames(reader: asyncio.StreamReader, closes: list[tuple[float, int | None]], start: float) -> None:
    """Read server frames until the close frame or EOF; note when and with which code."""
    try:
        while True:
            b0, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            payload = await reader.readexactly(n)
            if b0 & 0x0F == OP_CLOSE:
                closes.append((time.monotonic() - start, struct.unpack("!H", payload[:2])[0] if n >= 2 else None))
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        closes.append((time.monotonic() - start, None))


async def open_ws(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    _b0, n = await reader.readexactly(2)
    n = struct.unpack("!H", await reader.readexactly(2))[0] if n == 126 else n
    assert json.loads(await reader.readexactly(n))["type"] == "welcome"
    return reader, writer


async def send(writer: asyncio.StreamWriter, data: bytes) -> None:
    if writer.is_closing():
        raise Closed
    writer.write(data)
    try:
        await writer.drain()
    except ConnectionError:
        raise Closed from None


async def attack(port: int, pid: int, send_all: Callable[[asyncio.StreamWriter], Awaitable[dict[str, object]]],
                 closes: list[tuple[float, int | None]]) -> dict[str, object]:
    """Open a WebSocket, run ``send_all`` on it while reading what the server sends (its
    close lands in ``closes``); the server's memory a moment after."""
    reader, writer = await open_ws(port)
    reading = asyncio.create_task(read_frames(reader, closes, time.monotonic()))
    start = time.monotonic()
    result: dict[str, object] = {}
    try:
        result = await send_all(writer)
    except Closed:
        pass
    await asyncio.sleep(1.0)
    after = memory(pid)
    writer.close()
    reading.cancel()
    return {**result, "seconds": round(time.monotonic() - start, 1), "closed": closes[:1], **after}


async def flood(port: int, pid: int, args: argparse.Namespace) -> dict[str, object]:
    closes: list[tuple[float, int | None]] = []
    batch = fragment(b"", OP_CONT, False) * 10000
    pace = args.duration * 10000 / args.frames  # seconds per batch
    sent = 0

    async def send_all(writer: asyncio.StreamWriter) -> dict[str, object]:
        nonlocal sent
        start = next_ping = time.monotonic()
        await send(writer, fragment(b"{", OP_TEXT, False))
        while not closes and time.monotonic() - start < args.duration:
            if time.monotonic() >= next_ping:
                await send(writer, fragment(b"alive", OP_PING, True))
                next_ping += args.ping_every
            if sent < args.frames:
                await send(writer, batch)
                sent += 10000
            await asyncio.sleep(max(0.0, start + sent / 10000 * pace - time.monotonic()))
        return {}

    result = await attack(port, pid, send_all, closes)
    return {"frames": sent, **result}


async def tiny(port: int, pid: int, args: argparse.Namespace) -> dict[str, object]:
    one = fragment(b"x", OP_CONT, False)  # the message is "xxx...": not JSON, only its framing matters
    held: dict[str, int] = {}

    async def send_all(writer: asyncio.StreamWriter) -> dict[str, object]:
        await send(writer, fragment(b"x", OP_TEXT, False))
        for left in range(args.size - 2, 0, -10000):
            await send(writer, one * min(10000, left))
        await asyncio.sleep(1.0)
        held.update(memory(pid))
        await send(writer, fragment(b"x", OP_CONT, True))
        return {}

    result = await attack(port, pid, send_all, [])
    return {"fragments": args.size, "held_VmRSS": held.get("VmRSS"), **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("attack", choices=("flood", "tiny"))
    parser.add_argument("--duration", type=float, default=72.0, help="flood: seconds of empty continuation frames")
    parser.add_argument("--frames", type=int, default=19_000_000, help="flood: frames, spread over the duration")
    parser.add_argument("--ping-every", type=float, default=5.0, help="flood: seconds between WebSocket pings")
    parser.add_argument("--size", type=int, default=1048000, help="tiny: message bytes, one fragment each")
    args = parser.parse_args()
    common.pin_self()
    port = common.free_port()
    server = common.Server("signaling", port, [common.python(), "-m", "signaling", "--host", "127.0.0.1",
                                               "--port", str(port), "--log-level", "warning"])
    server.start()
    try:
        time.sleep(1.0)
        before = memory(server.pid)
        reset_peak(server.pid)
        result = asyncio.run({"flood": flood, "tiny": tiny}[args.attack](port, server.pid, args))
    finally:
        server.stop()
    print(json.dumps({"attack": args.attack, "before_VmRSS": before["VmRSS"], **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
