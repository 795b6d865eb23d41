"""The application factory: builds the hub, the routes and their lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from . import __version__, polling, uploads, views, ws
from .config import Settings
from .hub import Hub
from .keys import HUB, METRICS, METRICS_REGISTRY, SETTINGS, STATIC_ROOT
from .metrics import Metrics, make_registry
from .web_util import payload_errors
from .wsconn import check_aiohttp

PACKAGED_STATIC = Path(__file__).parent / "static"


def make_hub(settings: Settings, metrics: Metrics) -> Hub[Any]:
    """The dispatcher over the backend the settings ask for: Redis, or this process's memory."""
    if settings.redis_url:
        from .cluster import make_redis_hub  # imported only when clustering

        return make_redis_hub(settings, metrics)
    return Hub(settings, metrics)


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    await hub.start()
    yield
    await hub.stop()


async def _on_shutdown(app: web.Application) -> None:
    await app[HUB].drain()


def create_app(settings: Settings) -> web.Application:
    check_aiohttp()  # AiohttpMismatch before anything is built; main() reports it and exits 3
    # Request bodies: uploads stream and check their own limit; the rest is small.
    middlewares = [payload_errors]
    if settings.redis_url:
        from .cluster import unavailable_middleware

        middlewares.append(unavailable_middleware)
    app = web.Application(
        client_max_size=max(settings.max_message_size * polling.MAX_BATCH, 1 << 20), middlewares=middlewares
    )
    metrics = Metrics()
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[HUB] = make_hub(settings, metrics)
    app[METRICS_REGISTRY] = make_registry(metrics, app[HUB].gauges, __version__)
    app[STATIC_ROOT] = Path(settings.static_dir or PACKAGED_STATIC).resolve()
    app.cleanup_ctx.append(_hub_ctx)
    app.on_shutdown.append(_on_shutdown)

    r = app.router
    r.add_get("/ws", ws.websocket)
    r.add_post("/api/sessions", polling.create)
    r.add_post("/api/sessions/{id}/messages", polling.send)
    r.add_get("/api/sessions/{id}/messages", polling.receive)
    r.add_delete("/api/sessions/{id}", polling.delete)
    r.add_get("/api/ice-servers", views.ice)
    r.add_post("/api/uploads", uploads.upload)
    r.add_get("/uploads/{name}", uploads.download)
    r.add_get("/health", views.health)
    r.add_get("/ready", views.ready)
    r.add_get("/metrics", views.metrics)
    r.add_get("/{path:.*}", views.static)
    return app
