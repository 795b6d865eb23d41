"""Small HTTP helpers shared by the views: JSON errors, client address, origin."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any, overload

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError
from yarl import URL

from . import protocol as p

JSON = "application/json"

STATUS = {
    p.BAD_JSON: 400, p.BAD_MESSAGE: 400, p.UNAUTHORIZED: 401, p.FORBIDDEN: 403,
    p.TOO_LARGE: 413, p.RATE_LIMITED: 429, p.UNAVAILABLE: 503,
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=p.dumps(body), status=status, content_type=JSON, headers=headers)


def error_response(code: str, message: str, status: int | None = None) -> web.Response:
    return json_response(p.error(code, message), STATUS.get(code, 400) if status is None else status)


@web.middleware
async def payload_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body that cannot be read (a broken ``Content-Encoding``, a cut-off chunk)
    is the client's fault: 400 ``bad-message``, not a 500. Handlers read the
    whole body before acting on it, so nothing was half done."""
    try:
        return await handler(request)
    except RequestPayloadError:
        return error_response(p.BAD_MESSAGE, "the request body cannot be read (broken Content-Encoding?)")


@lru_cache(maxsize=64)
def _networks(trusted: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in trusted)


def client_address(request: web.Request, trusted: tuple[str, ...]) -> str:
    """The real client address: X-Forwarded-For is believed only from a trusted proxy."""
    peer = request.remote or ""
    forwarded = request.headers.get("X-Forwarded-For")
    if not forwarded:
        return peer
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if not any(addr in net for net in _networks(trusted)):
        return peer
    # Walk right to left past our own proxies; the first untrusted hop is the client.
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            hop_addr = ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if not any(hop_addr in net for net in _networks(trusted)):
            return hop
    return hops[0] if hops else peer


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    """Browsers always send Origin on a WebSocket upgrade; other clients may not."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if allowed:
        return origin.rstrip("/") in allowed
    try:
        origin_host = URL(origin).host
    except ValueError:
        return False
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return origin_host is not None and origin_host.lower() == host.strip("[]").lower()


@overload
def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int: ...
@overload
def query_int(request: web.Request, name: str, default: None, low: int, high: int) -> int | None: ...
def query_int(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise p.ProtocolError(p.BAD_MESSAGE, f"'{name}' must be an integer") from None
    if not low <= value <= high:
        raise p.ProtocolError(p.BAD_MESSAGE, f"'{name}' must be between {low} and {high}")
    return value
