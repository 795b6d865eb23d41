# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apache renderers: the proxy model -> the site file, ports.conf and the modules to enable."""

from __future__ import annotations

import re

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.extend import APACHE_EXTENSIONS, check_extensions
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.proxy import CRL_PATH, UPLOAD_ENDPOINT
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.render import MANAGED, _block, _check_model, _q
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.validation import parse_version

APACHE_STATUS_PATH = "/server-status"
#: Bytes/s a request body must keep up once Apache's body timeout has passed (mod_reqtimeout
#: MinRate: each 500 bytes received extend the timeout by one second).
APACHE_BODY_MIN_RATE = 500


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


#: Directory options of every directory the site serves from disk.
_APACHE_DIR_OPTIONS = ["    Options None", "    AllowOverride None", "    Require all granted"]


def _apache_cert(model):
    return [f"SSLCertificateFile {model['tls']['certificate']}",
            f"SSLCertificateKeyFile {model['tls']['certificate_key']}"]


def _apache_acme_dir(model):
    return f"{model['roots']['acme']}/.well-known/acme-challenge/"


def _apache_acme_alias(model):
    acme_dir = _apache_acme_dir(model)
    return [f"Alias /.well-known/acme-challenge/ \"{acme_dir}\"", f"<Directory \"{acme_dir}\">",
            *_APACHE_DIR_OPTIONS, "    ForceType text/plain", "</Directory>"]


def _apache_server_wide(model, version):
    """Server-wide lines: identity, TLS, slow-client timeouts and the per-address request rate."""
    t = model["timeouts"]
    limits = model["limits"]
    page_count = limits["api_rate"] + limits["api_burst"]
    out = [MANAGED, "", f"ServerName {model['server_names'][0]}", "ServerTokens Prod", "ServerSignature Off",
           "TraceEnable Off", ""]
    out += ["# TLS: Mozilla guideline 6.0 " + model["tls"]["profile"]] + render_apache_tls(model).splitlines() + [""]
    out += [
        "# Slow clients (slowloris), mod_reqtimeout: the TLS handshake and the whole request head",
        "# each within their timeout; a body is cut off after its timeout unless it keeps up",
        f"# {APACHE_BODY_MIN_RATE} bytes/s (each {APACHE_BODY_MIN_RATE} bytes received add a second).",
        "RequestReadTimeout " + (f"handshake={t['client_header']} " if version >= (2, 4, 39) else "")
        + f"header={t['client_header']} body={t['client_body']},MinRate={APACHE_BODY_MIN_RATE}",
        "",
    ]
    return out + [
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


def _apache_catch_all_vhosts(model):
    """The first vhost of each port is its default: unknown Host names are refused there."""
    out = ["# Unknown Host names: the first vhost of each port is the default; refuse there."]
    out += _apache_vhost_open(model, "http", ["default.invalid"], "http/1.1")
    out += _block(["<Location \"/\">", "    Require all denied", "</Location>"])
    out += ["</VirtualHost>", ""]
    out += _apache_vhost_open(model, "https", ["default.invalid"], "h2 http/1.1")
    out += _block(["SSLEngine on"] + _apache_cert(model) + ["RewriteEngine On", "RewriteRule ^ - [R=421,L]"])
    return out + ["</VirtualHost>", ""]


def _apache_http_vhost(model):
    """Port 80 of the site: ACME HTTP-01, the CA's CRL when there is one, 308 to https."""
    https = model["ports"]["https"]
    target = "https://%{SERVER_NAME}" + ("" if https == 443 else f":{https}") + "%{REQUEST_URI}"
    crl = model["tls"]["crl"]
    out = ["# Port 80: ACME HTTP-01 challenges" + (" and the CA's CRL" if crl else "")
           + ", everything else goes to https with 308."]
    out += _apache_vhost_open(model, "http", model["server_names"], "http/1.1")
    out += _block(_apache_acme_alias(model) + ([
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
    return out + ["</VirtualHost>", ""]


def _apache_site_files(model, static_root):
    """The site vhost's TLS, headers, compression, error pages and the directories it serves."""
    errors = model["roots"]["errors"]
    return ["SSLEngine on"] + _apache_cert(model) + [""] + ([
        f"DocumentRoot \"{static_root}\"",
        "DirectoryIndex index.html",
        "",
    ] if static_root else []) + render_apache_headers(model).splitlines() + [
        "",
        f"AddOutputFilterByType DEFLATE {' '.join(model['gzip_types'])}",
        "",
    ] + [f"ErrorDocument {c} {model['error_pages']['html']}" for c in model["error_pages"]["codes"]] + [
        "",
        f"Alias /_errors/ \"{errors}/\"",
        f"<Directory \"{errors}/\">",
        *_APACHE_DIR_OPTIONS,
        f"    Header always set Cache-Control {_q(model['cache']['errors'])}",
        "</Directory>",
    ] + _apache_acme_alias(model)


def _apache_uploads(model, uploads_root):
    """``/uploads/``: from disk, or through the uploads host's app with the proxy's headers, GET only."""
    headers = _block(render_apache_headers(model, uploads=True).splitlines()) + [
        f"    Header always set Cache-Control {_q(model['cache']['uploads'])}",
    ]
    if uploads_root:
        return [f"Alias /uploads/ \"{uploads_root}/\"", f"<Directory \"{uploads_root}/\">",
                *_APACHE_DIR_OPTIONS, "    SetHandler None"] + headers + ["</Directory>"]
    # the uploads host's app serves them; the proxy sets the headers and refuses writes
    return ["<Location \"/uploads/\">", "    Header onsuccess unset Cache-Control"] + headers + [
        "    <LimitExcept GET>", "        Require all denied", "    </LimitExcept>", "</Location>"]


def _apache_static_dir(model, static_root):
    """Client files: pages revalidated, fingerprinted assets cached for a year."""
    if not static_root:
        return []
    return [
        f"<Directory \"{static_root}\">",
        *_APACHE_DIR_OPTIONS,
        f"    Header always set Cache-Control {_q(model['cache']['pages'])}",
        f"    <FilesMatch \"{model['cache']['fingerprint_regex']}\">",
        f"        Header always set Cache-Control {_q(model['cache']['assets'])}",
        "    </FilesMatch>",
        "</Directory>",
    ]


def _apache_proxying(model, env, uploads_root):
    """mod_proxy settings, the sticky-route cookie, and what goes to which balancer."""
    out = [
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
        out.append(
            f"Header add Set-Cookie \"{env}_ROUTE=.%{{BALANCER_WORKER_ROUTE}}e; Path=/; Secure; HttpOnly; "
            "SameSite=Lax\" env=BALANCER_ROUTE_CHANGED"
        )
    app = _apache_balancer_name(model, "app")
    uploads = _apache_balancer_name(model, "uploads")
    return out + [
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
    ]


def _apache_rewrites(model, env, static_root):
    """mod_rewrite refusals (smuggling, oversize bodies, HTTP/1.0 upgrades), CORS preflights,
    and the fallback of everything not on disk to the app."""
    out = [
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
        f"RewriteCond %{{HTTP:Content-Length}} -gt{model['limits']['body_max']}",
        "RewriteRule ^/api/ - [R=413,L]",
        # RFC 6455 4.1: a WebSocket handshake is HTTP/1.1 or later. mod_proxy would send an
        # HTTP/1.0 upgrade on to the app as HTTP/1.1 and tunnel it without the 101 (no 1xx
        # answer to an HTTP/1.0 client): refuse it here, as the app does.
        "RewriteCond %{SERVER_PROTOCOL} =HTTP/1.0",
        "RewriteRule ^/ws$ - [R=400,L]",
    ]
    if model["cors"]["origins"]:
        out += [
            "RewriteCond %{REQUEST_METHOD} =OPTIONS",
            f"RewriteCond %{{ENV:{env}_CORS_ORIGIN}} !^$",
            "RewriteRule ^/api/ - [R=204,L]",
        ]
    return out + [
        "# Static client files from disk; anything not on disk goes to the app." if static_root else
        "# No client files on this host: the app serves them.",
        "RewriteCond %{REQUEST_URI} !^/(api/|ws$|health$|metrics$|uploads/|_errors/|server-status$|\\.well-known/)",
    ] + ([
        "RewriteCond %{DOCUMENT_ROOT}%{REQUEST_URI} !-f",
        "RewriteCond %{DOCUMENT_ROOT}%{REQUEST_URI}index.html !-f",
    ] if static_root else []) + [
        f"RewriteRule ^ \"{_apache_balancer_name(model, 'app')}%{{REQUEST_URI}}\" [P]",
        "",
    ]


def _apache_api_location(model, env):
    """``/api/``: the body limit, JSON error pages and the CORS answers for allowed origins."""
    cors = model["cors"]
    out = ["<Location \"/api/\">", f"    LimitRequestBody {model['limits']['body_max']}"]
    out += [f"    ErrorDocument {c} {model['error_pages']['json']}" for c in model["error_pages"]["codes"]]
    if cors["origins"]:
        cond = f"env={env}_CORS_ORIGIN"
        out += [f"    Header onsuccess unset {h}" for h in (
            "Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
            "Access-Control-Max-Age", "Access-Control-Allow-Credentials")] + [
            f"    Header always set Access-Control-Allow-Origin \"%{{{env}_CORS_ORIGIN}}e\" {cond}",
            f"    Header always set Access-Control-Allow-Methods {_q(', '.join(cors['methods']))} {cond}",
            f"    Header always set Access-Control-Allow-Headers {_q(', '.join(cors['headers']))} {cond}",
            f"    Header always set Access-Control-Max-Age {_q(str(cors['max_age']))} {cond}",
            "    Header always merge Vary Origin",
        ]
        if cors["credentials"]:
            out.append(f"    Header always set Access-Control-Allow-Credentials \"true\" {cond}")
    return out + ["</Location>"]


def _apache_restricted_locations(model):
    """``/metrics`` for the allowlist only; the status page never on the site."""
    allow = "Require ip " + " ".join(model["allowlist"]) if model["allowlist"] else "Require all denied"
    return [
        "<Location \"/metrics\">",
        f"    {allow}",
        "</Location>",
        f"# Debian's status.conf offers {APACHE_STATUS_PATH} on every vhost; here it is refused:",
        f"# it is served on {model['status']['address']}:{model['status']['port']} alone (below).",
        f"<Location \"{APACHE_STATUS_PATH}\">",
        "    Require all denied",
        "</Location>",
    ]


def apache_extensions(model, extensions=None):
    """The validated override points (APACHE_EXTENSIONS) for this model's site."""
    known = [loc["path"] for loc in model["locations"] if loc["kind"] != "acme"]
    return check_extensions(extensions, APACHE_EXTENSIONS, "apache", known, reserved=[APACHE_STATUS_PATH])


def _apache_location_section(path, match, directives):
    """``<Location>`` for a prefix, an anchored ``<LocationMatch>`` for an exact path."""
    if match == "exact":
        return [f"<LocationMatch \"^{_apache_regex(path)}$\">"] + _block(directives) + ["</LocationMatch>"]
    return [f"<Location \"{path}\">"] + _block(directives) + ["</Location>"]


def _apache_extras(model, ext):
    """The user's vhost lines, locations and directives for built-in paths, after the site's own
    sections: Apache merges sections in file order, so these come last and win."""
    out = []
    if ext["apache_extra_vhost_directives"]:
        out += ["# Extra vhost directives (apache_extra_vhost_directives)."] + ext["apache_extra_vhost_directives"]
    if ext["apache_extra_locations"]:
        out += ["# Extra locations (apache_extra_locations)."]
        for loc in ext["apache_extra_locations"]:
            out += _apache_location_section(loc["path"], loc["match"], loc["directives"])
    if ext["apache_location_directives"]:
        out += ["# Directives for the site's own locations (apache_location_directives)."]
        matches = {loc["path"]: loc["match"] for loc in model["locations"]}
        for path, directives in ext["apache_location_directives"].items():
            out += _apache_location_section(path, matches[path], directives)
    return out


def render_apache_site(model, apache_version="2.4.62", extensions=None):
    """The whole site file: server-wide TLS and limits, balancers, catch-all and real vhosts.

    ``extensions``: the apache role's override points (APACHE_EXTENSIONS), empty by default.
    """
    model = _check_model(model)
    version = _apache_version(apache_version)
    ext = apache_extensions(model, extensions)
    env = model["name"].upper().replace("-", "_")
    out = _apache_server_wide(model, version)
    if ext["apache_extra_server_directives"]:
        out += ["# Extra server-wide directives (apache_extra_server_directives)."]
        out += ext["apache_extra_server_directives"] + [""]
    out += render_apache_balancers(model, apache_version).splitlines() + [""]
    if model["cors"]["origins"]:
        alternatives = "|".join(_apache_regex(o) for o in model["cors"]["origins"])
        out += [f"SetEnvIf Origin \"^({alternatives})$\" {env}_CORS_ORIGIN=$0", ""]
    out += _apache_catch_all_vhosts(model)
    out += _apache_http_vhost(model)

    locs = {loc["kind"]: loc for loc in model["locations"]}
    static_root, uploads_root = locs["static"]["root"], locs["uploads"]["root"]
    vhost = _apache_site_files(model, static_root) + _apache_uploads(model, uploads_root)
    vhost += _apache_static_dir(model, static_root) + _apache_proxying(model, env, uploads_root)
    vhost += _apache_rewrites(model, env, static_root)
    vhost += _apache_api_location(model, env) + _apache_restricted_locations(model) + _apache_extras(model, ext)
    out += ["# The site."] + _apache_vhost_open(model, "https", model["server_names"], "h2 http/1.1")
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
