"""The message validator, by table and by Hypothesis."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling import protocol as p

LIMIT = 65536


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "offer", "to": "abc", "data": {"sdp": "v=0"}},
        {"type": "candidate", "to": "abc", "data": None},
        {"type": "bye", "to": "abc", "data": 1, "id": "x"},
        {"type": "join", "room": "Room_1-2", "role": "host"},
        {"type": "join", "room": "r", "role": "participant", "name": "Ana", "secret": "s"},
        {"type": "leave"}, {"type": "ping", "id": 9007199254740992}, {"type": "list"}, {"type": "ack", "seq": 0},
    ],
)
def test_valid_messages_pass_unchanged(msg):
    assert p.parse(json.dumps(msg), LIMIT) == msg


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", p.BAD_JSON), ("nul", p.BAD_JSON), ('"str"', p.BAD_MESSAGE), ("{}", p.BAD_MESSAGE),
        ('{"type": "join", "room": "", "role": "host"}', p.BAD_MESSAGE),
        ('{"type": "join", "room": "r", "role": "host", "secret": 5}', p.BAD_MESSAGE),
        ('{"type": "join", "room": "r", "role": "host", "name": "' + "n" * 65 + '"}', p.BAD_MESSAGE),
        ('{"type": "offer", "to": "", "data": 1}', p.BAD_MESSAGE),
        ('{"type": "offer", "to": "' + "t" * 65 + '", "data": 1}', p.BAD_MESSAGE),
        ('{"type": "ping", "id": true}', p.BAD_MESSAGE),
        ('{"type": "ping", "id": 9007199254740993}', p.BAD_MESSAGE),
        ('{"type": "ack", "seq": "1"}', p.BAD_MESSAGE),
        ('{"type": "ack", "seq": true}', p.BAD_MESSAGE),
        ("x" * (LIMIT + 1), p.TOO_LARGE),
    ],
)
def test_invalid_messages_get_their_code(raw, code):
    with pytest.raises(p.ProtocolError) as exc:
        p.parse(raw, LIMIT)
    assert exc.value.code == code


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
field_values = json_values | st.sampled_from(["offer", "answer", "candidate", "bye", "join", "leave", "ping",
                                              "list", "ack", "host", "participant", "room-1"])
messages = st.dictionaries(
    st.sampled_from(["type", "to", "data", "room", "role", "name", "secret", "id", "seq", "extra"]),
    field_values, max_size=7,
)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_validator_accepts_or_raises_a_known_code(msg):
    """Any object: either valid (and then the fields routing reads are well-typed) or a known error code."""
    try:
        out = p.validate(msg)
    except p.ProtocolError as exc:
        assert exc.code in p.ERROR_CODES
        return
    kind = out["type"]
    assert kind in p.RELAYED | {"join", "leave", "ping", "list", "ack"}
    if kind in p.RELAYED:
        assert isinstance(out["to"], str) and 0 < len(out["to"]) <= 64 and "data" in out
    if kind == "join":
        assert p.ROOM_RE.fullmatch(out["room"]) and out["role"] in p.ROLES
    if kind == "ack":
        assert isinstance(out["seq"], int) and out["seq"] >= 0


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_decode_never_raises_anything_but_protocol_errors(raw):
    try:
        p.parse(raw, LIMIT)
    except p.ProtocolError as exc:
        assert exc.code in p.ERROR_CODES
