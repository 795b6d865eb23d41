# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reverse-proxy model: role variables -> one validated, normalised dictionary.

Constants (the location table; the defaults, read from the proxy role by ``role_defaults``)
and ``build_proxy_model`` with the validation of each section of its input. The TLS profiles
are in ``tls``, what both renderers share (the error documents among it) in ``render``, the
renderers in ``nginx`` and ``apache``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.role_defaults import proxy_defaults
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.tls import (
    TLS_CURVES,
    TLS_PQ_CURVE,
    TLS_PQ_MIN_OPENSSL,
    TLS_PROFILES,
    tls_profile,
)
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.validation import (
    _HEADER_NAME_RE,
    _MIME_RE,
    _NAME_RE,
    _ORIGIN_RE,
    _SERVER_NAME_RE,
    _abs_path,
    _address,
    _bool,
    _header_value,
    _int,
    _list,
    _mapping,
    _port,
    _seconds,
    _size,
    _string,
    parse_version,
)

BALANCE_METHODS = ("least_conn", "round_robin", "ip_hash", "room_hash")

#: Static file names carrying a content hash (``app.3f9a1c2b.js``) may be cached for a year.
FINGERPRINT_REGEX = r"\.[0-9a-f]{8,}\.[A-Za-z0-9]+$"

#: What a key of the input falls back to: the proxy role's defaults as it passes them on a host
#: without facts (see ``role_defaults``), so neither the CSP nor a port is written here again.
#: ``files_from_disk`` is the model's own: the role computes it from the inventory (is this host
#: in proxy_upstream_group?), and a lone filter call is taken for an app host's, its client files
#: and uploads on its own disk. ``server_names`` and ``upstreams`` have no default.
DEFAULTS: dict[str, Any] = {**proxy_defaults(), "files_from_disk": True}

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
#: The status server listens on loopback only: the exporters run on the proxy host.
STATUS_ADDRESS = "127.0.0.1"



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
# The model
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


def _check_top_keys(spec):
    spec = _mapping(spec, "proxy model input")
    unknown = sorted(set(spec) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(unknown)}")
    for key in ("server_names", "upstreams"):
        if key not in spec:
            raise ValueError(f"missing required key {key!r}")
    return spec


def _name_and_balance(spec):
    name = _string(spec.get("name", DEFAULTS["name"]), "name")
    if not _NAME_RE.match(name):
        raise ValueError(f"name must match {_NAME_RE.pattern}, got {name!r}")
    balance = spec.get("balance", DEFAULTS["balance"])
    if balance not in BALANCE_METHODS:
        raise ValueError(f"balance must be one of {', '.join(BALANCE_METHODS)}, got {balance!r}")
    return name, balance


def _ports(spec):
    """``(http, https, status)``: three different ports."""
    http_port = _port(spec.get("http_port", DEFAULTS["http_port"]), "http_port")
    https_port = _port(spec.get("https_port", DEFAULTS["https_port"]), "https_port")
    if http_port == https_port:
        raise ValueError("http_port and https_port must differ")
    status_port = _port(spec.get("status_port", DEFAULTS["status_port"]), "status_port")
    if status_port in (http_port, https_port):
        raise ValueError(f"status_port ({status_port}) must differ from http_port and https_port")
    return http_port, https_port, status_port


def _app_servers(spec, balance, upstream_defaults, status_port):
    """The app's upstream servers; none of this host's may sit on the status port."""
    servers = _upstreams(spec["upstreams"], balance, upstream_defaults)
    for server in servers:
        if server["port"] == status_port and ipaddress.ip_address(server["address"]).is_loopback:
            raise ValueError(f"status_port ({status_port}) is taken by the app instance "
                             f"{server['address']}:{server['port']} on this host: pick another")
    return servers


def _limits(spec):
    limits = _merged(spec, "limits")
    return {
        "api_rate": _int(limits["api_rate"], "limits.api_rate", 1, 100000),
        "api_burst": _int(limits["api_burst"], "limits.api_burst", 0, 100000),
        "conn_per_address": _int(limits["conn_per_address"], "limits.conn_per_address", 1, 100000),
        "body_max": _size(limits["body_max"], "limits.body_max"),
    }


def _timeouts(spec):
    """Timeouts towards the app and of clients; the read timeouts must outlast the app's waits."""
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
    return timeouts


def _allowlist(spec):
    allowlist = []
    for i, raw in enumerate(_list(spec.get("allowlist", DEFAULTS["allowlist"]), "allowlist")):
        try:
            net = ipaddress.ip_network(_string(raw, f"allowlist[{i}]"), strict=False)
        except ValueError:
            raise ValueError(f"allowlist[{i}] is not an address or network: {raw!r}") from None
        text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        if text not in allowlist:
            allowlist.append(text)
    return allowlist


def _gzip_types(spec):
    gzip_types = []
    for i, raw in enumerate(_list(spec.get("gzip_types", DEFAULTS["gzip_types"]), "gzip_types")):
        mime = _string(raw, f"gzip_types[{i}]").lower()
        if not _MIME_RE.match(mime):
            raise ValueError(f"gzip_types[{i}] is not a MIME type: {raw!r}")
        if mime not in gzip_types:
            gzip_types.append(mime)
    return gzip_types


def _cache(cache):
    return {
        "assets": f"public, max-age={cache['assets_max_age']}, immutable",
        "pages": "no-cache",
        "uploads": f"public, max-age={cache['uploads_max_age']}",
        "errors": "no-store",
        "fingerprint_regex": FINGERPRINT_REGEX,
    }


def build_proxy_model(spec):
    """Validate role variables and return the normalised proxy model.

    ``spec`` is a dict; only ``server_names`` and ``upstreams`` are required,
    every other key falls back to ``DEFAULTS``. Raises ``ValueError`` with a
    message naming the offending key on any bad input.
    """
    spec = _check_top_keys(spec)
    name, balance = _name_and_balance(spec)
    http_port, https_port, status_port = _ports(spec)
    upstream_defaults = _merged(spec, "upstream_defaults")
    servers = _app_servers(spec, balance, upstream_defaults, status_port)
    limits = _limits(spec)
    timeouts = _timeouts(spec)
    allowlist = _allowlist(spec)
    roots = {k: _abs_path(v, f"roots.{k}") for k, v in _merged(spec, "roots").items()}
    cache = {k: _int(v, f"cache.{k}", 0, 31536000) for k, v in _merged(spec, "cache").items()}
    gzip_types = _gzip_types(spec)
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
        "upstream": {"name": app_upstream, "balance": balance, "keepalive": keepalive, "servers": servers},
        "uploads_upstream": uploads_upstream,
        "files_from_disk": files_from_disk,
        "tls": _tls(spec),
        "hsts": hsts,
        "headers": headers,
        "uploads_headers": uploads_headers,
        "cache": _cache(cache),
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
