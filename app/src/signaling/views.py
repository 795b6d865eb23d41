"""Plain HTTP endpoints: health, readiness, metrics, ICE servers, the browser client."""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from . import __version__
from .ice import ice_servers
from .keys import HUB, METRICS_REGISTRY, SETTINGS, STATIC_ROOT
from .metrics import CONTENT_TYPE, render
from .web_util import json_response


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


async def ready(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    if hub.draining:
        return json_response({"status": "draining"}, status=503)
    if not hub.ready:
        return json_response({"status": "backend unavailable"}, status=503)
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = render(request.app[METRICS_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})


async def ice(request: web.Request) -> web.Response:
    """ICE servers; TURN credentials name the caller's session when it shows its token."""
    settings = request.app[SETTINGS]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    sess = await request.app[HUB].find(token.strip()) if scheme.lower() == "bearer" else None
    peer = sess.id if sess is not None else "anonymous-" + secrets.token_urlsafe(6)
    return json_response({"ice_servers": ice_servers(settings, peer, time.time()), "ttl": settings.turn_ttl},
                         headers={"Cache-Control": "no-store"})


async def static(request: web.Request) -> web.StreamResponse:
    """Files of the browser client; ``/`` is index.html. Never leaves the root."""
    root = request.app[STATIC_ROOT]
    rel = request.match_info.get("path", "") or "index.html"
    if "\x00" in rel or rel.startswith("/") or any(part in ("", ".", "..") for part in rel.split("/")):
        raise web.HTTPNotFound()
    try:
        path = (root / rel).resolve()
        found = path.is_relative_to(root) and path.is_file()
    except OSError:  # a name the file system refuses, such as one over 255 bytes
        found = False
    if not found:
        raise web.HTTPNotFound()
    headers = {"X-Content-Type-Options": "nosniff"}
    headers["Cache-Control"] = "no-cache" if path.suffix == ".html" else "public, max-age=3600"
    return web.FileResponse(path, headers=headers)
