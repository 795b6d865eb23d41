"""Typed application state: every ``app[...]`` key lives here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from .config import Settings
from .hub import Hub
from .metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
HUB: web.AppKey[Hub[Any]] = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
STATIC_ROOT = web.AppKey("static_root", Path)
