"""Wire protocol v1: message validation and encoding (see docs/protocol.md).

``parse`` turns one raw frame or body into a validated ``dict`` or raises
``ProtocolError`` carrying the error code the client gets back. Nothing here
does I/O, so it is cheap to fuzz.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

VERSION: Final = 1

# Error codes (docs/protocol.md, "Error codes").
BAD_JSON: Final = "bad-json"
BAD_MESSAGE: Final = "bad-message"
TOO_LARGE: Final = "too-large"
UNKNOWN_PEER: Final = "unknown-peer"
FORBIDDEN: Final = "forbidden"
ROOM_FULL: Final = "room-full"
ROOM_HAS_HOST: Final = "room-has-host"
BAD_SECRET: Final = "bad-secret"
RATE_LIMITED: Final = "rate-limited"
UNAUTHORIZED: Final = "unauthorized"
UNAVAILABLE: Final = "unavailable"   # cluster mode: Redis cannot be reached; retry
OUT_OF_ORDER: Final = "out-of-order"  # a cseq beyond the next one expected; not handled
ERROR_CODES: Final = (
    BAD_JSON, BAD_MESSAGE, TOO_LARGE, UNKNOWN_PEER, FORBIDDEN, ROOM_FULL,
    ROOM_HAS_HOST, BAD_SECRET, RATE_LIMITED, UNAUTHORIZED, UNAVAILABLE, OUT_OF_ORDER,
)

# What the server does with a message's client sequence number (``cseq``).
HANDLE: Final = 0   # the next one expected, or none given: handle it
REPEAT: Final = 1   # already handled (a resend): drop it silently
GAP: Final = 2      # beyond the next one expected: refuse it (OUT_OF_ORDER)
MAX_CSEQ: Final = 2**53

RELAYED: Final = frozenset(("offer", "answer", "candidate", "bye"))
ROLES: Final = ("host", "participant")
ROOM_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_NAME: Final = 64
MAX_SECRET: Final = 128
MAX_PEER_ID: Final = 64
MAX_REF: Final = 128

dumps = orjson.dumps
JSONDecodeError = orjson.JSONDecodeError


class ProtocolError(Exception):
    """A message the server refuses; ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str, ref: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


def error(code: str, message: str, ref: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        msg["ref"] = ref
    return msg


def decode(raw: str | bytes, limit: int) -> Any:
    """JSON-decode one frame or body, enforcing the size limit first."""
    if len(raw) > limit:
        raise ProtocolError(TOO_LARGE, f"message is larger than {limit} bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(BAD_JSON, f"not valid JSON: {exc.msg}") from None


def _ref(msg: dict[str, Any]) -> Any:
    ref = msg.get("id")
    if ref is None:
        return None
    if isinstance(ref, bool) or not isinstance(ref, (str, int)):
        raise ProtocolError(BAD_MESSAGE, "'id' must be a string or an integer")
    if isinstance(ref, str) and len(ref) > MAX_REF:
        raise ProtocolError(BAD_MESSAGE, f"'id' is longer than {MAX_REF} characters")
    if isinstance(ref, int) and not -(2**53) <= ref <= 2**53:
        raise ProtocolError(BAD_MESSAGE, "'id' is out of range")
    return ref


def cseq_of(msg: Any) -> int | None:
    """The message's client sequence number: a positive integer, or None when it has none.

    Checked before anything else, so that a message refused for another
    reason still counts as handled (docs/protocol.md, "Reliable sending").
    """
    if not isinstance(msg, dict):
        return None
    cseq = msg.get("cseq")
    if cseq is None:
        return None
    if isinstance(cseq, bool) or not isinstance(cseq, int) or not 0 < cseq <= MAX_CSEQ:
        raise ProtocolError(BAD_MESSAGE, f"'cseq' must be an integer from 1 to {MAX_CSEQ}", _ref(msg))
    return cseq


def _string(msg: dict[str, Any], key: str, limit: int, ref: Any, required: bool = True) -> str | None:
    value = msg.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ProtocolError(BAD_MESSAGE, f"'{key}' must be a non-empty string", ref)
    if len(value) > limit:
        raise ProtocolError(BAD_MESSAGE, f"'{key}' is longer than {limit} characters", ref)
    return value


def validate(msg: Any) -> dict[str, Any]:
    """Check one decoded client message; return it (unchanged) or raise ProtocolError.

    The caller reads only the fields checked here, so nothing unexpected
    reaches the routing code.
    """
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_MESSAGE, "a message must be a JSON object")
    ref = _ref(msg)
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(BAD_MESSAGE, "'type' must be a string", ref)
    if kind in RELAYED:
        _string(msg, "to", MAX_PEER_ID, ref)
        if "data" not in msg:
            raise ProtocolError(BAD_MESSAGE, f"'{kind}' needs 'data'", ref)
        return msg
    if kind == "join":
        room = msg.get("room")
        if not isinstance(room, str) or not ROOM_RE.fullmatch(room):
            raise ProtocolError(BAD_MESSAGE, "'room' must match [A-Za-z0-9_-]{1,64}", ref)
        if msg.get("role") not in ROLES:
            raise ProtocolError(BAD_MESSAGE, "'role' must be 'host' or 'participant'", ref)
        name = msg.get("name", "")
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise ProtocolError(BAD_MESSAGE, f"'name' must be a string of at most {MAX_NAME} characters", ref)
        _string(msg, "secret", MAX_SECRET, ref, required=False)
        return msg
    if kind in ("leave", "ping", "list"):
        return msg
    if kind == "ack":
        seq = msg.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
            raise ProtocolError(BAD_MESSAGE, "'seq' must be a non-negative integer", ref)
        return msg
    raise ProtocolError(BAD_MESSAGE, f"unknown message type {kind[:40]!r}", ref)


def encode_data(msg: dict[str, Any]) -> bytes:
    """The ``data`` of a validated relayed message, encoded once for its target.

    orjson decodes 1024 levels of nesting but encodes only 254: deeper
    ``data`` passes ``validate`` and is refused here, before anything is
    delivered.
    """
    try:
        return dumps(msg["data"])
    except orjson.JSONEncodeError:
        raise ProtocolError(BAD_MESSAGE, "'data' is nested too deeply", msg.get("id")) from None


def encoded_size(item: Any) -> int:
    """Size of one message once encoded; 0 when it cannot be (``encode_data`` refuses it later)."""
    try:
        return len(dumps(item))
    except orjson.JSONEncodeError:
        return 0


def parse(raw: str | bytes, limit: int) -> dict[str, Any]:
    """decode + validate, for the WebSocket transport."""
    return validate(decode(raw, limit))


def parse_batch(raw: bytes, limit: int, max_messages: int) -> list[Any]:
    """Decode an HTTP body holding one message or an array of them.

    Returns the raw (unvalidated) items so each one gets its own error reply.
    """
    body = decode(raw, limit * max_messages)
    if isinstance(body, list):
        if not body:
            raise ProtocolError(BAD_MESSAGE, "empty message array")
        if len(body) > max_messages:
            raise ProtocolError(TOO_LARGE, f"more than {max_messages} messages in one request")
        return body
    return [body]
