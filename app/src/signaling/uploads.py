"""File uploads: ``POST /api/uploads`` and, in development, ``GET /uploads/<name>``.

A file is streamed to a temporary name inside the uploads directory, counted
as it arrives, and renamed to a random public name only when it is complete
and allowed; a refused upload leaves nothing behind. In production the proxy
serves the directory itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

from aiohttp import BodyPartReader, web

from . import protocol as p
from .keys import SETTINGS
from .web_util import error_response, json_response

EXTENSIONS = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
    "application/pdf": ".pdf", "text/plain": ".txt", "audio/ogg": ".ogg", "audio/mpeg": ".mp3",
    "video/webm": ".webm", "video/mp4": ".mp4", "application/json": ".json",
}
NAME_RE = re.compile(r"[A-Za-z0-9_-]{22}\.[a-z0-9]{2,5}")
CHUNK = 64 * 1024
UPLOAD_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "public, max-age=86400, immutable",
}


async def upload(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.uploads_dir:
        return error_response(p.FORBIDDEN, "uploads are switched off on this server")
    limit = settings.upload_max_size
    if request.content_length is not None and request.content_length > limit + CHUNK:
        return error_response(p.TOO_LARGE, f"uploads are limited to {limit} bytes")
    try:
        reader = await request.multipart()
        part = await reader.next()
    except (AssertionError, ValueError, KeyError):  # not multipart, or broken
        return error_response(p.BAD_MESSAGE, "send multipart/form-data with one file")
    if not isinstance(part, BodyPartReader) or not part.filename:  # none, or a nested multipart
        return error_response(p.BAD_MESSAGE, "send multipart/form-data with one file")
    ctype = (part.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype not in settings.upload_types or ctype not in EXTENSIONS:
        return error_response(p.BAD_MESSAGE, f"content type {ctype[:60]!r} is not allowed", status=415)

    directory = Path(settings.uploads_dir)
    name = secrets.token_urlsafe(16) + EXTENSIONS[ctype]
    partial = directory / f".{name}.part"
    size = 0
    try:
        # Local disk in CHUNK-sized writes: quicker inline than a hop to a worker thread
        with open(partial, "xb") as fh:  # noqa: ASYNC230
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ValueError("too large")
                fh.write(chunk)
        if await reader.next() is not None:
            raise LookupError("more than one part")
        os.chmod(partial, 0o640)
        os.rename(partial, directory / name)
    except ValueError:
        return error_response(p.TOO_LARGE, f"uploads are limited to {limit} bytes")
    except LookupError:
        return error_response(p.BAD_MESSAGE, "send exactly one file")
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return json_response({"url": f"/uploads/{name}", "size": size, "type": ctype}, status=201)


async def download(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    name = request.match_info["name"]
    if not settings.uploads_dir or not NAME_RE.fullmatch(name):
        raise web.HTTPNotFound()
    path = Path(settings.uploads_dir) / name
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers=UPLOAD_HEADERS)
