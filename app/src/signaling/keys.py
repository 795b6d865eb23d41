"""Typed application state: every ``app[...]`` key lives here."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .config import Settings
from .hub import Hub
from .metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
STATIC_ROOT = web.AppKey("static_root", Path)
