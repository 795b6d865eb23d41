"""The reference client of the signaling protocol (docs/protocol.md), on asyncio and aiohttp.

Two peers, one per transport, with the same vocabulary:

* :class:`WsPeer`: ``GET /ws``; the ``welcome``, then one JSON object per text frame;
  resume with ``/ws?resume=<token>&ack=<seq>``; close with 1000 to end the session.
* :class:`PollingPeer`: ``POST /api/sessions``, then ``POST`` and long-poll ``GET`` under
  ``/api/sessions/<id>/messages`` with ``Authorization: Bearer <token>``; ``DELETE`` ends it.

Both check the per-session ``seq`` of what the server sends: each message must be the
previous one plus one (after a resume or a poll with ``ack``: ``ack`` + 1, past what the
server says it ``lost``). A gap raises :class:`SequenceGap`, or goes to ``on_gap`` when a
client that records anomalies sets it.

The peers take any aiohttp HTTP client: an :class:`aiohttp.ClientSession` (with a
``base_url``, or absolute URLs) or the test client of ``aiohttp.test_utils``. They do not
own it. What a particular client adds (resending kept ``cseq`` messages, pacing,
counters) belongs in a subclass or around a peer: see the app's tests,
``tests/tools/load_driver.py`` and ``molecule/upgrade/tests/peers.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, urlsplit

import aiohttp

if TYPE_CHECKING:
    from aiohttp.test_utils import TestClient

    HTTP = aiohttp.ClientSession | TestClient[Any, Any]
    """What the peers send their requests through."""

__all__ = [
    "Closed",
    "HTTPStatusError",
    "Pace",
    "Peer",
    "PollingPeer",
    "ProtocolError",
    "Refused",
    "SequenceGap",
    "WsPeer",
    "auth_headers",
]

Message = dict[str, Any]

#: A close code's meaning for the caller (docs/protocol.md, "Closing and close codes").
CLOSE_CODES: dict[int, str] = {
    1000: "closed for good",
    1001: "going away: resume now",
    1002: "protocol error",
    1007: "not UTF-8",
    1008: "policy: flooding, frame budget, or resumed elsewhere",
    1009: "message too big",
    1013: "try again later",
    4401: "resume refused",
    4408: "idle timeout",
}


class ProtocolError(Exception):
    """The server did not answer as docs/protocol.md says it must."""


class Refused(ProtocolError):
    """The server answered the connection or resume with something other than ``welcome``
    (``message``: what it sent, e.g. an ``unauthorized`` error; ``code``: the close code that
    followed, when one did)."""

    def __init__(self, message: Any, code: int | None = None) -> None:
        super().__init__(f"refused ({code}): {message!r}")
        self.message = message
        self.code = code


class Closed(ProtocolError):
    """The WebSocket closed (or sent something other than a text frame) while a message was
    awaited; ``code`` is the close code, None when the connection dropped without one."""

    def __init__(self, code: int | None, detail: str = "") -> None:
        meaning = CLOSE_CODES.get(code or 0, "")
        super().__init__(f"connection closed: {code} {meaning} {detail}".rstrip())
        self.code = code


class SequenceGap(ProtocolError):
    """A message's ``seq`` is not the one after the last one processed."""

    def __init__(self, last: int, seq: int) -> None:
        super().__init__(f"sequence gap: {last} -> {seq}")
        self.last = last
        self.seq = seq


class HTTPStatusError(ProtocolError):
    """A long-polling request was answered with an unexpected status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


def auth_headers(token: str) -> dict[str, str]:
    """The header that proves a polling request (or ``/api/ice-servers``) is the session's."""
    return {"Authorization": f"Bearer {token}"}


class Pace:
    """A token bucket of our own (docs/protocol.md, "Sending at a pace"): ``size`` messages
    at once (half the server's burst), then ``rate`` per second (90% of the server's, which
    leaves room for pings and acks). What is sent in step with it is never dropped."""

    def __init__(self, limit: dict[str, Any] | None = None) -> None:
        limit = limit or {"rate": 50, "burst": 100}  # the server's defaults, for an older server
        self.rate = 0.9 * float(limit["rate"])
        self.size = max(1.0, limit["burst"] / 2)
        self.tokens = self.size
        self.at = time.monotonic()

    async def take(self, n: int = 1) -> None:
        """Wait until ``n`` messages (at most ``size``) may go."""
        want = min(float(n), self.size)
        while True:
            now = time.monotonic()
            self.tokens = min(self.size, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= want:
                self.tokens -= want
                return
            await asyncio.sleep((want - self.tokens) / self.rate)


class Peer:
    """What both transports share: the session's identity and the ``seq`` check.

    ``welcome`` is the ``welcome`` message (WebSocket) or the ``201`` answer (polling);
    ``last_seq`` the highest ``seq`` processed, the ``ack`` of a resume or a poll.
    """

    #: Default seconds to wait for a message (``timeout=None``); None: wait as long as it takes.
    timeout: float | None = 10.0
    #: Called with ``(last, seq)`` on a ``seq`` gap instead of raising :class:`SequenceGap`.
    on_gap: Callable[[int, int], None] | None = None

    def __init__(self, http: HTTP, welcome: Message) -> None:
        self.http = http
        self.welcome = welcome
        self.id: str = welcome["id"]
        self.token: str = welcome["token"]
        self.last_seq = 0
        #: Messages the server said it dropped from the session's queue (resume ``lost``,
        #: ``Signaling-Lost``), in total.
        self.lost = 0

    @property
    def auth(self) -> dict[str, str]:
        """``Authorization: Bearer <token>``."""
        return auth_headers(self.token)

    def track(self, msg: Message, expected: int | None = None) -> None:
        """Check ``msg``'s ``seq`` (if it has one) against ``expected`` (by default the one
        after ``last_seq``) and remember it."""
        seq = msg.get("seq")
        if seq is None:
            return
        want = self.last_seq + 1 if expected is None else expected
        if seq != want:
            self.seq_gap(want - 1, seq)
        self.last_seq = max(self.last_seq, seq)

    def seq_gap(self, last: int, seq: int) -> None:
        """``seq`` arrived where ``last`` + 1 was due: a message lost or delivered twice.
        Raises :class:`SequenceGap`, or calls ``on_gap`` when it is set."""
        if self.on_gap is None:
            raise SequenceGap(last, seq)
        self.on_gap(last, seq)

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout


class WsPeer(Peer):
    """A peer over ``GET /ws`` (transport A). ``ws`` is the open aiohttp WebSocket."""

    def __init__(self, http: HTTP, ws: aiohttp.ClientWebSocketResponse, welcome: Message, url: str = "/ws") -> None:
        super().__init__(http, welcome)
        self.ws = ws
        self.url = url
        query = parse_qs(urlsplit(url).query)
        if "ack" in query:  # a resume: the replay follows ack, past what the queue lost
            self.lost = int(welcome.get("lost", 0))
            self.last_seq = int(query["ack"][0]) + self.lost
        #: A resume without ``ack`` replays from wherever the old socket stopped: the first
        #: ``seq`` sets the count.
        self._seq_known = "resume" not in query or "ack" in query

    @classmethod
    async def connect(cls, http: HTTP, url: str = "/ws", *, timeout: float | None = None, **kwargs: Any) -> Self:
        """Open ``url`` (``/ws``, or ``/ws?resume=<token>&ack=<seq>``) and read its ``welcome``.

        ``kwargs`` go to ``ws_connect`` (``headers``, ``heartbeat``...). Raises
        :class:`Refused` when the first frame is not ``welcome`` (a resume refused with
        4401, a backend failure with 1013).
        """
        ws = await http.ws_connect(url, **kwargs)
        wait = cls.timeout if timeout is None else timeout
        try:
            msg = await ws.receive(timeout=wait)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise Refused(msg.data, ws.close_code)
            first = json.loads(msg.data)
            if first.get("type") != "welcome":
                closing = await ws.receive(timeout=wait)
                code = closing.data if closing.type is aiohttp.WSMsgType.CLOSE else ws.close_code
                raise Refused(first, code)
        except BaseException:
            await ws.close()
            raise
        return cls(http, ws, first, url)

    def resume_url(self) -> str:
        """Where this session resumes: ``/ws?resume=<token>&ack=<last_seq>`` on the same path."""
        parts = urlsplit(self.url)
        base = parts._replace(query="", fragment="").geturl()
        return f"{base}?resume={self.token}&ack={self.last_seq}"

    async def resume(self, http: HTTP | None = None, **kwargs: Any) -> Self:
        """A new connection to this session (through ``http``, by default the same), which
        replays what followed ``last_seq``, with this one's ``timeout`` and ``on_gap``. The
        old socket is left as it is."""
        kwargs.setdefault("timeout", self.timeout)
        peer = await type(self).connect(http if http is not None else self.http, self.resume_url(), **kwargs)
        peer.timeout, peer.on_gap = self.timeout, self.on_gap
        return peer

    @property
    def close_code(self) -> int | None:
        """The code the connection closed with (None while open)."""
        return self.ws.close_code

    async def send(self, **msg: Any) -> None:
        """Send one message: ``await peer.send(type="offer", to=other.id, data=sdp)``."""
        await self.ws.send_str(json.dumps(msg))

    async def send_text(self, text: str) -> None:
        """Send one message already encoded as JSON."""
        await self.ws.send_str(text)

    async def recv(self, timeout: float | None = None) -> Message:
        """The next message, its ``seq`` checked. Raises :class:`Closed` for anything but a
        text frame, ``TimeoutError`` when nothing comes within ``timeout``."""
        msg = await self.ws.receive(timeout=self._timeout(timeout))
        if msg.type is not aiohttp.WSMsgType.TEXT:
            code = msg.data if msg.type is aiohttp.WSMsgType.CLOSE else None
            raise Closed(code, f"({msg.type.name} {msg.extra or ''})")
        data: Message = json.loads(msg.data)
        if not self._seq_known and "seq" in data:
            self._seq_known = True
            self.last_seq = data["seq"] - 1
        self.track(data)
        return data

    async def expect(self, kind: str, timeout: float | None = None) -> Message:
        """The next message, which must be of type ``kind`` (:class:`ProtocolError` if not)."""
        data = await self.recv(timeout)
        if data.get("type") != kind:
            raise ProtocolError(f"expected {kind!r}, got {data}")
        return data

    async def wait_for(self, kind: str, timeout: float | None = None) -> Message:
        """The next message of type ``kind``; those before it are read (and checked) and
        dropped. ``timeout`` bounds the whole wait."""
        async with asyncio.timeout(self._timeout(timeout)):
            while True:
                data = await self.recv(None)
                if data.get("type") == kind:
                    return data

    async def request(self, kind: str, reply: str, **fields: Any) -> Message:
        """Send a ``kind`` message and expect ``reply`` as the next message."""
        await self.send(type=kind, **fields)
        return await self.expect(reply)

    async def join(self, room: str, role: str, name: str = "", **extra: Any) -> Message:
        """Join ``room`` as ``host`` or ``participant`` (``name`` defaults to the role;
        ``extra``: ``secret``...); the ``joined`` answer."""
        return await self.request("join", "joined", room=room, role=role, name=name or role, **extra)

    async def close(self, code: int = 1000) -> None:
        """Close the socket: with 1000 the session ends for good, with any other code it
        stays resumable for the resume window."""
        await self.ws.close(code=code)


class PollingPeer(Peer):
    """A peer over HTTP long-polling (transport B), under ``<base>/api/sessions``.

    ``inbox`` holds messages fetched but not yet taken by :meth:`expect` or :meth:`wait_for`;
    :meth:`poll` returns what it fetches directly (and leaves the inbox alone).
    """

    def __init__(self, http: HTTP, welcome: Message, base: str = "") -> None:
        super().__init__(http, welcome)
        self.base = base
        self.inbox: deque[Message] = deque()

    @classmethod
    async def create(cls, http: HTTP, base: str = "") -> Self:
        """``POST <base>/api/sessions``: a new session (``201``)."""
        async with http.post(f"{base}/api/sessions") as resp:
            if resp.status != 201:
                raise HTTPStatusError(resp.status, await resp.text())
            welcome = await resp.json()
        return cls(http, welcome, base)

    @property
    def url(self) -> str:
        """The session's URL, ``<base>/api/sessions/<id>``."""
        return f"{self.base}/api/sessions/{self.id}"

    async def post(self, *msgs: Message) -> tuple[int, Any]:
        """POST one message (or several, as an array); the status and the decoded body."""
        return await self.post_text(json.dumps(msgs[0] if len(msgs) == 1 else list(msgs)))

    async def post_text(self, body: str) -> tuple[int, Any]:
        """POST a body already encoded: one message or an array of them."""
        headers = {**self.auth, "Content-Type": "application/json"}
        async with self.http.post(f"{self.url}/messages", data=body, headers=headers) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None

    async def send(self, *msgs: Message, **msg: Any) -> Message:
        """POST ``msgs`` (or one message given as keywords); the ``202`` answer,
        ``{"accepted": n, "received": r}``. Raises :class:`HTTPStatusError` otherwise."""
        status, body = await self.post(*(msgs or (msg,)))
        if status != 202:
            raise HTTPStatusError(status, json.dumps(body))
        answer: Message = body
        return answer

    async def poll(self, wait: float = 2, ack: int | None = None) -> list[Message]:
        """One long poll: the messages after ``ack`` (after what was returned before, without
        it), within ``wait`` seconds; each ``seq`` checked, ``Signaling-Lost`` counted."""
        params = {"wait": str(wait)}
        if ack is not None:
            params["ack"] = str(ack)
        async with self.http.get(f"{self.url}/messages", params=params, headers=self.auth) as resp:
            if resp.status != 200:
                raise HTTPStatusError(resp.status, await resp.text())
            lost = int(resp.headers.get("Signaling-Lost", 0))
            msgs: list[Message] = await resp.json()
        self.lost += lost
        expected = (self.last_seq if ack is None else ack) + lost + 1
        for msg in msgs:
            if "seq" in msg:
                self.track(msg, expected)
                expected = msg["seq"] + 1
        return msgs

    async def poll_until(self, stop: asyncio.Event, handle: Callable[[Message], None], *,
                         wait: float = 10, retry_delay: float = 0.5,
                         on_lost: Callable[[int], None] | None = None,
                         on_retry: Callable[[BaseException], None] | None = None) -> None:
        """Long-poll until ``stop`` is set, acknowledging what came before: each message goes to
        ``handle``, each ``Signaling-Lost`` count to ``on_lost``. A poll that fails (network,
        timeout, a status other than ``200``, a body that is not JSON) goes to ``on_retry`` and
        is tried again after ``retry_delay`` seconds: the session outlives a proxy or app
        restart for as long as the server keeps it (docs/protocol.md, "Transport B")."""
        while not stop.is_set():
            lost = self.lost
            try:
                msgs = await self.poll(wait, ack=self.last_seq)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError, HTTPStatusError) as exc:
                if on_retry is not None:
                    on_retry(exc)
                await asyncio.sleep(retry_delay)
                continue
            if self.lost > lost and on_lost is not None:
                on_lost(self.lost - lost)
            for msg in msgs:
                handle(msg)

    def _deadline(self, timeout: float | None) -> float:
        seconds = self._timeout(timeout)
        return time.monotonic() + (float("inf") if seconds is None else seconds)

    async def _next(self, deadline: float, wait: float) -> Message:
        while not self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message")
            self.inbox.extend(await self.poll(int(min(wait, left)), ack=self.last_seq))
        return self.inbox.popleft()

    async def expect(self, kind: str, timeout: float | None = None, wait: float = 5) -> Message:
        """The next message, which must be of type ``kind`` (polls of at most ``wait`` s)."""
        data = await self._next(self._deadline(timeout), wait)
        if data.get("type") != kind:
            raise ProtocolError(f"expected {kind!r}, got {data}")
        return data

    async def wait_for(self, kind: str, timeout: float | None = None, wait: float = 5) -> Message:
        """The next message of type ``kind``; those before it are dropped."""
        deadline = self._deadline(timeout)
        while True:
            data = await self._next(deadline, wait)
            if data.get("type") == kind:
                return data

    async def close(self) -> None:
        """``DELETE`` the session: it ends for good (its room sees ``peer-left``)."""
        async with self.http.delete(self.url, headers=self.auth):
            pass
