# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validation helpers for the proxy and firewall models: each returns the normalised value
or raises ``ValueError`` with a message naming the offending input."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence

_HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*$")
_SERVER_NAME_RE = re.compile(rf"^(?:\*\.)?{_HOST_LABEL}(?:\.{_HOST_LABEL})*$")
_ORIGIN_RE = re.compile(rf"^https?://(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-f:]+\])(?::\d{{1,5}})?$")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_MIME_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_SIZE_RE = re.compile(r"^(\d+)\s*([kmg]i?b?|b)?$", re.IGNORECASE)
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
#: Characters refused in header values and paths: quoting, variables
#: (nginx ``$``, Apache ``%{}``), escapes, block and comment delimiters.
_UNSAFE_VALUE_CHARS = set('"\\$%`')
_UNSAFE_PATH_CHARS = set('"\'\\$%`;{}#<>*?')


def _no_controls(value, what):
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{what} contains a control character (newline or similar): {value!r}")


def _string(value, what):
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    _no_controls(value, what)
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    return value.strip()


def _bool(value, what):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "false", "no", "off"):
        return value.lower() in ("true", "yes", "on")
    raise ValueError(f"{what} must be a boolean, got {value!r}")


def _int(value, what, minimum, maximum):
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got a boolean")
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{what} must be between {minimum} and {maximum}, got {value}")
    return value


def _port(value, what):
    return _int(value, what, 1, 65535)


def _seconds(value, what, minimum=1, maximum=86400):
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*s\s*", value):
        value = value.strip()[:-1]
    return _int(value, what, minimum, maximum)


def _size(value, what):
    """Parse ``10485760``, ``'10m'``, ``'10MiB'`` into bytes (1 byte .. 2 GiB - 1)."""
    if isinstance(value, str):
        match = _SIZE_RE.match(value.strip())
        if not match:
            raise ValueError(f"{what} must be a size such as 10485760, '10m' or '10MiB', got {value!r}")
        unit = (match.group(2) or "b").lower()[:1]
        value = int(match.group(1)) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    return _int(value, what, 1, 2**31 - 1)


def _list(value, what):
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ValueError(f"{what} must be a list, got {type(value).__name__}")
    return list(value)


def _mapping(value, what):
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a dictionary, got {type(value).__name__}")
    return value


def _header_value(value, what):
    value = " ".join(_string(value, what).split())
    bad = sorted(set(value) & _UNSAFE_VALUE_CHARS)
    if bad:
        raise ValueError(f"{what} must not contain {' '.join(bad)}: {value!r}")
    return value


def _uri_path(value, what):
    """An absolute path, as given (a trailing slash is kept: for a URI prefix it matters)."""
    value = _string(value, what)
    if not value.startswith("/") or any(ch.isspace() for ch in value):
        raise ValueError(f"{what} must be an absolute path without spaces, got {value!r}")
    bad = sorted(set(value) & _UNSAFE_PATH_CHARS)
    if bad:
        raise ValueError(f"{what} must not contain {' '.join(bad)}: {value!r}")
    if any(p in (".", "..") for p in value.split("/")):
        raise ValueError(f"{what} must not contain '.' or '..' segments, got {value!r}")
    return value


def _abs_path(value, what):
    value = _uri_path(value, what)
    parts = [p for p in value.split("/") if p]
    if not parts:
        raise ValueError(f"{what} must not be the filesystem root")
    return "/" + "/".join(parts)


def _address(value, what):
    """Return (address, is_ipv6) for an IPv4/IPv6 address or a DNS name."""
    value = _string(value, what).lower()
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        if not _HOSTNAME_RE.match(value) or len(value) > 253:
            raise ValueError(f"{what} is neither an IP address nor a host name: {value!r}") from None
        return value, False
    return str(ip), ip.version == 6


def parse_version(value, what="version"):
    """Return ``(major, minor, patch)`` from strings such as ``'OpenSSL 3.0.11 19 Sep 2023'``."""
    if isinstance(value, (list, tuple)):
        value = ".".join(str(v) for v in value)
    match = _VERSION_RE.search(str(value))
    if not match:
        raise ValueError(f"{what} has no version number: {value!r}")
    return tuple(int(g or 0) for g in match.groups())

