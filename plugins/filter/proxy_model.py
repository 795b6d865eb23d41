# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One validated reverse-proxy model, rendered for nginx or Apache.

Sections, top-down:

1. Ansible documentation strings.
2. Constants (Mozilla TLS guideline 6.0, defaults, location table).
3. Validation helpers (each raises ``ValueError`` with a readable message).
4. ``build_proxy_model``: role variables -> one normalised model.
5. Shared renderers (error documents).
6. nginx renderers.
7. Apache renderers.
8. Thin Ansible wrappers and ``FilterModule``.

Outside a collection Ansible loads every filter file by path, so a filter file
cannot import a sibling; model and renderers therefore live in this one file.
Everything above section 8 is plain Python and is imported directly by the
unit tests.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: proxy_model
short_description: Build one validated reverse-proxy model and render it for nginx or Apache
description:
  - C(proxy_model) turns the proxy role variables (server names, upstream endpoints,
    balancing, TLS profile, headers, limits, CORS, allowlists, document roots) into one
    normalised dictionary, refusing bad input with an error that names the filter.
  - The C(nginx_*) and C(apache_*) filters render configuration text from that model.
  - C(proxy_error_document) renders the small HTML/JSON pages answered for 502/503/504.
  - C(tls_profile) gives a Mozilla profile's protocols and TLS 1.2 ciphers by name, for TLS
    servers beside the proxy (coturn) that must offer what the proxy offers.
options:
  _input:
    description:
      - For C(proxy_model) a dictionary of role variables (see the nginx/apache role READMEs).
      - For C(tls_profile) a profile name, intermediate or modern.
      - For every other filter the model returned by C(proxy_model).
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Build the model
  ansible.builtin.set_fact:
    __proxy_model: >-
      {{ {'server_names': ['signal.example.org'],
          'upstreams': [{'address': '10.0.0.5', 'port': 8080}],
          'tls': {'profile': 'intermediate', 'openssl_version': '3.0.11'}} | proxy_model }}

- name: Render the nginx site
  ansible.builtin.copy:
    content: "{{ __proxy_model | nginx_site(nginx_version='1.22.1') }}"
    dest: /etc/nginx/sites-available/webrtc-edge.conf
    mode: "0644"

- name: Apache modules the site needs
  ansible.builtin.debug:
    msg: "{{ __proxy_model | apache_modules(apache_version='2.4.62') }}"
"""

RETURN = r"""
_value:
  description:
    - C(proxy_model) returns the model (a dict with keys name, server_names, ports, listen_ipv6,
      status, upstream, uploads_upstream, files_from_disk, tls, hsts, headers, uploads_headers, cache, limits,
      timeouts, cors, allowlist, roots, gzip_types, error_pages, locations).
    - C(apache_modules) returns a list of Debian module names for a2enmod.
    - C(tls_profile) returns a dict with keys protocols and ciphers.
    - Every other filter returns configuration text ending in a newline.
  type: raw
"""

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real class; the stand-in below is only for runs without Ansible
    from ansible.errors import AnsibleFilterError
else:
    try:
        from ansible.errors import AnsibleFilterError
    except ImportError:  # pragma: no cover - only without ansible-core installed

        class AnsibleFilterError(Exception):
            """Stand-in so the pure functions stay importable without Ansible."""


# ---------------------------------------------------------------------------
# 2. Constants
# ---------------------------------------------------------------------------

#: Mozilla server-side TLS guideline 6.0 (ssl-config-generator guidelines/6.0.json).
TLS_PROFILES = {
    "intermediate": {
        "protocols": ["TLSv1.2", "TLSv1.3"],
        "ciphers": [
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-RSA-CHACHA20-POLY1305",
        ],
    },
    "modern": {
        "protocols": ["TLSv1.3"],
        "ciphers": [],
    },
}
TLS_CURVES = ["X25519", "prime256v1", "secp384r1"]
TLS_PQ_CURVE = "X25519MLKEM768"
TLS_PQ_MIN_OPENSSL = (3, 5)

BALANCE_METHODS = ("least_conn", "round_robin", "ip_hash", "room_hash")

DEFAULT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DEFAULT_UPLOADS_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox"
DEFAULT_PERMISSIONS_POLICY = (
    "camera=(self), microphone=(self), display-capture=(self), fullscreen=(self), "
    "geolocation=(), payment=(), usb=()"
)
DEFAULT_GZIP_TYPES = [
    "text/plain",
    "text/css",
    "text/javascript",
    "application/javascript",
    "application/json",
    "image/svg+xml",
]
#: Static file names carrying a content hash (``app.3f9a1c2b.js``) may be cached for a year.
FINGERPRINT_REGEX = r"\.[0-9a-f]{8,}\.[A-Za-z0-9]+$"

DEFAULTS: dict[str, Any] = {
    "name": "webrtc-edge",
    "http_port": 80,
    "https_port": 443,
    # The status page (nginx stub_status, Apache server-status) for the exporters: a server of
    # its own on STATUS_ADDRESS:status_port, never on the public site.
    "status_port": 8405,
    "listen_ipv6": True,
    "balance": "least_conn",
    "keepalive": 32,
    # The proxy host is an app host: client files and uploads are on its own disk.
    "files_from_disk": True,
    "tls": {
        "profile": "intermediate",
        "certificate": "/etc/webrtc-edge/tls/fullchain.pem",
        "certificate_key": "/etc/webrtc-edge/tls/privkey.pem",
        "openssl_version": "3.0.0",
        # A CA revocation list (DER) to serve over plain http at CRL_PATH; "" = none.
        "crl": "",
    },
    "hsts": {"max_age": 63072000, "include_subdomains": True, "preload": False},
    "headers": {
        "content_security_policy": DEFAULT_CSP,
        "uploads_content_security_policy": DEFAULT_UPLOADS_CSP,
        "permissions_policy": DEFAULT_PERMISSIONS_POLICY,
        "referrer_policy": "strict-origin-when-cross-origin",
        "frame_options": "DENY",
        "extra": [],
    },
    "limits": {
        "api_rate": 10,
        "api_burst": 20,
        "conn_per_address": 100,
        # The app's 10 MiB upload limit plus the 64 KiB of multipart framing it allows.
        "body_max": 10 * 1024 * 1024 + 64 * 1024,
    },
    # connect/read/api_read/ws_read: towards the app. client_header: the whole request head
    # (and, on nginx, the TLS handshake); client_body: a stalled request body. Clients slower
    # than that are cut off (slowloris); see render_nginx_site and render_apache_site.
    "timeouts": {"connect": 5, "read": 30, "api_read": 45, "ws_read": 90, "client_header": 10, "client_body": 10},
    "app": {"heartbeat": 30, "longpoll_max_wait": 30},
    "cors": {
        "origins": [],
        "credentials": False,
        "methods": ["GET", "POST", "DELETE", "OPTIONS"],
        "headers": ["Authorization", "Content-Type"],
        "max_age": 600,
    },
    "allowlist": ["127.0.0.1", "::1"],
    "roots": {
        "static": "/opt/signaling/current/static",
        "uploads": "/var/lib/signaling/uploads",
        "acme": "/var/lib/webrtc-edge/acme",
        "errors": "/var/lib/webrtc-edge/errors",
    },
    "cache": {"assets_max_age": 31536000, "uploads_max_age": 86400},
    "gzip_types": DEFAULT_GZIP_TYPES,
    "upstream_defaults": {"weight": 1, "backup": False, "max_fails": 3, "fail_timeout": 10},
}

#: Locations every site carries, in the order renderers emit them.
#: ``match`` is ``exact`` or ``prefix``; ``kind`` selects the renderer branch.
#: ``build_proxy_model`` adds where each one's answers come from (``upstream``,
#: ``root``) and, when uploads live on an app host, ``/api/uploads``.
LOCATIONS = (
    ("/.well-known/acme-challenge/", "prefix", "acme", False),
    ("/_errors/", "prefix", "errors", False),
    ("/ws", "exact", "websocket", False),
    ("/api/", "prefix", "api", False),
    ("/health", "exact", "app", False),
    ("/metrics", "exact", "app", True),
    ("/uploads/", "prefix", "uploads", False),
    ("/", "prefix", "static", False),
)
#: The upload endpoint, its own location when uploads go to the uploads upstream.
UPLOAD_ENDPOINT = "/api/uploads"
#: Where port 80 serves tls.crl (the local CA's CRL; its certificates name this path).
CRL_PATH = "/.well-known/webrtc-edge/ca.crl"
ERROR_CODES = (502, 503, 504)
NGINX_STATUS_PATH = "/nginx_status"
APACHE_STATUS_PATH = "/server-status"
#: The status server listens on loopback only: the exporters run on the proxy host.
STATUS_ADDRESS = "127.0.0.1"
#: Bytes/s a request body must keep up once Apache's body timeout has passed (mod_reqtimeout
#: MinRate: each 500 bytes received extend the timeout by one second).
APACHE_BODY_MIN_RATE = 500
MANAGED = "# Managed by Ansible (webrtc-edge): rendered from the proxy model, do not edit."


# ---------------------------------------------------------------------------
# 3. Validation helpers
# ---------------------------------------------------------------------------

_HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*$")
_SERVER_NAME_RE = re.compile(rf"^(?:\*\.)?{_HOST_LABEL}(?:\.{_HOST_LABEL})*$")
_ORIGIN_RE = re.compile(rf"^https?://(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-f:]+\])(?::\d{{1,5}})?$")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_TOKEN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
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


def _abs_path(value, what):
    value = _string(value, what)
    if not value.startswith("/") or any(ch.isspace() for ch in value):
        raise ValueError(f"{what} must be an absolute path without spaces, got {value!r}")
    bad = sorted(set(value) & _UNSAFE_PATH_CHARS)
    if bad:
        raise ValueError(f"{what} must not contain {' '.join(bad)}: {value!r}")
    parts = [p for p in value.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{what} must not contain '.' or '..' segments, got {value!r}")
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


def _merged(spec, key):
    """Defaults for a nested section overlaid with the caller's values."""
    given = spec.get(key)
    if given is None:
        given = {}
    given = _mapping(given, key)
    unknown = sorted(set(given) - set(DEFAULTS[key]))
    if unknown:
        raise ValueError(f"{key} has unknown keys: {', '.join(unknown)}")
    return {**DEFAULTS[key], **given}


# ---------------------------------------------------------------------------
# 4. The model
# ---------------------------------------------------------------------------

_TOP_KEYS = set(DEFAULTS) | {"server_names", "upstreams", "uploads_upstreams"}


def _server_names(value):
    names = []
    for i, raw in enumerate(_list(value, "server_names")):
        name = _string(raw, f"server_names[{i}]").lower().rstrip(".")
        try:
            name = str(ipaddress.IPv4Address(name))
        except ValueError:
            if not _SERVER_NAME_RE.match(name):
                raise ValueError(f"server_names[{i}] is not a valid host name: {raw!r}") from None
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("server_names must list at least one name")
    return names


def _upstreams(value, balance, defaults, label="upstreams"):
    """Validated servers of one upstream; ``label`` names the input key in errors."""
    servers, seen = [], set()
    for i, raw in enumerate(_list(value, label)):
        what = f"{label}[{i}]"
        raw = _mapping(raw, what)
        unknown = sorted(set(raw) - {"address", "port", "weight", "backup", "max_fails", "fail_timeout"})
        if unknown:
            raise ValueError(f"{what} has unknown keys: {', '.join(unknown)}")
        if "address" not in raw or "port" not in raw:
            raise ValueError(f"{what} needs both 'address' and 'port'")
        entry = {**defaults, **{k: v for k, v in raw.items() if v is not None}}
        address, ipv6 = _address(entry["address"], f"{what}.address")
        server = {
            "address": address,
            "ipv6": ipv6,
            "port": _port(entry["port"], f"{what}.port"),
            "weight": _int(entry["weight"], f"{what}.weight", 1, 100),
            "backup": _bool(entry["backup"], f"{what}.backup"),
            "max_fails": _int(entry["max_fails"], f"{what}.max_fails", 0, 100),
            "fail_timeout": _seconds(entry["fail_timeout"], f"{what}.fail_timeout", 1, 3600),
        }
        key = (server["address"], server["port"])
        if key in seen:
            raise ValueError(f"{what} duplicates upstream {server['address']}:{server['port']}")
        seen.add(key)
        server["id"] = f"s{i + 1}"
        servers.append(server)
    if not servers:
        raise ValueError(f"{label} must not be empty: no signaling_app endpoint to proxy to")
    if all(s["backup"] for s in servers):
        raise ValueError(f"{label}: at least one server must not be a backup")
    if balance in ("ip_hash", "room_hash") and any(s["backup"] for s in servers):
        raise ValueError(f"balance {balance} cannot be combined with backup servers (nginx refuses it)")
    return servers


def _uploads_upstream(spec, name, keepalive, defaults, files_from_disk):
    """The upstream of ``/api/uploads`` and ``/uploads/`` when files are not on the proxy's disk.

    An upload is a file on the disk of the app host that took the POST, so
    without shared storage both the POST and every GET go to the instances of
    one app host (``uploads_upstreams``); the app serves ``GET /uploads/<name>``.
    """
    given = spec.get("uploads_upstreams") or []
    if files_from_disk:
        if given:
            raise ValueError("uploads_upstreams is only for a proxy that is not an app host (files_from_disk: false)")
        return None
    if not given:
        raise ValueError(
            "uploads_upstreams must list the instances of one app host when files_from_disk is false: "
            "uploads are stored on the app host that takes them")
    servers = _upstreams(given, "least_conn", defaults, label="uploads_upstreams")
    return {"name": name.replace("-", "_") + "_uploads", "balance": "least_conn",
            "keepalive": keepalive, "servers": servers}


def _cors(spec):
    cors = _merged(spec, "cors")
    origins = []
    for i, raw in enumerate(_list(cors["origins"], "cors.origins")):
        origin = _string(raw, f"cors.origins[{i}]").lower().rstrip("/")
        if origin == "*":
            raise ValueError("cors.origins must be an explicit allowlist; '*' is refused")
        if not _ORIGIN_RE.match(origin):
            raise ValueError(f"cors.origins[{i}] is not an origin like https://app.example.org: {raw!r}")
        if origin not in origins:
            origins.append(origin)
    methods = [m.upper() for m in (_string(m, "cors.methods[]") for m in _list(cors["methods"], "cors.methods"))]
    for m in methods:
        if not re.fullmatch(r"[A-Z]+", m):
            raise ValueError(f"cors.methods has an invalid method {m!r}")
    headers = [_string(h, "cors.headers[]") for h in _list(cors["headers"], "cors.headers")]
    for h in headers:
        if not _HEADER_NAME_RE.match(h):
            raise ValueError(f"cors.headers has an invalid header name {h!r}")
    return {
        "origins": origins,
        "credentials": _bool(cors["credentials"], "cors.credentials"),
        "methods": methods,
        "headers": headers,
        "max_age": _int(cors["max_age"], "cors.max_age", 0, 86400),
    }


def tls_profile(name):
    """The protocols and TLS 1.2 cipher suites of a Mozilla profile, for TLS servers other than
    the proxy (coturn's TURN over TLS) that must offer the same."""
    if name not in TLS_PROFILES:
        raise ValueError(f"profile must be one of {', '.join(sorted(TLS_PROFILES))}, got {name!r}")
    return {"protocols": list(TLS_PROFILES[name]["protocols"]), "ciphers": list(TLS_PROFILES[name]["ciphers"])}


def _tls(spec):
    tls = _merged(spec, "tls")
    profile = tls["profile"]
    if profile not in TLS_PROFILES:
        raise ValueError(f"tls.profile must be one of {', '.join(sorted(TLS_PROFILES))}, got {profile!r}")
    openssl = parse_version(tls["openssl_version"], "tls.openssl_version")
    curves = ([TLS_PQ_CURVE] if openssl[:2] >= TLS_PQ_MIN_OPENSSL else []) + TLS_CURVES
    return {
        "profile": profile,
        **tls_profile(profile),
        "curves": curves,
        "openssl_version": ".".join(str(p) for p in openssl),
        "session_timeout": "1d",
        "session_tickets": False,
        "certificate": _abs_path(tls["certificate"], "tls.certificate"),
        "certificate_key": _abs_path(tls["certificate_key"], "tls.certificate_key"),
        "crl": _abs_path(tls["crl"], "tls.crl") if tls["crl"] != "" else None,
    }


def _hsts(spec):
    hsts = _merged(spec, "hsts")
    max_age = _int(hsts["max_age"], "hsts.max_age", 0, 2 * 63072000)
    include = _bool(hsts["include_subdomains"], "hsts.include_subdomains")
    preload = _bool(hsts["preload"], "hsts.preload")
    if preload and (not include or max_age < 31536000):
        raise ValueError("hsts.preload needs include_subdomains and max_age >= 31536000")
    value = f"max-age={max_age}" + ("; includeSubDomains" if include else "") + ("; preload" if preload else "")
    return {"max_age": max_age, "include_subdomains": include, "preload": preload, "value": value}


def _headers(spec, hsts):
    h = _merged(spec, "headers")
    frame = _string(h["frame_options"], "headers.frame_options").upper()
    if frame not in ("DENY", "SAMEORIGIN"):
        raise ValueError(f"headers.frame_options must be DENY or SAMEORIGIN, got {frame!r}")
    common = [
        ("Strict-Transport-Security", hsts["value"]),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", frame),
        ("Referrer-Policy", _header_value(h["referrer_policy"], "headers.referrer_policy")),
        ("Permissions-Policy", _header_value(h["permissions_policy"], "headers.permissions_policy")),
    ]
    managed = {name.lower() for name, _ in common} | {"content-security-policy"}
    for i, extra in enumerate(_list(h["extra"], "headers.extra")):
        extra = _mapping(extra, f"headers.extra[{i}]")
        name = _string(extra.get("name", ""), f"headers.extra[{i}].name")
        if not _HEADER_NAME_RE.match(name):
            raise ValueError(f"headers.extra[{i}].name is not a header name: {name!r}")
        if name.lower() in managed:
            raise ValueError(f"headers.extra[{i}] redefines the managed header {name}")
        managed.add(name.lower())
        common.append((name, _header_value(extra.get("value", ""), f"headers.extra[{i}].value")))
    csp = _header_value(h["content_security_policy"], "headers.content_security_policy")
    uploads_csp = _header_value(h["uploads_content_security_policy"], "headers.uploads_content_security_policy")
    if not re.search(r"(?:^|;)\s*sandbox(?:\s|;|$)", uploads_csp):
        raise ValueError("headers.uploads_content_security_policy must contain the sandbox directive")
    return (
        [{"name": n, "value": v} for n, v in common + [("Content-Security-Policy", csp)]],
        [{"name": n, "value": v} for n, v in common + [("Content-Security-Policy", uploads_csp)]],
    )


def build_proxy_model(spec):
    """Validate role variables and return the normalised proxy model.

    ``spec`` is a dict; only ``server_names`` and ``upstreams`` are required,
    every other key falls back to ``DEFAULTS``. Raises ``ValueError`` with a
    message naming the offending key on any bad input.
    """
    spec = _mapping(spec, "proxy model input")
    unknown = sorted(set(spec) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(unknown)}")
    for key in ("server_names", "upstreams"):
        if key not in spec:
            raise ValueError(f"missing required key {key!r}")

    name = _string(spec.get("name", DEFAULTS["name"]), "name")
    if not _NAME_RE.match(name):
        raise ValueError(f"name must match {_NAME_RE.pattern}, got {name!r}")
    balance = spec.get("balance", DEFAULTS["balance"])
    if balance not in BALANCE_METHODS:
        raise ValueError(f"balance must be one of {', '.join(BALANCE_METHODS)}, got {balance!r}")

    http_port = _port(spec.get("http_port", DEFAULTS["http_port"]), "http_port")
    https_port = _port(spec.get("https_port", DEFAULTS["https_port"]), "https_port")
    if http_port == https_port:
        raise ValueError("http_port and https_port must differ")
    status_port = _port(spec.get("status_port", DEFAULTS["status_port"]), "status_port")
    if status_port in (http_port, https_port):
        raise ValueError(f"status_port ({status_port}) must differ from http_port and https_port")

    upstream_defaults = _merged(spec, "upstream_defaults")
    servers = _upstreams(spec["upstreams"], balance, upstream_defaults)
    for server in servers:
        if server["port"] == status_port and ipaddress.ip_address(server["address"]).is_loopback:
            raise ValueError(f"status_port ({status_port}) is taken by the app instance "
                             f"{server['address']}:{server['port']} on this host: pick another")

    limits = _merged(spec, "limits")
    limits = {
        "api_rate": _int(limits["api_rate"], "limits.api_rate", 1, 100000),
        "api_burst": _int(limits["api_burst"], "limits.api_burst", 0, 100000),
        "conn_per_address": _int(limits["conn_per_address"], "limits.conn_per_address", 1, 100000),
        "body_max": _size(limits["body_max"], "limits.body_max"),
    }

    app = _merged(spec, "app")
    heartbeat = _seconds(app["heartbeat"], "app.heartbeat")
    longpoll = _seconds(app["longpoll_max_wait"], "app.longpoll_max_wait")
    timeouts = {k: _seconds(v, f"timeouts.{k}") for k, v in _merged(spec, "timeouts").items()}
    if timeouts["ws_read"] <= heartbeat:
        raise ValueError(
            f"timeouts.ws_read ({timeouts['ws_read']}s) must exceed the app heartbeat ({heartbeat}s)"
        )
    if timeouts["api_read"] <= longpoll:
        raise ValueError(
            f"timeouts.api_read ({timeouts['api_read']}s) must exceed the long-poll wait ({longpoll}s)"
        )

    allowlist = []
    for i, raw in enumerate(_list(spec.get("allowlist", DEFAULTS["allowlist"]), "allowlist")):
        try:
            net = ipaddress.ip_network(_string(raw, f"allowlist[{i}]"), strict=False)
        except ValueError:
            raise ValueError(f"allowlist[{i}] is not an address or network: {raw!r}") from None
        text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        if text not in allowlist:
            allowlist.append(text)

    roots = {k: _abs_path(v, f"roots.{k}") for k, v in _merged(spec, "roots").items()}
    cache = {k: _int(v, f"cache.{k}", 0, 31536000) for k, v in _merged(spec, "cache").items()}

    gzip_types = []
    for i, raw in enumerate(_list(spec.get("gzip_types", DEFAULTS["gzip_types"]), "gzip_types")):
        mime = _string(raw, f"gzip_types[{i}]").lower()
        if not _MIME_RE.match(mime):
            raise ValueError(f"gzip_types[{i}] is not a MIME type: {raw!r}")
        if mime not in gzip_types:
            gzip_types.append(mime)

    hsts = _hsts(spec)
    headers, uploads_headers = _headers(spec, hsts)
    keepalive = _int(spec.get("keepalive", DEFAULTS["keepalive"]), "keepalive", 1, 1024)
    files_from_disk = _bool(spec.get("files_from_disk", DEFAULTS["files_from_disk"]), "files_from_disk")
    uploads_upstream = _uploads_upstream(spec, name, keepalive, upstream_defaults, files_from_disk)
    app_upstream = name.replace("-", "_") + "_app"

    return {
        "name": name,
        "server_names": _server_names(spec["server_names"]),
        "ports": {"http": http_port, "https": https_port},
        "status": {"address": STATUS_ADDRESS, "port": status_port},
        "listen_ipv6": _bool(spec.get("listen_ipv6", DEFAULTS["listen_ipv6"]), "listen_ipv6"),
        "upstream": {
            "name": app_upstream,
            "balance": balance,
            "keepalive": keepalive,
            "servers": servers,
        },
        "uploads_upstream": uploads_upstream,
        "files_from_disk": files_from_disk,
        "tls": _tls(spec),
        "hsts": hsts,
        "headers": headers,
        "uploads_headers": uploads_headers,
        "cache": {
            "assets": f"public, max-age={cache['assets_max_age']}, immutable",
            "pages": "no-cache",
            "uploads": f"public, max-age={cache['uploads_max_age']}",
            "errors": "no-store",
            "fingerprint_regex": FINGERPRINT_REGEX,
        },
        "limits": limits,
        "timeouts": timeouts,
        "cors": _cors(spec),
        "allowlist": allowlist,
        "roots": roots,
        "gzip_types": gzip_types,
        "error_pages": {"codes": list(ERROR_CODES), "html": "/_errors/50x.html", "json": "/_errors/50x.json"},
        "locations": _locations(roots, app_upstream, uploads_upstream),
    }


def _locations(roots, app_upstream, uploads_upstream):
    """The location table, each entry saying where its answers come from.

    ``upstream`` is the upstream a location proxies to (None: the proxy answers
    itself); ``root`` the directory it serves from disk first (None: nothing on
    disk). On an app host the proxy serves client files (falling back to the
    app) and uploads from disk. Elsewhere client files come from the app, and
    ``/api/uploads`` and ``/uploads/`` from the uploads upstream.
    """
    on_disk = uploads_upstream is None
    where = {
        "acme": (None, roots["acme"]),
        "errors": (None, roots["errors"]),
        "uploads": (None, roots["uploads"]) if on_disk else (uploads_upstream["name"], None),
        "static": (app_upstream, roots["static"] if on_disk else None),
    }
    table = []
    for path, match, kind, restricted in LOCATIONS:
        if kind == "api" and not on_disk:
            table.append({"path": UPLOAD_ENDPOINT, "match": "exact", "kind": "api", "restricted": False,
                          "upstream": uploads_upstream["name"], "root": None})
        upstream, root = where.get(kind, (app_upstream, None))
        table.append({"path": path, "match": match, "kind": kind, "restricted": restricted,
                      "upstream": upstream, "root": root})
    return table


def _check_model(model):
    """Cheap structural check for renderers: refuse anything not built by ``build_proxy_model``."""
    model = _mapping(model, "model")
    missing = {"name", "server_names", "upstream", "tls", "headers", "locations"} - set(model)
    if missing:
        raise ValueError(
            f"input is not a proxy model (missing {', '.join(sorted(missing))}); pipe it through proxy_model first")
    return model


# ---------------------------------------------------------------------------
# 5. Shared renderers
# ---------------------------------------------------------------------------

def render_error_document(model, kind="html"):
    """Body of the page answered when every upstream is down or overloaded."""
    _check_model(model)
    if kind == "json":
        return json.dumps({"type": "error", "code": "unavailable",
                           "message": "the signaling service is temporarily unavailable, retry shortly"}) + "\n"
    if kind != "html":
        raise ValueError(f"kind must be html or json, got {kind!r}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">"
        "<title>Service unavailable</title></head>\n<body>\n"
        "<h1>Service unavailable</h1>\n"
        "<p>The signaling service is temporarily unavailable. Please retry in a moment.</p>\n"
        "</body>\n</html>\n"
    )


def _block(lines, indent=1):
    pad = "    " * indent
    return [pad + line if line else "" for line in lines]


# ---------------------------------------------------------------------------
# 6. nginx
# ---------------------------------------------------------------------------

NGINX_HEADERS_INCLUDE = "/etc/nginx/snippets/webrtc-edge-headers.conf"


def _nginx_version(value):
    version = parse_version(value, "nginx_version")
    if version < (1, 19, 4):
        raise ValueError(f"nginx {value} is too old: ssl_reject_handshake needs 1.19.4 or later")
    return version


def _nginx_server_address(server):
    host = f"[{server['address']}]" if server["ipv6"] else server["address"]
    return f"{host}:{server['port']}"


def _q(value):
    """Quote a validated value for nginx or Apache (validation refused quotes)."""
    return f'"{value}"'


def _nginx_var(model, suffix):
    return "$" + model["name"].replace("-", "_") + "_" + suffix


def render_nginx_upstream(model):
    """The ``upstream`` blocks: the app's, and the uploads host's when there is one.

    Each has balancing, weights, backups, passive health and a keepalive pool,
    and keeps its state in a shared ``zone``: without one every worker counts
    connections and failures on its own, so ``least_conn`` cannot see the
    WebSockets other workers hold, and an instance one worker marked failed
    stays in use by the others.
    """
    model = _check_model(model)
    ups = [model["upstream"]] + ([model["uploads_upstream"]] if model.get("uploads_upstream") else [])
    return "\n".join(_nginx_upstream_block(model, up) for up in ups)


def _nginx_upstream_block(model, up):
    lines = [f"upstream {up['name']} {{", f"    zone {up['name']} 64k;"]
    if up["balance"] == "least_conn":
        lines.append("    least_conn;")
    elif up["balance"] == "ip_hash":
        lines.append("    ip_hash;")
    elif up["balance"] == "room_hash":
        lines.append(f"    hash {_nginx_var(model, 'affinity')} consistent;")
    for server in up["servers"]:
        params = [f"weight={server['weight']}", f"max_fails={server['max_fails']}",
                  f"fail_timeout={server['fail_timeout']}s"]
        if server["backup"]:
            params.append("backup")
        lines.append(f"    server {_nginx_server_address(server)} {' '.join(params)};")
    lines += [
        f"    keepalive {up['keepalive']};",
        "    keepalive_requests 1000;",
        "    keepalive_timeout 60s;",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_nginx_maps(model):
    """http-level maps and limit zones: WebSocket Connection header, CSP per path, cache, CORS, affinity."""
    model = _check_model(model)
    n = model["name"].replace("-", "_")
    csp = {h["name"]: h["value"] for h in model["headers"]}["Content-Security-Policy"]
    uploads_csp = {h["name"]: h["value"] for h in model["uploads_headers"]}["Content-Security-Policy"]
    lines = [
        "# An empty Upgrade maps to an empty Connection so pooled keepalive connections survive.",
        "map $http_upgrade $connection_upgrade {",
        "    default upgrade;",
        "    ''      '';",
        "}",
        "",
        f"map $uri {_nginx_var(model, 'csp')} {{",
        f"    default {_q(csp)};",
        f"    ~^/uploads/ {_q(uploads_csp)};",
        "}",
        "",
        f"map $uri {_nginx_var(model, 'static_cache')} {{",
        f"    default {_q(model['cache']['pages'])};",
        f"    \"~{model['cache']['fingerprint_regex']}\" {_q(model['cache']['assets'])};",
        "}",
        "",
    ]
    if model["cors"]["origins"]:
        lines.append(f"map $http_origin {_nginx_var(model, 'cors_origin')} {{")
        lines.append("    default \"\";")
        for origin in model["cors"]["origins"]:
            lines.append(f"    {_q(origin)} $http_origin;")
        lines += ["}", ""]
    if model["upstream"]["balance"] == "room_hash":
        lines += [
            "# Peers of one room (?room=...) land on one instance; others hash on their address.",
            f"map $arg_room {_nginx_var(model, 'affinity')} {{",
            "    default $arg_room;",
            "    \"\" $remote_addr;",
            "}",
            "",
        ]
    lines += [
        f"limit_req_zone $binary_remote_addr zone={n}_api:10m rate={model['limits']['api_rate']}r/s;",
        f"limit_conn_zone $binary_remote_addr zone={n}_conn:10m;",
    ]
    return "\n".join(lines) + "\n"


def render_nginx_tls(model, nginx_version="1.22.1"):
    """``ssl_*`` directives for one server block (Mozilla guideline 6.0)."""
    model = _check_model(model)
    version = _nginx_version(nginx_version)
    tls = model["tls"]
    lines = [
        f"ssl_protocols {' '.join(tls['protocols'])};",
        f"ssl_ecdh_curve {':'.join(tls['curves'])};",
    ]
    if tls["ciphers"]:
        lines.append(f"ssl_ciphers {':'.join(tls['ciphers'])};")
    lines += [
        "ssl_prefer_server_ciphers off;",
        f"ssl_session_timeout {tls['session_timeout']};",
        "ssl_session_cache shared:MozSSL:10m;",
    ]
    if version < (1, 23, 2):
        lines.append("ssl_session_tickets off;")
    return "\n".join(lines) + "\n"


def render_nginx_headers(model):
    """The one include used at server level and in every location (``add_header`` ... ``always``)."""
    model = _check_model(model)
    lines = [MANAGED, "# Included in the server block and in every location: nginx drops inherited",
             "# add_header directives in any location that sets its own."]
    for header in model["headers"]:
        if header["name"] == "Content-Security-Policy":
            value = _nginx_var(model, "csp")
        else:
            value = _q(header["value"])
        lines.append(f"add_header {header['name']} {value} always;")
    for header in model["headers"]:
        lines.append(f"proxy_hide_header {header['name']};")
    return "\n".join(lines) + "\n"


def _nginx_listen(model, port_key, extra, default=False):
    port = model["ports"][port_key]
    suffix = (" " + extra if extra else "") + (" default_server" if default else "")
    lines = [f"listen {port}{suffix};"]
    if model["listen_ipv6"]:
        lines.append(f"listen [::]:{port}{suffix};")
    return lines


def _nginx_acme_location(model, loc):
    """ACME HTTP-01 (port 80 only): webroot layout, <acme root>/.well-known/acme-challenge/<token>."""
    return [f"location ^~ {loc['path']} {{"] + _block([
        f"root {model['roots']['acme']};", "default_type \"text/plain\";"]) + ["}"]


def _nginx_location(model, loc, include):
    up = f"http://{loc['upstream']}"
    kind, path = loc["kind"], loc["path"]
    opener = {"exact": f"location = {path} {{", "prefix": f"location {path} {{"}[loc["match"]]
    if kind in ("errors", "uploads"):
        opener = f"location ^~ {path} {{"
    body = [f"include {include};"]
    if loc["restricted"]:
        body += [f"allow {addr};" for addr in model["allowlist"]] + ["deny all;"]
    if kind == "errors":
        body += ["internal;", f"add_header Cache-Control {_q(model['cache']['errors'])} always;",
                 f"alias {model['roots']['errors']}/;"]
    elif kind == "websocket":
        t = model["timeouts"]["ws_read"]
        # RFC 6455 4.1: a WebSocket handshake is HTTP/1.1 or later. nginx would send an HTTP/1.0
        # upgrade on to the app as HTTP/1.1 and tunnel it: refuse it here, as the app does.
        body += ["if ($server_protocol = HTTP/1.0) {", "    return 400;", "}",
                 f"proxy_read_timeout {t}s;", f"proxy_send_timeout {t}s;", "proxy_buffering off;",
                 f"proxy_pass {up};"]
    elif kind == "api":
        n = model["name"].replace("-", "_")
        limits = model["limits"]
        cors = model["cors"]
        if cors["origins"]:
            origin = _nginx_var(model, "cors_origin")
            body += [
                f"add_header Access-Control-Allow-Origin {origin} always;",
                f"add_header Access-Control-Allow-Methods {_q(', '.join(cors['methods']))} always;",
                f"add_header Access-Control-Allow-Headers {_q(', '.join(cors['headers']))} always;",
                f"add_header Access-Control-Max-Age {cors['max_age']} always;",
                "add_header Vary Origin always;",
            ]
            if cors["credentials"]:
                body.append("add_header Access-Control-Allow-Credentials true always;")
            body += [f"proxy_hide_header {h};" for h in (
                "Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                "Access-Control-Max-Age", "Access-Control-Allow-Credentials")]
            body += ["if ($request_method = OPTIONS) {", "    return 204;", "}"]
        body += [
            f"limit_req zone={n}_api burst={limits['api_burst']} nodelay;",
            f"client_max_body_size {limits['body_max']};",
            f"proxy_read_timeout {model['timeouts']['api_read']}s;",
            "proxy_buffering off;",
            f"error_page {' '.join(str(c) for c in model['error_pages']['codes'])} {model['error_pages']['json']};",
            f"proxy_pass {up};",
        ]
    elif kind == "app":
        body += ["access_log off;"] if path == "/health" else []
        body.append(f"proxy_pass {up};")
    elif kind == "uploads":
        body.append(f"add_header Cache-Control {_q(model['cache']['uploads'])} always;")
        if loc["root"]:
            body.append(f"alias {loc['root']}/;")
        body += ["limit_except GET {", "    deny all;", "}"]
        if not loc["root"]:  # the uploads host's app serves them; the proxy sets the headers
            body += ["proxy_hide_header Cache-Control;",
                     f"error_page {' '.join(str(c) for c in model['error_pages']['codes'])} "
                     f"{model['error_pages']['html']};",
                     f"proxy_pass {up};"]
    elif kind == "static":
        if loc["root"]:
            body += [f"add_header Cache-Control {_nginx_var(model, 'static_cache')} always;",
                     "try_files $uri @app;"]
        else:  # no client files on this host: the app serves them with its own Cache-Control
            body.append(f"proxy_pass {up};")
    else:  # pragma: no cover - LOCATIONS is a closed table
        raise ValueError(f"unknown location kind {kind!r}")
    lines = [opener] + _block(body) + ["}"]
    # BREACH: the page is never compressed (nginx gzips text/html whatever gzip_types says).
    no_html_gzip = "gzip off;"
    if kind == "static" and loc["root"]:
        lines += ["", "location = / {"] + _block([
            f"include {include};", f"add_header Cache-Control {_q(model['cache']['pages'])} always;",
            no_html_gzip, "try_files /index.html @app;"]) + ["}", "", "location @app {"] + _block([
            f"include {include};", f"proxy_pass {up};"]) + ["}"]
    elif kind == "static":  # the page comes from the app
        lines += ["", "location = / {"] + _block([f"include {include};", no_html_gzip, f"proxy_pass {up};"]) + ["}"]
    return lines


def render_nginx_site(model, nginx_version="1.22.1", headers_include=NGINX_HEADERS_INCLUDE):
    """The whole site file (http context): maps, zones, upstream, catch-all and real servers."""
    model = _check_model(model)
    version = _nginx_version(nginx_version)
    include = _abs_path(headers_include, "headers_include")
    tls = render_nginx_tls(model, nginx_version).splitlines()
    h2_in_listen = version < (1, 25, 1)
    ssl_listen = "ssl http2" if h2_in_listen else "ssl"
    http2 = [] if h2_in_listen else ["http2 on;"]
    names = " ".join(model["server_names"])
    https = model["ports"]["https"]
    target = "https://$host" + ("" if https == 443 else f":{https}") + "$request_uri"
    acme = next(loc for loc in model["locations"] if loc["kind"] == "acme")
    codes = " ".join(str(c) for c in model["error_pages"]["codes"])

    t = model["timeouts"]
    out = [MANAGED, ""]
    out += render_nginx_maps(model).splitlines() + [""]
    out += [
        "# Slow clients (slowloris): the whole request head (TLS handshake included) within",
        "# client_header_timeout, or the connection is closed; a request body may not stall",
        "# longer than client_body_timeout between two reads. http level: the timeouts before",
        "# the Host header is known come from each port's default (catch-all) server.",
        f"client_header_timeout {t['client_header']}s;",
        f"client_body_timeout {t['client_body']}s;",
        "",
    ]
    out += render_nginx_upstream(model).splitlines() + [""]

    out += ["# Unknown Host names on port 80: close the connection without an answer.", "server {"]
    out += _block(
        _nginx_listen(model, "http", "", default=True) + ["server_name _;", "server_tokens off;", "return 444;"])
    out += ["}", ""]

    out += ["# Unknown names on the TLS port: refuse the handshake (421 for coalesced HTTP/2).", "server {"]
    out += _block(_nginx_listen(model, "https", ssl_listen, default=True) + http2 + [
        "server_name _;", "server_tokens off;", "ssl_reject_handshake on;"] + tls + [
        "location / {", "    return 421;", "}"])
    out += ["}", ""]

    out += ["# Port 80: ACME HTTP-01 challenges" + (" and the CA's CRL" if model["tls"]["crl"] else "")
            + ", everything else goes to https with 308.", "server {"]
    out += _block(_nginx_listen(model, "http", "") + [f"server_name {names};", "server_tokens off;"])
    out += _block(_nginx_acme_location(model, acme))
    if model["tls"]["crl"]:
        out += _block([f"location = {CRL_PATH} {{"] + _block([
            f"alias {model['tls']['crl']};", "types { }", "default_type application/pkix-crl;"]) + ["}"])
    out += _block(["location / {", f"    return 308 {target};", "}"])
    out += ["}", ""]

    n = model["name"].replace("-", "_")
    server = _nginx_listen(model, "https", ssl_listen) + http2 + [
        f"server_name {names};",
        "server_tokens off;",
        "",
        f"ssl_certificate {model['tls']['certificate']};",
        f"ssl_certificate_key {model['tls']['certificate_key']};",
    ] + tls + [
        "",
        f"include {include};",
        "",
        f"limit_conn {n}_conn {model['limits']['conn_per_address']};",
        "limit_conn_status 429;",
        "limit_req_status 429;",
        "",
    ] + ([
        f"root {model['roots']['static']};",
        "open_file_cache max=1000 inactive=20s;",
    ] if model["files_from_disk"] else []) + [
        "gzip on;",
        "gzip_vary on;",
        "gzip_proxied any;",
        f"gzip_types {' '.join(t for t in model['gzip_types'] if t != 'text/html')};",
        "",
        "proxy_http_version 1.1;",
        "proxy_set_header Host $host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $host;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        f"proxy_connect_timeout {model['timeouts']['connect']}s;",
        f"proxy_read_timeout {model['timeouts']['read']}s;",
        f"proxy_send_timeout {model['timeouts']['read']}s;",
        "proxy_next_upstream error timeout http_502 http_503;",
        "",
        f"error_page {codes} {model['error_pages']['html']};",
        "",
        f"# The status page is served on {STATUS_ADDRESS}:{model['status']['port']} alone (its own server, above).",
        f"location = {NGINX_STATUS_PATH} {{",
    ] + _block([f"include {include};", "deny all;", "access_log off;"]) + ["}"]
    for loc in model["locations"]:
        if loc["kind"] == "acme":
            continue
        server += [""] + _nginx_location(model, loc, include)
    out += _nginx_status_server(model) + [""]
    out += ["# The site.", "server {"] + _block(server) + ["}"]
    return "\n".join(line.rstrip() for line in out) + "\n"


def _nginx_status_server(model):
    """stub_status for prometheus-nginx-exporter: a loopback server of its own, nothing else."""
    status = model["status"]
    return [
        "# The status page for prometheus-nginx-exporter: loopback only, on a port of its own.",
        "server {",
    ] + _block([
        f"listen {status['address']}:{status['port']};",
        "server_name localhost;",
        "server_tokens off;",
        "access_log off;",
        "",
        f"location = {NGINX_STATUS_PATH} {{",
    ] + _block([f"allow {status['address']};", "deny all;", "stub_status;"]) + [
        "}",
        "",
        "location / {",
    ] + _block(["return 404;"]) + ["}"]) + ["}"]


# ---------------------------------------------------------------------------
# 7. Apache
# ---------------------------------------------------------------------------

def _apache_version(value):
    version = parse_version(value, "apache_version")
    if version < (2, 4, 30):
        raise ValueError(f"Apache {value} is too old: 2.4.30 or later is needed")
    return version


def _apache_upgrade(version):
    """``upgrade=websocket`` through mod_proxy_http from 2.4.47, mod_proxy_wstunnel before."""
    return version >= (2, 4, 47)


def _apache_balancer_name(model, suffix):
    return f"balancer://{model['name']}-{suffix}"


def _apache_regex(text):
    return re.sub(r"([.^$|()\[\]{}*+?\\/])", r"\\\1", text)


def render_apache_modules(model, apache_version="2.4.62"):
    """Debian module names (``a2enmod``) the rendered site needs, in a stable order."""
    model = _check_model(model)
    version = _apache_version(apache_version)
    modules = [
        "alias", "authz_core", "authz_host", "deflate", "dir", "evasive", "filter", "headers", "http2",
        "lbmethod_bybusyness", "lbmethod_byrequests", "mime", "proxy", "proxy_balancer", "proxy_http",
        "reqtimeout", "rewrite", "setenvif", "slotmem_shm", "socache_shmcb", "ssl", "status",
    ]
    if not _apache_upgrade(version):
        modules.append("proxy_wstunnel")
    return sorted(modules)


def render_apache_ports(model):
    """``ports.conf``: the Listen directives (http, https, the loopback status port)."""
    model = _check_model(model)
    return "\n".join([
        MANAGED,
        f"Listen {model['ports']['http']}",
        f"Listen {model['status']['address']}:{model['status']['port']}",
        "<IfModule ssl_module>",
        f"    Listen {model['ports']['https']}",
        "</IfModule>",
    ]) + "\n"


def render_apache_tls(model):
    """Server-wide mod_ssl directives (Mozilla guideline 6.0)."""
    model = _check_model(model)
    tls = model["tls"]
    lines = [
        "SSLProtocol -all " + " ".join("+" + p for p in tls["protocols"]),
        f"SSLOpenSSLConfCmd Curves {':'.join(tls['curves'])}",
    ]
    if tls["ciphers"]:
        lines.append(f"SSLCipherSuite {':'.join(tls['ciphers'])}")
    lines += ["SSLHonorCipherOrder off", "SSLSessionTickets off", "SSLUseStapling off"]
    return "\n".join(lines) + "\n"


def render_apache_headers(model, uploads=False):
    """``Header`` lines for every response; the app's own copies are dropped first."""
    model = _check_model(model)
    headers = model["headers"]
    lines = []
    if uploads:
        # Only what differs: Apache merges these after the vhost-level lines.
        headers = [h for h in model["uploads_headers"] if h not in model["headers"]]
    else:
        lines += [f"Header onsuccess unset {h['name']}" for h in headers]
    lines += [f"Header always set {h['name']} {_q(h['value'])}" for h in headers]
    return "\n".join(lines) + "\n"


def render_apache_balancers(model, apache_version="2.4.62"):
    """mod_proxy_balancer pools: HTTP (API, pages) and WebSocket over the same members,
    and the uploads host's instances when uploads are not on the proxy's disk."""
    model = _check_model(model)
    version = _apache_version(apache_version)
    timeouts = model["timeouts"]
    pools = [(model["upstream"], "app", "http", timeouts["api_read"]),
             (model["upstream"], "ws", None, timeouts["ws_read"])]
    if model.get("uploads_upstream"):
        pools.append((model["uploads_upstream"], "uploads", "http", timeouts["api_read"]))
    lines = []
    for up, suffix, scheme, timeout in pools:
        sticky = up["balance"] in ("ip_hash", "room_hash")
        lbmethod = "byrequests" if up["balance"] == "round_robin" else "bybusyness"
        lines.append(f"<Proxy \"{_apache_balancer_name(model, suffix)}\">")
        for server in up["servers"]:
            host = f"[{server['address']}]" if server["ipv6"] else server["address"]
            member_scheme = scheme or ("http" if _apache_upgrade(version) else "ws")
            params = [
                f"loadfactor={server['weight']}",
                f"retry={server['fail_timeout']}",
                f"connectiontimeout={timeouts['connect']}",
                f"timeout={timeout}",
                "keepalive=On",
            ]
            if suffix == "ws" and _apache_upgrade(version):
                params.append("upgrade=websocket")
            if sticky:
                params.append(f"route={server['id']}")
            if server["backup"]:
                params.append("status=+H")
            lines.append(f"    BalancerMember \"{member_scheme}://{host}:{server['port']}\" {' '.join(params)}")
        proxyset = f"lbmethod={lbmethod}"
        if sticky:
            proxyset += f" stickysession={model['name'].upper().replace('-', '_')}_ROUTE"
        lines += [f"    ProxySet {proxyset}", "</Proxy>", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _apache_vhost_open(model, port_key, names, protocols):
    return [
        f"<VirtualHost *:{model['ports'][port_key]}>",
        f"    ServerName {names[0]}",
    ] + ([f"    ServerAlias {' '.join(names[1:])}"] if names[1:] else []) + [f"    Protocols {protocols}"]


def render_apache_site(model, apache_version="2.4.62"):
    """The whole site file: server-wide TLS and limits, balancers, catch-all and real vhosts."""
    model = _check_model(model)
    version = _apache_version(apache_version)
    tls = model["tls"]
    names = model["server_names"]
    roots = model["roots"]
    limits = model["limits"]
    cors = model["cors"]
    env = model["name"].upper().replace("-", "_")
    https = model["ports"]["https"]
    codes = model["error_pages"]["codes"]
    cert = [f"SSLCertificateFile {tls['certificate']}", f"SSLCertificateKeyFile {tls['certificate_key']}"]
    acme_dir = f"{roots['acme']}/.well-known/acme-challenge/"
    allow = "Require ip " + " ".join(model["allowlist"]) if model["allowlist"] else "Require all denied"
    page_count = limits["api_rate"] + limits["api_burst"]

    out = [MANAGED, "", f"ServerName {names[0]}", "ServerTokens Prod", "ServerSignature Off", "TraceEnable Off", ""]
    out += ["# TLS: Mozilla guideline 6.0 " + tls["profile"]] + render_apache_tls(model).splitlines() + [""]
    t = model["timeouts"]
    out += [
        "# Slow clients (slowloris), mod_reqtimeout: the TLS handshake and the whole request head",
        "# each within their timeout; a body is cut off after its timeout unless it keeps up",
        f"# {APACHE_BODY_MIN_RATE} bytes/s (each {APACHE_BODY_MIN_RATE} bytes received add a second).",
        "RequestReadTimeout " + (f"handshake={t['client_header']} " if version >= (2, 4, 39) else "")
        + f"header={t['client_header']} body={t['client_body']},MinRate={APACHE_BODY_MIN_RATE}",
        "",
    ]
    out += [
        "# Per-client-address request rate (mod_evasive answers 403 while an address is blocked).",
        "# Connections per address: Apache's modules cannot count them; the apache role's",
        "# nftables rule (apache_conn_limit) resets those above limits.conn_per_address.",
        "DOSHashTableSize 3097",
        f"DOSPageCount {page_count}",
        "DOSPageInterval 1",
        f"DOSSiteCount {page_count * 10}",
        "DOSSiteInterval 1",
        "DOSBlockingPeriod 10",
        "",
    ]
    out += render_apache_balancers(model, apache_version).splitlines() + [""]
    if cors["origins"]:
        alternatives = "|".join(_apache_regex(o) for o in cors["origins"])
        out += [f"SetEnvIf Origin \"^({alternatives})$\" {env}_CORS_ORIGIN=$0", ""]

    out += ["# Unknown Host names: the first vhost of each port is the default; refuse there."]
    out += _apache_vhost_open(model, "http", ["default.invalid"], "http/1.1")
    out += _block(["<Location \"/\">", "    Require all denied", "</Location>"])
    out += ["</VirtualHost>", ""]
    out += _apache_vhost_open(model, "https", ["default.invalid"], "h2 http/1.1")
    out += _block(["SSLEngine on"] + cert + ["RewriteEngine On", "RewriteRule ^ - [R=421,L]"])
    out += ["</VirtualHost>", ""]

    target = "https://%{SERVER_NAME}" + ("" if https == 443 else f":{https}") + "%{REQUEST_URI}"
    crl = tls["crl"]
    out += ["# Port 80: ACME HTTP-01 challenges" + (" and the CA's CRL" if crl else "")
            + ", everything else goes to https with 308."]
    out += _apache_vhost_open(model, "http", names, "http/1.1")
    out += _block([
        f"Alias /.well-known/acme-challenge/ \"{acme_dir}\"",
        f"<Directory \"{acme_dir}\">",
        "    Options None", "    AllowOverride None", "    Require all granted", "    ForceType text/plain",
        "</Directory>",
    ] + ([
        f"Alias {CRL_PATH} \"{crl}\"",
        f"<Location \"{CRL_PATH}\">",
        "    Require all granted", "    ForceType application/pkix-crl",
        "</Location>",
    ] if crl else []) + [
        "RewriteEngine On",
        "RewriteCond %{REQUEST_URI} !^/\\.well-known/acme-challenge/",
    ] + ([f"RewriteCond %{{REQUEST_URI}} !={CRL_PATH}"] if crl else []) + [
        f"RewriteRule ^ {target} [R=308,L]",
    ])
    out += ["</VirtualHost>", ""]

    locs = {loc["kind"]: loc for loc in model["locations"]}
    static_root, uploads_root = locs["static"]["root"], locs["uploads"]["root"]
    vhost = [
        "SSLEngine on",
    ] + cert + [
        "",
    ] + ([
        f"DocumentRoot \"{static_root}\"",
        "DirectoryIndex index.html",
        "",
    ] if static_root else []) + render_apache_headers(model).splitlines() + [
        "",
        f"AddOutputFilterByType DEFLATE {' '.join(model['gzip_types'])}",
        "",
    ] + [f"ErrorDocument {c} {model['error_pages']['html']}" for c in codes] + [
        "",
        f"Alias /_errors/ \"{roots['errors']}/\"",
        f"<Directory \"{roots['errors']}/\">",
        "    Options None", "    AllowOverride None", "    Require all granted",
        f"    Header always set Cache-Control {_q(model['cache']['errors'])}",
        "</Directory>",
        f"Alias /.well-known/acme-challenge/ \"{acme_dir}\"",
        f"<Directory \"{acme_dir}\">",
        "    Options None", "    AllowOverride None", "    Require all granted", "    ForceType text/plain",
        "</Directory>",
    ]
    uploads_headers = _block(render_apache_headers(model, uploads=True).splitlines()) + [
        f"    Header always set Cache-Control {_q(model['cache']['uploads'])}",
    ]
    if uploads_root:
        vhost += [
            f"Alias /uploads/ \"{uploads_root}/\"",
            f"<Directory \"{uploads_root}/\">",
            "    Options None", "    AllowOverride None", "    Require all granted", "    SetHandler None",
        ] + uploads_headers + ["</Directory>"]
    else:  # the uploads host's app serves them; the proxy sets the headers and refuses writes
        vhost += ["<Location \"/uploads/\">", "    Header onsuccess unset Cache-Control"] + uploads_headers + [
            "    <LimitExcept GET>", "        Require all denied", "    </LimitExcept>", "</Location>"]
    if static_root:
        vhost += [
            f"<Directory \"{static_root}\">",
            "    Options None", "    AllowOverride None", "    Require all granted",
            f"    Header always set Cache-Control {_q(model['cache']['pages'])}",
            f"    <FilesMatch \"{model['cache']['fingerprint_regex']}\">",
            f"        Header always set Cache-Control {_q(model['cache']['assets'])}",
            "    </FilesMatch>",
            "</Directory>",
        ]
    vhost += [
        "",
        "ProxyRequests Off",
        "# The app's own Server header (aiohttp and Python versions) stays inside.",
        "Header unset Server",
        "ProxyPreserveHost On",
        "ProxyAddHeaders On",
        f"ProxyTimeout {model['timeouts']['api_read']}",
        "RequestHeader unset X-Forwarded-For early",
        "RequestHeader set X-Forwarded-Proto \"https\"",
        "RequestHeader set X-Real-IP \"%{REMOTE_ADDR}s\"",
    ]
    if model["upstream"]["balance"] in ("ip_hash", "room_hash"):
        vhost.append(
            f"Header add Set-Cookie \"{env}_ROUTE=.%{{BALANCER_WORKER_ROUTE}}e; Path=/; Secure; HttpOnly; "
            "SameSite=Lax\" env=BALANCER_ROUTE_CHANGED"
        )
    app = _apache_balancer_name(model, "app")
    uploads = _apache_balancer_name(model, "uploads")
    vhost += [
        "",
        "ProxyPass \"/_errors/\" \"!\"",
        "ProxyPass \"/.well-known/acme-challenge/\" \"!\"",
    ] + (["ProxyPass \"/uploads/\" \"!\""] if uploads_root else [
        # A backreference, or Apache appends the whole original path to the target.
        f"ProxyPassMatch \"^/({_apache_regex(UPLOAD_ENDPOINT.lstrip('/'))})$\" \"{uploads}/$1\"",
        f"ProxyPass \"/uploads/\" \"{uploads}/uploads/\"",
    ]) + [
        f"ProxyPass \"{APACHE_STATUS_PATH}\" \"!\"",
        f"ProxyPassMatch \"^/(ws)$\" \"{_apache_balancer_name(model, 'ws')}/$1\"",
        f"ProxyPass \"/api/\" \"{app}/api/\"",
        f"ProxyPassMatch \"^/(health|metrics)$\" \"{app}/$1\"",
        "",
        "RewriteEngine On",
        "# Request smuggling: Apache reads a request carrying both Content-Length and",
        "# Transfer-Encoding by the latter alone (RFC 9112 allows it) and drops the former, so the",
        "# two can no longer be told apart here: refuse every chunked HTTP/1.1 request body instead",
        "# (browsers never send one; HTTP/2 frames bodies itself).",
        "RewriteCond %{HTTP2} !=on",
        "RewriteCond %{HTTP:Transfer-Encoding} !^$",
        "RewriteRule ^ - [R=400,L]",
        # LimitRequestBody does not apply to reverse-proxied requests: refuse an
        # announced oversize body here, before anything reaches the app.
        f"RewriteCond %{{HTTP:Content-Length}} -gt{limits['body_max']}",
        "RewriteRule ^/api/ - [R=413,L]",
        # RFC 6455 4.1: a WebSocket handshake is HTTP/1.1 or later. mod_proxy would send an
        # HTTP/1.0 upgrade on to the app as HTTP/1.1 and tunnel it without the 101 (no 1xx
        # answer to an HTTP/1.0 client): refuse it here, as the app does.
        "RewriteCond %{SERVER_PROTOCOL} =HTTP/1.0",
        "RewriteRule ^/ws$ - [R=400,L]",
    ]
    if cors["origins"]:
        vhost += [
            "RewriteCond %{REQUEST_METHOD} =OPTIONS",
            f"RewriteCond %{{ENV:{env}_CORS_ORIGIN}} !^$",
            "RewriteRule ^/api/ - [R=204,L]",
        ]
    vhost += [
        "# Static client files from disk; anything not on disk goes to the app." if static_root else
        "# No client files on this host: the app serves them.",
        "RewriteCond %{REQUEST_URI} !^/(api/|ws$|health$|metrics$|uploads/|_errors/|server-status$|\\.well-known/)",
    ] + ([
        "RewriteCond %{DOCUMENT_ROOT}%{REQUEST_URI} !-f",
        "RewriteCond %{DOCUMENT_ROOT}%{REQUEST_URI}index.html !-f",
    ] if static_root else []) + [
        f"RewriteRule ^ \"{app}%{{REQUEST_URI}}\" [P]",
        "",
        "<Location \"/api/\">",
        f"    LimitRequestBody {limits['body_max']}",
    ] + [f"    ErrorDocument {c} {model['error_pages']['json']}" for c in codes]
    if cors["origins"]:
        cond = f"env={env}_CORS_ORIGIN"
        vhost += [f"    Header onsuccess unset {h}" for h in (
            "Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
            "Access-Control-Max-Age", "Access-Control-Allow-Credentials")] + [
            f"    Header always set Access-Control-Allow-Origin \"%{{{env}_CORS_ORIGIN}}e\" {cond}",
            f"    Header always set Access-Control-Allow-Methods {_q(', '.join(cors['methods']))} {cond}",
            f"    Header always set Access-Control-Allow-Headers {_q(', '.join(cors['headers']))} {cond}",
            f"    Header always set Access-Control-Max-Age {_q(str(cors['max_age']))} {cond}",
            "    Header always merge Vary Origin",
        ]
        if cors["credentials"]:
            vhost.append(f"    Header always set Access-Control-Allow-Credentials \"true\" {cond}")
    vhost += [
        "</Location>",
        "<Location \"/metrics\">",
        f"    {allow}",
        "</Location>",
        f"# Debian's status.conf offers {APACHE_STATUS_PATH} on every vhost; here it is refused:",
        f"# it is served on {model['status']['address']}:{model['status']['port']} alone (below).",
        f"<Location \"{APACHE_STATUS_PATH}\">",
        "    Require all denied",
        "</Location>",
    ]
    out += ["# The site."] + _apache_vhost_open(model, "https", names, "h2 http/1.1")
    out += _block(vhost) + ["</VirtualHost>", ""]
    out += _apache_status_vhost(model)
    return "\n".join(line.rstrip() for line in out) + "\n"


def _apache_status_vhost(model):
    """server-status for prometheus-apache-exporter: a loopback vhost of its own, nothing else."""
    status = model["status"]
    return [
        "# The status page for prometheus-apache-exporter: loopback only, on a port of its own.",
        "# ExtendedStatus: the per-request counters (total accesses, kB, CPU) the exporter reads.",
        "ExtendedStatus On",
        f"<VirtualHost {status['address']}:{status['port']}>",
    ] + _block([
        "ServerName localhost",
        "Protocols http/1.1",
        "<Location \"/\">",
        "    Require all denied",
        "</Location>",
        f"<Location \"{APACHE_STATUS_PATH}\">",
        "    SetHandler server-status",
        "    Require local",
        "</Location>",
    ]) + ["</VirtualHost>"]


# ---------------------------------------------------------------------------
# 8. Ansible wrappers
# ---------------------------------------------------------------------------

def _wrap(filter_name, func):
    """Thin wrapper: call the pure function, turn ValueError/TypeError into AnsibleFilterError."""

    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ValueError, TypeError, KeyError) as exc:
            raise AnsibleFilterError(f"{filter_name}: {exc}") from exc

    wrapper.__name__ = filter_name
    wrapper.__doc__ = func.__doc__
    return wrapper


def proxy_model(spec):
    """Role variables -> validated proxy model (see ``build_proxy_model``)."""
    return _wrap("proxy_model", build_proxy_model)(spec)


class FilterModule:
    """webrtc-edge proxy model filters."""

    def filters(self):
        return {
            # model
            "proxy_model": proxy_model,
            "proxy_error_document": _wrap("proxy_error_document", render_error_document),
            # TLS servers beside the proxy (coturn)
            "tls_profile": _wrap("tls_profile", tls_profile),
            # nginx
            "nginx_site": _wrap("nginx_site", render_nginx_site),
            "nginx_headers": _wrap("nginx_headers", render_nginx_headers),
            "nginx_upstream": _wrap("nginx_upstream", render_nginx_upstream),
            "nginx_maps": _wrap("nginx_maps", render_nginx_maps),
            "nginx_tls": _wrap("nginx_tls", render_nginx_tls),
            # apache
            "apache_site": _wrap("apache_site", render_apache_site),
            "apache_ports": _wrap("apache_ports", render_apache_ports),
            "apache_modules": _wrap("apache_modules", render_apache_modules),
            "apache_balancers": _wrap("apache_balancers", render_apache_balancers),
            "apache_headers": _wrap("apache_headers", render_apache_headers),
            "apache_tls": _wrap("apache_tls", render_apache_tls),
        }
