"""ICE server lists, with TURN credentials in coturn's REST scheme.

coturn with ``use-auth-secret`` and ``static-auth-secret=S`` accepts username
``<unix expiry>:<user>`` with password ``base64(HMAC-SHA1(S, username))``
until the expiry passes, so the server can hand out short-lived credentials
without talking to coturn.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from .config import Settings


def turn_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def ice_servers(settings: Settings, peer_id: str, now: float) -> list[dict[str, Any]]:
    """The STUN/TURN list for one peer; TURN entries get credentials valid for ``turn_ttl``."""
    servers = [dict(server) for server in settings.ice_servers]
    if settings.turn_secret and settings.turn_urls:
        username = f"{int(now) + settings.turn_ttl}:{peer_id}"
        servers.append({
            "urls": list(settings.turn_urls),
            "username": username,
            "credential": turn_credential(settings.turn_secret, username),
        })
    return servers
