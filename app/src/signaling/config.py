"""Settings: one dataclass, four sources.

Precedence is flags > ``SIGNALING_*`` environment variables > TOML file >
defaults. Every setting is validated when it is loaded, so a typo in a config
file stops the process at start-up with a message naming the key, instead of
surfacing as odd behaviour under load.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "SIGNALING_"


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range."""


def _doc(text: str, **kw: Any) -> dict[str, Any]:
    return {"doc": text, **kw}


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata=_doc("Address to listen on."))
    port: int = field(default=8080, metadata=_doc("TCP port to listen on.", min=1, max=65535))
    redis_url: str = field(
        default="",
        metadata=_doc("Redis URL (`redis://:password@host:6379/0`); empty = in-memory, single instance.",
                      secret="password"),
    )
    instance_id: str = field(default="", metadata=_doc("Name of this instance in logs and metrics; default host:port."))
    log_level: str = field(
        default="info", metadata=_doc("Log level.", choices=("debug", "info", "warning", "error"))
    )
    heartbeat: int = field(default=30, metadata=_doc("Seconds between server pings on a WebSocket.", min=1, max=3600))
    idle_timeout: int = field(
        default=60,
        metadata=_doc("Seconds without any frame from a WebSocket peer before it is dropped.", min=2, max=7200),
    )
    resume_window: int = field(
        default=60,
        metadata=_doc("Seconds a session survives a dropped connection, waiting for a resume.", min=0, max=3600),
    )
    resume_queue: int = field(
        default=256, metadata=_doc("Messages kept per session for replay on resume or poll retry.", min=1, max=65536)
    )
    poll_timeout: int = field(
        default=60, metadata=_doc("Seconds after its last poll that a long-polling session expires.", min=5, max=3600)
    )
    max_message_size: int = field(
        default=65536, metadata=_doc("Largest message in bytes; larger ones get `too-large`.", min=256, max=1048576)
    )
    room_max_peers: int = field(default=50, metadata=_doc("Most peers in one room.", min=2, max=10000))
    public_mode: bool = field(default=True, metadata=_doc("Allow 1:1 signaling by peer id between peers in no room."))
    private_mode: bool = field(default=True, metadata=_doc("Allow rooms with one host and many participants."))
    discovery: bool = field(default=False, metadata=_doc("Answer `list` with the ids of public peers."))
    rate_limit: float = field(
        default=50.0, metadata=_doc("Messages per second per session (token bucket rate).", min=0.1, max=1e6)
    )
    rate_limit_burst: int = field(default=100, metadata=_doc("Token bucket size per session.", min=1, max=1000000))
    allowed_origins: tuple[str, ...] = field(
        default=(), metadata=_doc("Origins allowed to open a WebSocket; empty = same origin only.")
    )
    trusted_proxies: tuple[str, ...] = field(
        default=("127.0.0.1/32", "::1/128"),
        metadata=_doc("Addresses or networks whose X-Forwarded-For is believed."),
    )
    shutdown_grace: float = field(
        default=10.0,
        metadata=_doc("Seconds a draining instance waits for peers to leave before it exits.", min=0, max=600),
    )
    ice_servers: tuple[dict[str, Any], ...] = field(
        default=(), metadata=_doc("STUN/TURN servers handed to clients: a list of `{urls, username?, credential?}`.")
    )
    turn_urls: tuple[str, ...] = field(
        default=(), metadata=_doc("TURN URLs that get time-limited credentials from `turn_secret`.")
    )
    turn_secret: str = field(
        default="", metadata=_doc("coturn `static-auth-secret`; enables REST-scheme credentials.", secret=True)
    )
    turn_ttl: int = field(default=86400, metadata=_doc("Lifetime in seconds of TURN credentials.", min=60, max=604800))
    uploads_dir: str = field(default="", metadata=_doc("Directory for uploads; empty = uploads off."))
    upload_max_size: int = field(
        default=10 * 1024 * 1024, metadata=_doc("Largest upload in bytes.", min=1, max=1 << 31)
    )
    upload_types: tuple[str, ...] = field(
        default=("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"),
        metadata=_doc("Content types accepted for upload."),
    )
    static_dir: str = field(default="", metadata=_doc("Directory of the browser client; empty = the packaged one."))

    @property
    def name(self) -> str:
        return self.instance_id or f"{self.host}:{self.port}"


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _kind(f: dataclasses.Field[Any]) -> str:
    t = str(f.type)
    if t.startswith("tuple[dict"):
        return "dicts"
    if t.startswith("tuple"):
        return "strs"
    return t  # "str" | "int" | "float" | "bool"


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a raw value from ``source`` into the field's type, or raise ConfigError."""
    f = FIELDS[name]
    kind = _kind(f)
    where = f"{name} (from {source})"
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
            value = int(value)
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ConfigError(f"{where}: expected a number, got {value!r}")
            value = float(value)
        elif kind == "str":
            if not isinstance(value, str):
                raise ConfigError(f"{where}: expected a string, got {value!r}")
        elif kind == "strs":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
            value = tuple(value)
        elif kind == "dicts":
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{where}: expected a list of tables, got {value!r}")
            value = tuple(dict(v) for v in value)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from exc
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(meta['choices'])}")
    if "min" in meta and not meta["min"] <= value <= meta["max"]:
        raise ConfigError(f"{where}: {value} is outside {meta['min']}..{meta['max']}")
    return value


def _check(settings: Settings) -> Settings:
    """Cross-field and structural checks."""
    for net in settings.trusted_proxies:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {net!r} is not an address or network") from exc
    for server in settings.ice_servers:
        urls = server.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        schemes = ("stun", "stuns", "turn", "turns")
        if not urls or not all(isinstance(u, str) and u.split(":", 1)[0] in schemes for u in urls):
            raise ConfigError(f"ice_servers: {server!r} needs urls starting with stun:, stuns:, turn: or turns:")
    for url in settings.turn_urls:
        if url.split(":", 1)[0] not in ("turn", "turns"):
            raise ConfigError(f"turn_urls: {url!r} must start with turn: or turns:")
    if settings.turn_urls and not settings.turn_secret:
        raise ConfigError("turn_urls is set but turn_secret is empty")
    if settings.idle_timeout <= settings.heartbeat:
        raise ConfigError(
            f"idle_timeout ({settings.idle_timeout}) must be longer than heartbeat ({settings.heartbeat})"
        )
    if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis_url must start with redis://, rediss:// or unix://")
    return settings


def from_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into raw values; unknown keys are an error."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return {k: _coerce(k, v, str(path)) for k, v in data.items()}


def from_env(environ: dict[str, str]) -> dict[str, Any]:
    out = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in FIELDS:
            raise ConfigError(f"unknown environment variable {key}")
        out[name] = _coerce(name, value, key)
    return out


def _secret_on_command_line(name: str, raw: str) -> str:
    """What of flag ``--name raw`` is a secret ("" = nothing): a secret field's value, or the
    password in a URL. A command line is readable by every local user (``ps``, /proc/PID/cmdline)."""
    secret = FIELDS[name].metadata.get("secret")
    if secret is True and raw:
        return "a secret"
    if secret == "password":
        try:
            password = urlsplit(raw).password
        except ValueError:
            return ""
        return "a password" if password else ""
    return ""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="signaling",
        description="WebRTC signaling server (WebSocket + HTTP long-polling).",
        epilog="Every option can also come from a SIGNALING_<NAME> variable or the TOML file.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML settings file (env: SIGNALING_CONFIG)")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    for name, f in FIELDS.items():
        kind = _kind(f)
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["doc"])
        else:
            helptext = (f.metadata["doc"] + (" (comma-separated)" if kind == "strs" else "")
                        + (" (JSON)" if kind == "dicts" else ""))
            if f.metadata.get("secret"):
                carries = "a secret" if f.metadata["secret"] is True else "a password"
                helptext += (f" Refused here when it carries {carries}:"
                             f" set it in the config file or {ENV_PREFIX}{name.upper()}.")
            p.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=helptext)
    return p


def load(
    argv: list[str] | None = None, environ: dict[str, str] | None = None
) -> tuple[Settings, argparse.Namespace]:
    """Build Settings from flags, environment and file; raise ConfigError on bad input."""
    environ = dict(os.environ if environ is None else environ)
    args = parser().parse_args(argv)
    values: dict[str, Any] = {}
    config_path = args.config or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        values.update(from_file(config_path))
    values.update(from_env(environ))
    for name in FIELDS:
        raw = getattr(args, name)
        if raw is None:
            continue
        flag = "--" + name.replace("_", "-")
        what = _secret_on_command_line(name, raw)
        if what:
            raise ConfigError(
                f"{flag} carries {what}, which every local user can read on a command line (ps): "
                f"set {name} in the config file (--config) or the environment ({ENV_PREFIX}{name.upper()})")
        values[name] = _coerce(name, raw, flag)
    return make(**values), args


def make(**values: Any) -> Settings:
    """Settings from keyword values (already typed or raw), validated."""
    typed = {k: _coerce(k, v, "arguments") for k, v in values.items()}
    return _check(Settings(**typed))
