"""``python -m signaling`` / ``signaling``: run one instance.

Exit codes: 0 after draining, 2 for a bad setting, 3 when the installed
aiohttp lacks the internals the WebSocket layer relies on (wsconn.py).

Draining on SIGTERM (and SIGINT): ``/ready`` answers 503 at once, the
listening socket closes so new connections are refused (a proxy moves on to
the next upstream), WebSocket peers are closed with 1001 so they resume on
another instance, hanging polls are answered, and the process exits when the
last handler is done or ``shutdown_grace`` has passed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from . import __version__, logs
from .app import create_app
from .config import ConfigError, Settings, load
from .keys import HUB
from .wsconn import AiohttpMismatch, check_aiohttp

log = logging.getLogger("signaling")

EXIT_CONFIG = 2        # a setting is missing, unknown or out of range
EXIT_INCOMPATIBLE = 3  # the installed aiohttp lacks internals the WebSocket layer relies on


async def serve(settings: Settings, started: asyncio.Event | None = None) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=settings.shutdown_grace)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=4096, reuse_address=True)
    await site.start()
    hub = app[HUB]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening", extra={"host": settings.host, "port": settings.port, "version": __version__,
                                  "backend": "redis" if settings.redis_url else "memory"})
    if started is not None:
        started.set()
    await stop.wait()
    log.info("draining", extra={"sessions": len(hub.sessions)})
    hub.draining = True
    for listening in list(runner.sites):  # refuse new connections from now on
        await listening.stop()
    try:
        await asyncio.wait_for(hub.drain(), settings.shutdown_grace)
        await asyncio.wait_for(runner.cleanup(), settings.shutdown_grace)
    except TimeoutError:
        log.warning("grace period over; exiting with connections open")
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    try:
        settings, args = load(argv)
    except ConfigError as exc:
        print(f"signaling: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.version:
        print(__version__)
        return 0
    try:
        check_aiohttp()
    except AiohttpMismatch as exc:
        print(f"signaling: refusing to start: {exc}", file=sys.stderr)
        return EXIT_INCOMPATIBLE
    logs.setup(settings.log_level, settings.name)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional on exotic platforms
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
