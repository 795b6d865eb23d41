"""Private rooms: one host, many participants, an optional secret.

The rules of who sees and signals whom live here and nowhere else:

* a participant sees and signals only its room's host;
* the host sees and signals every participant of its room;
* nothing crosses rooms, and room members and public peers never meet.
"""

from __future__ import annotations

import hmac
from typing import Any, Generic, Protocol, TypeVar

from . import protocol as p


class Member(Protocol):
    """What a room needs of a session (session.py's ``Session`` is one). A protocol,
    so that this module imports nothing of session.py, which imports ``RoomRef``."""

    id: str
    room: RoomRef | None
    role: str | None
    name: str


class RoomRef:
    """A room's name: what a session knows of its room. The memory backend's rooms are
    ``Room`` objects; the Redis backend's sessions know no more than the name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


M = TypeVar("M", bound=Member)  # the type of session a room holds


class Room(RoomRef, Generic[M]):
    __slots__ = ("secret", "host", "members")

    def __init__(self, name: str, secret: str | None) -> None:
        super().__init__(name)
        self.secret = secret
        self.host: M | None = None
        self.members: dict[str, M] = {}

    def check_join(self, role: str, secret: str | None, limit: int, ref: Any = None) -> None:
        """Raise ProtocolError if a peer may not join with this role and secret."""
        if self.secret is not None and (
            secret is None or not hmac.compare_digest(self.secret.encode(), secret.encode())
        ):
            raise p.ProtocolError(p.BAD_SECRET, "wrong or missing room secret", ref)
        if role == "host" and self.host is not None:
            raise p.ProtocolError(p.ROOM_HAS_HOST, "this room already has a host", ref)
        if len(self.members) >= limit:
            raise p.ProtocolError(p.ROOM_FULL, f"room holds at most {limit} peers", ref)

    def add(self, sess: M, role: str, name: str) -> None:
        sess.room = self
        sess.role = role
        sess.name = name
        self.members[sess.id] = sess
        if role == "host":
            self.host = sess

    def remove(self, sess: M) -> None:
        self.members.pop(sess.id, None)
        if self.host is sess:
            self.host = None
        sess.room = None
        sess.role = None

    def visible_to(self, sess: M) -> list[M]:
        """The members ``sess`` may see and signal."""
        if sess.role == "host":
            return [m for m in self.members.values() if m is not sess]
        return [self.host] if self.host is not None and self.host is not sess else []


def peer_info(sess: Member) -> dict[str, Any]:
    return {"id": sess.id, "role": sess.role, "name": sess.name}


def may_signal(sender: Member, target: Member, public_mode: bool) -> bool:
    """The mode rules of docs/protocol.md, for sessions on one instance."""
    if sender is target:
        return False
    room = sender.room
    if room is None:
        return public_mode and target.room is None
    if target.room is not room:
        return False
    return sender.role == "host" or target.role == "host"
