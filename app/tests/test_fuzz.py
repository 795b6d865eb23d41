"""Hypothesis fuzzing of a real running instance (issue 5, "Hostile input": Protocol).

``python -m signaling`` runs as a subprocess, once with the in-memory hub and
once with ``SIGNALING_REDIS_URL`` naming the real redis-server of conftest.py,
with a rate limit high enough that fuzz frames are never rate-limited (the
limiter has its own tests). One event loop serves the module; each Hypothesis example runs
on it with ``run_until_complete`` and reuses the same connections.

What is thrown at it:

* WebSocket: every message type (and unknown ones) with wrong field types,
  random JSON values, huge numbers (2**64, -2**63-1, 1e308, 1e400), deep
  nesting (up to 10,000 levels, as raw text, at the top and inside ``data``),
  text frames that are not UTF-8, binary frames, empty frames, frames just
  over 64 KiB and over the 1 MiB hard limit.
* HTTP: ``POST /api/sessions``, ``POST/GET /api/sessions/{id}/messages``,
  ``DELETE /api/sessions/{id}`` with random bodies, headers, tokens, ids and
  ``wait``/``ack`` values; WebSocket upgrades with random ``resume``/``ack``
  and ``Origin``; ``POST /api/uploads`` with random and broken multipart;
  random paths under ``/uploads/`` and the static client (``..%2f`` and co).

What every example must show:

* WebSocket: each frame the server sends is JSON of a server message type of
  docs/protocol.md, errors carry a documented code (the expected one where
  the input decides it), ``seq`` counts 1, 2, 3...; after each fuzz frame a
  ``ping`` gets its ``pong`` within 2 s (no hang). The only closes are the
  ones due to what was sent (over 1 MiB: 1009, or a reset that ate it; a text
  frame that is not UTF-8: 1007 per RFC 6455, unless it gets ``bad-json``),
  and the session then resumes with the same id.
* HTTP: never a 5xx; JSON error bodies carry a documented code; the owner's
  token is never refused; a static or upload path answers 200 only with a
  file that really is under its root; refused uploads leave nothing on disk.
* Isolation: a bystander room (host + participant on their own sockets, a room
  name and secret the fuzzer cannot guess) receives nothing during the run and
  still works afterwards, and nothing the fuzzer receives names them.
* The process: still running, ``/health`` 200, and no error logged (aiohttp
  logs an unhandled exception in a handler at level error).

Budget: 10,000 cases on the in-memory hub, 1,600 more on the Redis hub (the
message paths; files and uploads do not depend on the hub). Check with
``pytest tests/test_fuzz.py --hypothesis-show-statistics``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType
from conftest import Instance, start_app, stop_app
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from signaling import protocol as p
from signaling.app import PACKAGED_STATIC

HARD_LIMIT = 1 << 20          # ws.HARD_FRAME_LIMIT: bigger frames close with 1009
MESSAGE_LIMIT = 65536         # max_message_size: bigger messages get too-large
UPLOAD_LIMIT = 4096           # --upload-max-size for the fuzzed instance, so oversize is cheap
PONG_WITHIN = 2.0
SERVER_TYPES = p.RELAYED | {"welcome", "joined", "peer-joined", "peer-left", "left", "pong", "peers", "error"}


# -- strategies: WebSocket frames -------------------------------------------------------------------------------

# Placeholders for ids known only at run time, resolved when a frame is sent.
SELF, TARGET, POLLER = "@self", "@target", "@poller"

huge_numbers = st.sampled_from([2**64, 2**63, -(2**63) - 1, 2**53 + 1, -(2**53) - 1, 10**400, 1e308, -1e308, 5e-324])
# Short random strings plus the lengths at the limits: long random text costs generation time, not coverage.
edge_strings = st.sampled_from(["", "x" * 64, "x" * 65, "x" * 128, "x" * 129, "\u00e9" * 64, "\U0001f600" * 33,
                                "\x00", "a b", "../x", "<script>", SELF])
strings = st.text(max_size=12) | edge_strings
scalars = (st.none() | st.booleans() | st.integers() | huge_numbers
           | st.floats(allow_nan=False, allow_infinity=False) | strings)
json_values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=8,
)
wrong_types = st.sampled_from([None, True, False, 0, -1, 2**64, -(2**63) - 1, 1e308, 0.5, "", [], {}, [1], {"a": 1}])
TYPES = ("join", "offer", "answer", "candidate", "bye", "leave", "ping", "list", "ack")


def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A well-formed value for a field, or a wrong type."""
    return good | good | wrong_types | json_values


messages = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | st.sampled_from(TYPES) | strings | wrong_types},
    optional={
        "to": field(st.sampled_from([SELF, TARGET, POLLER]) | strings),
        "data": json_values,
        "room": field(st.sampled_from(["fuzz", "Room_1-2", "x" * 64, "x" * 65, "", "a/b", "r\u00e9"])
                      | st.text(st.sampled_from("aZ09_-"), min_size=1, max_size=8)),
        "role": field(st.sampled_from(["host", "participant", "guest", "HOST"])),
        "name": field(strings),
        "secret": field(strings),
        "id": field(st.integers() | strings),
        "seq": field(st.integers()),
        "cseq": field(st.integers(0, 4) | st.integers()),
        "from": field(st.sampled_from([SELF, TARGET])),
    },
)


def _abbrev(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 400 else f"{text[:200]}...<{len(value)} in all>"


class ShortRepr:
    """Failure reports show a big payload by its start and size, not byte by byte."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        fields = ", ".join(f"{f.name}={_abbrev(getattr(self, f.name))}" for f in dataclasses.fields(self))
        printer.text(f"{type(self).__name__}({fields})")


@dataclass(frozen=True)
class Frame(ShortRepr):
    """One WebSocket frame to send; ``expect`` is the error code the input itself decides."""

    payload: str | bytes
    binary: bool = False
    expect: str | None = None


def _dump(msg: Any, ascii_only: bool) -> str:
    return json.dumps(msg, ensure_ascii=ascii_only)


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return True
    return False


def _deep(depth: int, opener: str, where: str, balanced: bool) -> Frame:
    closer = {"[": "]", '{"a":': "}"}[opener]
    inner = opener * depth + ("0" if opener != "[" else "") + (closer * depth if balanced else "")
    if where == "top":
        text = inner
    else:
        text = f'{{"type":"offer","to":"{TARGET}","data":{inner}}}'
    if not balanced or depth + (where == "data") > 1024:   # orjson's depth limit: not JSON to it
        return Frame(text, expect=p.BAD_JSON)
    return Frame(text, expect=p.BAD_MESSAGE if where == "top" else None)


def _oversize(size: int, char: str) -> Frame:
    text = '{"type":"ping","pad":"' + char * (size // len(char.encode())) + '"}'
    n = len(text.encode())
    return Frame(text, expect=p.TOO_LARGE if MESSAGE_LIMIT < n <= HARD_LIMIT else None)


def _value_frame(value: Any, ascii_only: bool) -> Frame:
    text = _dump(value, ascii_only)
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:  # numbers beyond a double, e.g. 10**400
        return Frame(text, expect=p.BAD_JSON)
    return Frame(text, expect=None if isinstance(value, dict) else p.BAD_MESSAGE)


object_frames = st.builds(lambda m, a: Frame(_dump(m, a)), messages, st.booleans())
value_frames = st.builds(_value_frame, json_values, st.booleans())
batch_frames = st.builds(_value_frame, st.lists(messages, max_size=4), st.booleans())
text_frames = st.builds(Frame, st.text(max_size=40))
deep_frames = st.builds(
    _deep, st.integers(1, 10_000) | st.integers(200, 1100), st.sampled_from(["[", '{"a":']),
    st.sampled_from(["top", "data"]), st.booleans(),
)
number_frames = st.builds(
    lambda n, key: Frame(f'{{"type":"{key}","id":{n},"seq":{n}}}'),
    st.sampled_from(["1e400", "-1e400", "18446744073709551616", "-9223372036854775809", "9" * 5000,
                     "1e308", "1e-400", "NaN", "Infinity", "-0", "0x10", "01"]),
    st.sampled_from(["ping", "ack"]),
)
bad_text = st.sampled_from(['{"type":"ping","id":"\\ud800"}', '{"type":"ping"', '{"type":"ping"}}', "\ufeff{}",
                            '{"type":"ping","type":"join"}', "nul", "[]", '"\\u0000"'])
utf8_frames = st.builds(
    lambda raw, wrap: Frame(b'{"type":"ping","id":"' + raw + b'"}' if wrap else raw),
    st.binary(min_size=1, max_size=64).filter(_not_utf8), st.booleans(),
)
binary_frames = st.builds(lambda raw: Frame(raw, binary=True, expect=p.BAD_MESSAGE), st.binary(max_size=100))
oversize_frames = st.builds(
    _oversize,
    st.integers(MESSAGE_LIMIT - 64, MESSAGE_LIMIT + 64) | st.integers(MESSAGE_LIMIT, HARD_LIMIT + 4096),
    st.sampled_from(["x", "\u00e9", "\u20ac", "\U0001f600"]),
)
raw_frames = st.one_of(
    value_frames, batch_frames, text_frames, deep_frames, deep_frames, number_frames, st.builds(Frame, bad_text),
    binary_frames, st.just(Frame("", expect=p.BAD_JSON)), st.just(Frame(b"", binary=True, expect=p.BAD_MESSAGE)),
    utf8_frames, oversize_frames,
)

# -- strategies: HTTP requests ---------------------------------------------------------------------------------

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
FRAMING = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "expect", "authorization"}
header_names = (st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}", fullmatch=True)
                .filter(lambda h: h.lower() not in FRAMING))
extra_headers = st.dictionaries(
    header_names | st.sampled_from(["Content-Type", "Content-Encoding", "Accept", "Origin", "X-Forwarded-For"]),
    printable | st.sampled_from(["gzip", "deflate", "br", "application/json", "multipart/form-data", "1.2.3.4, ::1"]),
    max_size=3,
)
# "valid" = the poller's own token; everything else must get 401 (the target's token is never used here).
auth_values = st.sampled_from(["valid", "valid-lower", "none", "forged", "empty", "basic"]) | printable
session_ids = st.sampled_from([POLLER, POLLER, TARGET]) | st.text(st.sampled_from("abcXYZ019-_.%2f~"), max_size=80)


def _not_a_long_wait(value: str) -> bool:
    """Drop wait values the server accepts above 0: a poll would hang that long (tested in test_polling)."""
    try:
        return not 0 < int(value) <= 30
    except ValueError:
        return True


def _big_and_deep(depth: int) -> bytes:
    """A batch over 64 KiB (so each item's size is checked) holding a deeply nested item."""
    pad = '{"type":"ping","pad":"%s"}' % ("x" * MESSAGE_LIMIT)
    deep = f'{{"type":"offer","to":"{POLLER}","data":{"[" * depth + "]" * depth}}}'
    return ("[" + pad + "," + deep + "]").encode()


query_values = (st.sampled_from(["0", "-1", "31", "1e3", "1.5", " 0", "0x1", "\u0660", "9" * 5000, "", "2**64"])
                | printable)
bodies = st.one_of(
    messages.map(lambda m: _dump(m, False).encode()),
    st.lists(messages, max_size=4).map(lambda ms: _dump(ms, True).encode()),
    st.integers(60, 70).map(lambda n: _dump([{"type": "ping", "id": i} for i in range(n)], True).encode()),  # > 64
    json_values.map(lambda v: _dump(v, False).encode()),
    st.binary(max_size=300),
    st.integers(1, 2000).map(lambda d: f'{{"type":"offer","to":"{POLLER}","data":{"[" * d + "]" * d}}}'.encode()),
    st.integers(MESSAGE_LIMIT - 100, MESSAGE_LIMIT + 100).map(lambda n: b'{"type":"ping","pad":"' + b"x" * n + b'"}'),
    st.integers(MESSAGE_LIMIT * 64 + 1, MESSAGE_LIMIT * 64 + 100).map(lambda n: b"x" * n),
    st.builds(_big_and_deep, st.integers(200, 1100)),
)


@dataclass(frozen=True)
class Api(ShortRepr):
    """One request to the polling API, or a WebSocket upgrade with odd parameters."""

    method: str
    path: str                 # with the placeholder {sid}
    sid: str
    auth: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes | None


api_requests = st.builds(
    Api,
    method=st.sampled_from(["GET", "POST", "DELETE"]) | st.sampled_from(["PUT", "PATCH", "OPTIONS", "HEAD"]),
    path=st.sampled_from(["/api/sessions", "/api/sessions/{sid}/messages", "/api/sessions/{sid}/messages",
                          "/api/sessions/{sid}", "/api/sessions/{sid}/messages/", "/api/ice-servers", "/ws"]),
    sid=session_ids,
    auth=auth_values,
    query=st.dictionaries(st.sampled_from(["wait", "ack", "resume", "x"]), query_values.filter(_not_a_long_wait),
                          max_size=3),
    headers=extra_headers,
    body=st.none() | bodies,
)

segments = st.sampled_from(["..", "%2e%2e", "..%2f", "%2e%2e%2f", "..%5c", "..\\", ".", "%00", "etc", "passwd",
                            "index.html", "favicon.svg", "js", "css", "%252e%252e", "~", "a" * 300, "%ff", "%c0%ae",
                            "%2f", "%2F..%2F..", "//", "app.js", "README.md"]) | st.text(
    st.sampled_from("abcAZ09.-_~%2fe"), max_size=30)
paths = st.builds(
    lambda prefix, parts: prefix + "/".join(parts),
    st.sampled_from(["/", "/uploads/", "/js/", "/css/", "/static/", "/api/", "//", "/./"]),
    st.lists(segments, max_size=6),
)

upload_types = st.sampled_from(["text/plain", "image/png", "application/pdf", "text/html", "application/x-sh",
                                "", "TEXT/PLAIN; charset=utf-8", "image/svg+xml"]) | printable
upload_forms = st.fixed_dictionaries({
    "kind": st.just("form"),
    "files": st.lists(st.tuples(printable, upload_types, st.binary(max_size=UPLOAD_LIMIT + 200)),
                      max_size=3),
    "fields": st.dictionaries(st.sampled_from(["a", "file", "name"]), printable, max_size=2),
})
upload_raw = st.fixed_dictionaries({
    "kind": st.just("raw"),
    "content_type": st.sampled_from(["multipart/form-data; boundary=B", "multipart/form-data", "text/plain",
                                     "multipart/mixed; boundary=B", "multipart/form-data; boundary=",
                                     "application/json"]) | printable,
    "body": st.one_of(
        st.binary(max_size=400),
        st.builds(lambda disp, ctype, data, end: b"--B\r\nContent-Disposition: " + disp.encode() + b"\r\nContent-Type: "
                  + ctype.encode() + b"\r\n\r\n" + data + (b"\r\n--B--\r\n" if end else b""),
                  st.sampled_from(['form-data; name="file"; filename="a.txt"', "form-data", 'form-data; filename=""',
                                   "attachment; filename*=UTF-8''%ff", 'form-data; name="f"; filename="../../x"'])
                  | printable, upload_types, st.binary(max_size=300), st.booleans()),
    ),
})


# -- the instance under test -----------------------------------------------------------------------------------


def start_instance(workdir: Path, env: dict[str, str] | None = None) -> Instance:
    """An instance whose rate limit never gets in the fuzzer's way, with uploads on."""
    uploads = workdir / "uploads"
    uploads.mkdir()
    inst = start_app(workdir, "--rate-limit", "1000000", "--rate-limit-burst", "1000000", "--discovery",
                     "--uploads-dir", str(uploads), "--upload-max-size", str(UPLOAD_LIMIT), env=env)
    inst.uploads = uploads
    return inst


# -- WebSocket clients that check every frame ------------------------------------------------------------------


def check_frame(raw: str, secret_strings: tuple[str, ...]) -> dict[str, Any]:
    """A frame from the server: a JSON object of a documented type, naming no bystander."""
    for s in secret_strings:
        assert s not in raw, f"frame leaks a bystander's id, room or token: {raw[:300]}"
    msg = json.loads(raw)
    assert isinstance(msg, dict) and msg.get("type") in SERVER_TYPES, f"not a server message: {raw[:300]}"
    if msg["type"] == "error":
        assert msg.get("code") in p.ERROR_CODES, f"undocumented error code: {raw[:300]}"
    return msg


@dataclass
class Closed:
    code: int | None


class Conn:
    """A WebSocket peer; a background task reads every frame, checks it and queues it.

    Not ``signaling.client``'s peer on purpose: the fuzzer sends what that client cannot (raw
    text, wrong types, binary frames, messages out of protocol order) and checks every frame
    the server answers, errors included, where the client would validate or swallow them.
    """

    def __init__(self, http: aiohttp.ClientSession, base: str, secret_strings: tuple[str, ...]) -> None:
        self.http = http
        self.base = base
        self.secret_strings = secret_strings
        self.frames: asyncio.Queue[dict[str, Any] | Closed] = asyncio.Queue()
        self.problems: list[str] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.id = self.token = ""
        self.seq = 0

    async def open(self, resume: bool = False) -> dict[str, Any]:
        params = {"resume": self.token, "ack": str(self.seq)} if resume else {}
        self.ws = await self.http.ws_connect(self.base + "/ws", params=params, max_msg_size=0)
        first = await self.ws.receive(timeout=5)
        assert first.type is WSMsgType.TEXT, f"no welcome: {first}"
        welcome = check_frame(first.data, self.secret_strings)
        assert welcome["type"] == "welcome", welcome
        if resume:
            assert welcome["id"] == self.id and welcome.get("resumed") is True, welcome
        else:
            self.seq = 0
        self.id, self.token = welcome["id"], welcome["token"]
        self.reader = asyncio.create_task(self._read(self.ws))
        return welcome

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.TEXT:
                self.frames.put_nowait(Closed(ws.close_code))
                return
            try:
                frame = check_frame(msg.data, self.secret_strings)
                assert frame.get("seq") == self.seq + 1, f"seq {self.seq} -> {frame.get('seq')}: {msg.data[:200]}"
                self.seq += 1
            except (AssertionError, ValueError) as exc:
                self.problems.append(str(exc))
                continue
            self.frames.put_nowait(frame)

    async def send(self, data: bytes, binary: bool = False) -> None:
        assert self.ws is not None
        try:
            await self.ws.send_frame(data, WSMsgType.BINARY if binary else WSMsgType.TEXT)
        except (ConnectionError, aiohttp.ClientError):
            pass  # the server closed first; the reader reports how

    async def exchange(self, data: bytes, binary: bool, probe: str) -> tuple[list[dict[str, Any]], bool, int | None]:
        """Send one frame, then a ping: the frames up to its pong, whether it closed instead, and with what code."""
        await self.send(data, binary)
        await self.send(b'{"type":"ping","id":"%s"}' % probe.encode())
        got: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + PONG_WITHIN
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                frame = await asyncio.wait_for(self.frames.get(), max(left, 0.001))
            except TimeoutError:
                raise AssertionError(f"no pong within {PONG_WITHIN}s (hang?); got {got}") from None
            if isinstance(frame, Closed):
                await self.stop()
                return got, True, frame.code
            if frame["type"] == "pong" and frame.get("ref") == probe:
                return got, False, None
            got.append(frame)

    async def stop(self, code: int | None = None) -> None:
        """Close the socket (code 1000 ends the session; without a code it stays resumable)."""
        if self.ws is not None and code is not None:
            await self.ws.close(code=code)
        if self.reader is not None:
            self.reader.cancel()
            try:
                await self.reader
            except asyncio.CancelledError:
                pass
        if self.ws is not None and not self.ws.closed:
            await self.ws.close(code=4000)  # an abnormal close: the session stays resumable
        self.reader = None

    def drained(self) -> list[Any]:
        out = []
        while not self.frames.empty():
            out.append(self.frames.get_nowait())
        return out


# -- the harness -------------------------------------------------------------------------------------------------


class Fuzz:
    """Everything one backend's run shares: the instance, the fuzzing peers and the bystanders."""

    def __init__(self, loop: asyncio.AbstractEventLoop, inst: Instance) -> None:
        self.loop = loop
        self.inst = inst
        self.uploaded: set[str] = set()
        self.static_files = {f.read_bytes() for f in PACKAGED_STATIC.rglob("*") if f.is_file()}
        self.probe = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def setup(self) -> None:
        # A new connection per request: the server may close one after refusing
        # a request whose body it did not read, and a reused one would then fail.
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                          connector=aiohttp.TCPConnector(force_close=True))
        base = self.inst.base
        # Bystanders: a private room whose name, secret and members the fuzzer never learns.
        self.room, secret = "by-" + secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.host, self.guest = Conn(self.http, base, ()), Conn(self.http, base, ())
        for peer, role in ((self.host, "host"), (self.guest, "participant")):
            await peer.open()
            await peer.send(_dump({"type": "join", "room": self.room, "role": role, "name": role, "secret": secret},
                                  True).encode())
        assert (await asyncio.wait_for(self.host.frames.get(), 3))["type"] == "joined"
        assert (await asyncio.wait_for(self.guest.frames.get(), 3))["type"] == "joined"
        assert (await asyncio.wait_for(self.host.frames.get(), 3))["type"] == "peer-joined"
        self.secret_strings = (self.room, secret, self.host.id, self.guest.id, self.host.token, self.guest.token)
        # The fuzzer, and a public peer it may really signal (so relaying is exercised too).
        self.fuzzer = Conn(self.http, base, self.secret_strings)
        self.target = Conn(self.http, base, self.secret_strings)
        await self.fuzzer.open()
        await self.target.open()
        self.target_sink = asyncio.create_task(self._sink(self.target))
        await self.new_poller()

    async def _sink(self, conn: Conn) -> None:
        while True:  # frames are checked by the reader; only keep the queue short
            if isinstance(await conn.frames.get(), Closed):
                conn.problems.append("the target peer was disconnected")
                return

    async def new_poller(self) -> None:
        """A fresh polling session for the HTTP cases (it expires 60 s after its last poll)."""
        async with self.http.post(self.inst.base + "/api/sessions") as resp:
            assert resp.status == 201
            info = await resp.json()
        self.poller_id, self.poller_token = info["id"], info["token"]
        self.poller_born = time.monotonic()

    def resolve(self, text: str) -> str:
        return (text.replace(SELF, self.fuzzer.id).replace(TARGET, self.target.id)
                .replace(POLLER, self.poller_id))

    def check_health(self) -> None:
        errors = self.inst.new_errors()
        assert not errors, "the instance logged errors:\n" + "\n".join(errors)
        assert not self.fuzzer.problems and not self.target.problems, self.fuzzer.problems + self.target.problems
        assert self.inst.proc.poll() is None, "the instance died"

    # -- WebSocket cases -------------------------------------------------------------------------------------

    async def ws_case(self, frame: Frame) -> None:
        payload = frame.payload
        data = self.resolve(payload).encode() if isinstance(payload, str) else self.resolve_bytes(payload)
        self.probe += 1
        got, closed, code = await self.fuzzer.exchange(data, frame.binary, f"probe-{self.probe}")
        codes = [f.get("code") for f in got if f["type"] == "error"]
        if len(data) > HARD_LIMIT:
            # 1009; or no close frame at all when the server hangs up while the
            # client is still writing the megabyte and the TCP reset eats it.
            assert closed and code in (1009, 1006, None), f"over {HARD_LIMIT} bytes: close {code}, frames {got}"
        elif not frame.binary and _not_utf8(data):
            # RFC 6455 8.1 fails the connection (1007); the protocol's bad-json is as good.
            assert code == 1007 if closed else p.BAD_JSON in codes, f"not UTF-8: close {code}, frames {got}"
        else:
            assert not closed, f"unexpected close {code}; frames {got}"
            if frame.expect is not None:
                assert frame.expect in codes, f"expected {frame.expect!r}, got {got}"
        if closed:
            await self.fuzzer.open(resume=True)
        self.check_health()

    def resolve_bytes(self, raw: bytes) -> bytes:
        for holder, real in ((SELF, self.fuzzer.id), (TARGET, self.target.id), (POLLER, self.poller_id)):
            raw = raw.replace(holder.encode(), real.encode())
        return raw

    # -- HTTP cases ------------------------------------------------------------------------------------------

    async def request(self, method: str, url: str | URL, what: str, body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, Any] | None:
        """Send one request; its status and checked body (see check_response).

        None when the connection dropped while a request body was still being
        written: the server may refuse a request (400, 405, 413, 415) before it
        has read the body, and close. That is no escape for a crash: an
        unhandled exception is in the log, which every case checks.
        """
        try:
            async with self.http.request(method, url, headers=headers, data=body) as resp:
                return resp.status, self.check_response(resp.status, resp.content_type, await resp.read(), what)
        except aiohttp.ClientResponseError as exc:  # an answer the client cannot parse, e.g. a 400 with a body to HEAD
            assert exc.status < 500, f"{what} -> {exc.status}"
            return None
        except aiohttp.ClientConnectionError as exc:
            assert body is not None and body != b"", f"{what}: connection dropped: {exc!r}"
            return None

    def check_response(self, status: int, ctype: str, body: bytes, what: str) -> Any:
        assert status < 500, f"{what} -> {status}: {body[:500]!r}"
        text = body.decode(errors="replace")
        for s in self.secret_strings:
            assert s not in text, f"{what} leaks a bystander: {text[:300]}"
        if ctype == "application/json" and body:  # (HEAD answers have none)
            obj = json.loads(body)
            if status >= 400:
                assert isinstance(obj, dict) and obj.get("type") == "error" and obj.get("code") in p.ERROR_CODES, \
                    f"{what} -> {status}: {text[:300]}"
            return obj
        return None

    async def api_case(self, req: Api) -> None:
        if time.monotonic() - self.poller_born > 30:
            await self.new_poller()  # long before it could expire between examples
        sid = {POLLER: self.poller_id, TARGET: self.target.id}.get(req.sid, req.sid)
        query = dict(req.query)
        if req.path.endswith("/messages"):
            query.setdefault("wait", "0")  # the default, 25 s, would hang the case (test_polling covers it)
        url = URL(self.inst.base + req.path.replace("{sid}", sid), encoded="%" in sid).with_query(query)
        token = {"valid": f"Bearer {self.poller_token}", "valid-lower": f"bearer  {self.poller_token} ",
                 "forged": "Bearer " + secrets.token_urlsafe(32), "empty": "Bearer ",
                 "basic": "Basic " + self.poller_token, "none": None}.get(req.auth, req.auth)
        headers = dict(req.headers)
        if token is not None:
            headers["Authorization"] = token
        what = f"{req.method} {url} auth={req.auth}"
        if req.path == "/ws":
            await self.upgrade_case(url, headers, what)
            return
        big = req.body is not None and len(req.body) > 1 << 20
        data = io.BytesIO(req.body) if big else req.body  # aiohttp's client wants big bodies as files
        answer = await self.request(req.method, url, what, data, headers)
        if answer is None:
            return
        status, obj = answer
        owner = (req.sid == POLLER and req.auth in ("valid", "valid-lower")
                 and req.path.startswith("/api/sessions/{sid}"))
        if owner and req.method in ("GET", "POST", "DELETE") and not req.path.endswith("/messages/"):
            right_method = req.method == "DELETE" if req.path.endswith("{sid}") else req.method != "DELETE"
            if right_method:
                assert status != 401, f"{what}: the owner's token was refused"
        if status == 200 and req.method == "GET" and req.path.endswith("{sid}/messages"):
            assert isinstance(obj, list) and all(m.get("type") in SERVER_TYPES for m in obj), obj
        if status == 204:
            await self.new_poller()  # the fuzzer deleted its own session

    async def upgrade_case(self, url: URL, headers: dict[str, str], what: str) -> None:
        try:
            ws = await self.http.ws_connect(url, headers=headers, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            assert 400 <= exc.status < 500, f"{what} -> {exc.status}"
            return
        async with ws:
            first = await ws.receive(timeout=3)
            assert first.type is WSMsgType.TEXT, f"{what}: {first}"
            frame = check_frame(first.data, self.secret_strings)
            if frame["type"] == "error":   # a refused resume: unauthorized, then close 4401
                assert frame["code"] == p.UNAUTHORIZED, frame
                closing = await ws.receive(timeout=3)
                assert closing.type is WSMsgType.CLOSE and closing.data == 4401, closing
            else:
                assert frame["type"] == "welcome" and "resume" not in url.query, frame
                await ws.close(code=1000)

    async def path_case(self, path: str) -> None:
        url = URL(self.inst.base + path, encoded=True)
        async with self.http.get(url) as resp:
            body = await resp.read()
            self.check_response(resp.status, resp.content_type, body, f"GET {path}")
        if resp.status == 200:
            assert body in self.static_files or (url.path.startswith("/uploads/") and body in self.upload_contents()), \
                f"GET {path} served something outside the static and upload roots: {body[:200]!r}"

    def upload_contents(self) -> set[bytes]:
        return {f.read_bytes() for f in self.inst.uploads.iterdir()}

    async def upload_case(self, spec: dict[str, Any]) -> None:
        if spec["kind"] == "form":
            form = aiohttp.FormData()
            for name, value in spec["fields"].items():
                form.add_field(name, value)
            for filename, ctype, content in spec["files"]:
                form.add_field("file", content, filename=filename, content_type=ctype or None)
            try:
                data: Any = form()
            except (TypeError, ValueError):
                assume(False)  # not a form aiohttp's client can build
            headers = {}
        else:
            data, headers = spec["body"], {"Content-Type": spec["content_type"]}
        answer = await self.request("POST", self.inst.base + "/api/uploads", f"upload {spec!r:.300}", data, headers)
        status, obj = answer or (None, None)
        if status == 201:
            name = obj["url"].removeprefix("/uploads/")
            self.uploaded.add(name)
            async with self.http.get(self.inst.base + obj["url"]) as got:
                assert got.status == 200 and len(await got.read()) == obj["size"] <= UPLOAD_LIMIT
        on_disk = {f.name for f in self.inst.uploads.iterdir()}
        assert on_disk == self.uploaded, f"refused uploads left files behind: {on_disk - self.uploaded}"

    # -- the end -----------------------------------------------------------------------------------------------

    def assert_survived(self) -> None:
        """Process alive, /health 200, no error logged, bystanders untouched and working."""
        time.sleep(0.2)  # let the last log lines land
        self.check_health()

        async def health() -> int:
            async with self.http.get(self.inst.base + "/health") as resp:
                return resp.status

        assert self.run(health()) == 200
        self.run(self.bystanders_still_work())

    async def bystanders_still_work(self) -> None:
        leaked = self.host.drained() + self.guest.drained()
        assert not leaked, f"the bystander room received traffic during the fuzz run: {leaked}"
        assert not self.host.problems and not self.guest.problems, self.host.problems + self.guest.problems
        await self.guest.send(_dump({"type": "offer", "to": self.host.id, "data": {"sdp": "v=0"}}, True).encode())
        got = await asyncio.wait_for(self.host.frames.get(), 3)
        assert got == {"type": "offer", "from": self.guest.id, "data": {"sdp": "v=0"}, "seq": got["seq"]}, got

    async def teardown(self) -> None:
        self.target_sink.cancel()
        for conn in (self.fuzzer, self.target, self.host, self.guest):
            await conn.stop(code=1000)
        await self.http.close()


# -- fixtures ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_loop() -> Any:
    """One event loop for the module: the instances' clients live across examples."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _fuzz(loop: asyncio.AbstractEventLoop, workdir: Path, env: dict[str, str] | None = None) -> Any:
    inst = start_instance(workdir, env)
    harness = Fuzz(loop, inst)
    try:
        harness.run(harness.setup())
        yield harness
        harness.run(harness.teardown())
    finally:
        stop_app(inst)


@pytest.fixture(scope="module")
def fuzz(fuzz_loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An instance with the in-memory hub, its fuzzing peers and its bystanders."""
    yield from _fuzz(fuzz_loop, tmp_path_factory.mktemp("fuzz-memory"))


@pytest.fixture(scope="module")
def cluster_fuzz(fuzz_loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory,
                 redis_server: Any) -> Any:
    """The same with the Redis hub, against the real redis-server of conftest.py."""
    # The URL carries the password: by environment, as the command line refuses it.
    yield from _fuzz(fuzz_loop, tmp_path_factory.mktemp("fuzz-redis"), {"SIGNALING_REDIS_URL": redis_server["url"]})


def fuzz_settings(examples: int) -> Callable[[Any], Any]:
    return settings(max_examples=examples, deadline=None, derandomize=False, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example, HealthCheck.filter_too_much])


# -- the in-memory hub: 10,000 cases ---------------------------------------------------------------------------------


@fuzz_settings(4000)
@given(frame=object_frames)
def test_ws_messages_of_every_type(fuzz: Fuzz, frame: Frame) -> None:
    """Objects of every message type with right and wrong field types: documented replies, no hang."""
    fuzz.run(fuzz.ws_case(frame))


@fuzz_settings(3000)
@given(frame=raw_frames)
@example(frame=_deep(300, "[", "data", True))      # deeper than orjson encodes: relaying it crashed the handler
@example(frame=_deep(10_000, "[", "top", True))
@example(frame=Frame(b"\xff\xfe"))
@example(frame=_oversize(HARD_LIMIT + 1, "x"))
@example(frame=_oversize(MESSAGE_LIMIT - 10, "\u20ac"))
def test_ws_raw_frames(fuzz: Fuzz, frame: Frame) -> None:
    """Raw text, deep nesting, huge numbers, bad UTF-8, binary, empty and oversize frames."""
    fuzz.run(fuzz.ws_case(frame))


@fuzz_settings(1800)
@given(req=api_requests)
@example(req=Api("POST", "/api/sessions/{sid}/messages", POLLER, "valid", {}, {}, _big_and_deep(300)))  # was a 500
def test_http_polling_api(fuzz: Fuzz, req: Api) -> None:
    """The polling API and WebSocket upgrades with random bodies, headers, tokens, ids and parameters: never 5xx."""
    fuzz.run(fuzz.api_case(req))
    fuzz.check_health()


@fuzz_settings(800)
@given(path=paths)
@example(path="/" + "a" * 300)                      # a name too long for the file system answered 500
@example(path="/..%2f..%2fetc%2fpasswd")
@example(path="/uploads/..%2f..%2fserver.log")
def test_http_paths(fuzz: Fuzz, path: str) -> None:
    """Random paths under /uploads/ and the static client, traversal included: 4xx or a file from the right root."""
    fuzz.run(fuzz.path_case(path))
    fuzz.check_health()


@fuzz_settings(400)
@given(spec=upload_forms | upload_raw)
def test_http_uploads(fuzz: Fuzz, spec: dict[str, Any]) -> None:
    """Random and broken multipart uploads: 201 with a stored file, or 4xx and nothing on disk."""
    fuzz.run(fuzz.upload_case(spec))
    fuzz.check_health()


def test_instance_survived_and_leaked_nothing(fuzz: Fuzz) -> None:
    """After the whole run: process alive, /health 200, no error logged, bystanders untouched and working."""
    fuzz.assert_survived()


# -- the Redis hub: the message paths again (static files and uploads do not depend on the hub) ------------------------


@pytest.mark.redis
@fuzz_settings(1200)
@given(frame=object_frames | raw_frames)
@example(frame=_deep(300, "[", "data", True))
def test_cluster_ws_frames(cluster_fuzz: Fuzz, frame: Frame) -> None:
    """Message objects and raw frames through the Redis hub: documented replies, no hang."""
    cluster_fuzz.run(cluster_fuzz.ws_case(frame))


@pytest.mark.redis
@fuzz_settings(400)
@given(req=api_requests)
def test_cluster_http_polling_api(cluster_fuzz: Fuzz, req: Api) -> None:
    """The polling API through the Redis hub: never 5xx."""
    cluster_fuzz.run(cluster_fuzz.api_case(req))
    cluster_fuzz.check_health()


@pytest.mark.redis
def test_cluster_survived_and_leaked_nothing(cluster_fuzz: Fuzz) -> None:
    """After the Redis run: process alive, /health 200, no error logged, bystanders untouched and working."""
    cluster_fuzz.assert_survived()
