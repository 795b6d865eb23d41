# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""nginx renderers: the proxy model -> the site file and the headers include."""

from __future__ import annotations

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.extend import NGINX_EXTENSIONS, check_extensions
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.proxy import CRL_PATH, STATUS_ADDRESS
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.render import MANAGED, _block, _check_model, _q
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.validation import _abs_path, parse_version

NGINX_STATUS_PATH = "/nginx_status"
NGINX_HEADERS_INCLUDE = "/etc/nginx/snippets/webrtc-edge-headers.conf"


def _nginx_version(value):
    version = parse_version(value, "nginx_version")
    if version < (1, 19, 4):
        raise ValueError(f"nginx {value} is too old: ssl_reject_handshake needs 1.19.4 or later")
    return version


def _nginx_server_address(server):
    host = f"[{server['address']}]" if server["ipv6"] else server["address"]
    return f"{host}:{server['port']}"



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


def _nginx_error_page(model, kind):
    return f"error_page {' '.join(str(c) for c in model['error_pages']['codes'])} {model['error_pages'][kind]};"


def _nginx_errors_body(model, loc, up):
    return ["internal;", f"add_header Cache-Control {_q(model['cache']['errors'])} always;",
            f"alias {model['roots']['errors']}/;"]


def _nginx_websocket_body(model, loc, up):
    t = model["timeouts"]["ws_read"]
    # RFC 6455 4.1: a WebSocket handshake is HTTP/1.1 or later. nginx would send an HTTP/1.0
    # upgrade on to the app as HTTP/1.1 and tunnel it: refuse it here, as the app does.
    return ["if ($server_protocol = HTTP/1.0) {", "    return 400;", "}",
            f"proxy_read_timeout {t}s;", f"proxy_send_timeout {t}s;", "proxy_buffering off;",
            f"proxy_pass {up};"]


def _nginx_cors(model):
    """CORS answers of the API: the allowed origin echoed back, preflights answered here."""
    cors = model["cors"]
    if not cors["origins"]:
        return []
    body = [
        f"add_header Access-Control-Allow-Origin {_nginx_var(model, 'cors_origin')} always;",
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
    return body + ["if ($request_method = OPTIONS) {", "    return 204;", "}"]


def _nginx_api_body(model, loc, up):
    n = model["name"].replace("-", "_")
    limits = model["limits"]
    return _nginx_cors(model) + [
        f"limit_req zone={n}_api burst={limits['api_burst']} nodelay;",
        f"client_max_body_size {limits['body_max']};",
        f"proxy_read_timeout {model['timeouts']['api_read']}s;",
        "proxy_buffering off;",
        _nginx_error_page(model, "json"),
        f"proxy_pass {up};",
    ]


def _nginx_app_body(model, loc, up):
    return (["access_log off;"] if loc["path"] == "/health" else []) + [f"proxy_pass {up};"]


def _nginx_uploads_body(model, loc, up):
    body = [f"add_header Cache-Control {_q(model['cache']['uploads'])} always;"]
    if loc["root"]:
        body.append(f"alias {loc['root']}/;")
    body += ["limit_except GET {", "    deny all;", "}"]
    if not loc["root"]:  # the uploads host's app serves them; the proxy sets the headers
        body += ["proxy_hide_header Cache-Control;", _nginx_error_page(model, "html"), f"proxy_pass {up};"]
    return body


def _nginx_static_body(model, loc, up):
    if loc["root"]:
        return [f"add_header Cache-Control {_nginx_var(model, 'static_cache')} always;", "try_files $uri @app;"]
    # no client files on this host: the app serves them with its own Cache-Control
    return [f"proxy_pass {up};"]


def _nginx_page_locations(model, loc, up, include):
    """``/`` itself and, with client files on disk, the ``@app`` fallback of the static location."""
    # BREACH: the page is never compressed (nginx gzips text/html whatever gzip_types says).
    no_html_gzip = "gzip off;"
    if loc["root"]:
        return ["", "location = / {"] + _block([
            f"include {include};", f"add_header Cache-Control {_q(model['cache']['pages'])} always;",
            no_html_gzip, "try_files /index.html @app;"]) + ["}", "", "location @app {"] + _block([
            f"include {include};", f"proxy_pass {up};"]) + ["}"]
    # the page comes from the app
    return ["", "location = / {"] + _block([f"include {include};", no_html_gzip, f"proxy_pass {up};"]) + ["}"]


#: The body of each kind of location (LOCATIONS), after the headers include and allowlist.
_NGINX_LOCATION_BODIES = {
    "errors": _nginx_errors_body,
    "websocket": _nginx_websocket_body,
    "api": _nginx_api_body,
    "app": _nginx_app_body,
    "uploads": _nginx_uploads_body,
    "static": _nginx_static_body,
}


def _nginx_location(model, loc, include, ext):
    up = f"http://{loc['upstream']}"
    kind, path = loc["kind"], loc["path"]
    opener = {"exact": f"location = {path} {{", "prefix": f"location {path} {{"}[loc["match"]]
    if kind in ("errors", "uploads"):
        opener = f"location ^~ {path} {{"
    body = [f"include {include};"]
    if loc["restricted"]:
        body += [f"allow {addr};" for addr in model["allowlist"]] + ["deny all;"]
    if kind not in _NGINX_LOCATION_BODIES:  # pragma: no cover - LOCATIONS is a closed table
        raise ValueError(f"unknown location kind {kind!r}")
    body += _NGINX_LOCATION_BODIES[kind](model, loc, up)
    body += ext["nginx_location_directives"].get(path, [])
    lines = [opener] + _block(body) + ["}"]
    if kind == "static":
        lines += _nginx_page_locations(model, loc, up, include)
    return lines


def _nginx_http_level(model):
    """http-level lines of the site file: maps and zones, client timeouts, the upstreams."""
    t = model["timeouts"]
    out = render_nginx_maps(model).splitlines() + [""]
    out += [
        "# Slow clients (slowloris): the whole request head (TLS handshake included) within",
        "# client_header_timeout, or the connection is closed; a request body may not stall",
        "# longer than client_body_timeout between two reads. http level: the timeouts before",
        "# the Host header is known come from each port's default (catch-all) server.",
        f"client_header_timeout {t['client_header']}s;",
        f"client_body_timeout {t['client_body']}s;",
        "",
    ]
    return out + render_nginx_upstream(model).splitlines() + [""]


def _nginx_catch_all_servers(model, ssl_listen, http2, tls):
    """The default servers of port 80 and the TLS port: unknown Host names get nothing."""
    out = ["# Unknown Host names on port 80: close the connection without an answer.", "server {"]
    out += _block(
        _nginx_listen(model, "http", "", default=True) + ["server_name _;", "server_tokens off;", "return 444;"])
    out += ["}", ""]
    out += ["# Unknown names on the TLS port: refuse the handshake (421 for coalesced HTTP/2).", "server {"]
    out += _block(_nginx_listen(model, "https", ssl_listen, default=True) + http2 + [
        "server_name _;", "server_tokens off;", "ssl_reject_handshake on;"] + tls + [
        "location / {", "    return 421;", "}"])
    return out + ["}", ""]


def _nginx_http_server(model):
    """Port 80 of the site: ACME HTTP-01, the CA's CRL when there is one, 308 to https."""
    https = model["ports"]["https"]
    target = "https://$host" + ("" if https == 443 else f":{https}") + "$request_uri"
    acme = next(loc for loc in model["locations"] if loc["kind"] == "acme")
    out = ["# Port 80: ACME HTTP-01 challenges" + (" and the CA's CRL" if model["tls"]["crl"] else "")
           + ", everything else goes to https with 308.", "server {"]
    out += _block(_nginx_listen(model, "http", "") + [f"server_name {' '.join(model['server_names'])};",
                                                        "server_tokens off;"])
    out += _block(_nginx_acme_location(model, acme))
    if model["tls"]["crl"]:
        out += _block([f"location = {CRL_PATH} {{"] + _block([
            f"alias {model['tls']['crl']};", "types { }", "default_type application/pkix-crl;"]) + ["}"])
    out += _block(["location / {", f"    return 308 {target};", "}"])
    return out + ["}", ""]


def _nginx_proxy_settings(model):
    """Server-level compression, proxy headers and timeouts, and the error page."""
    codes = " ".join(str(c) for c in model["error_pages"]["codes"])
    return [
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
    ]


def _nginx_extra_locations(ext, include):
    """The user's locations, each with the headers include first (nginx drops inherited headers)."""
    out = []
    for loc in ext["nginx_extra_locations"]:
        opener = {"exact": f"location = {loc['path']} {{", "prefix": f"location {loc['path']} {{"}[loc["match"]]
        out += ["", opener] + _block([f"include {include};"] + loc["directives"]) + ["}"]
    return out


def _nginx_site_server(model, include, ssl_listen, http2, tls, ext):
    """The body of the site's TLS server: certificates, limits, proxying and every location."""
    n = model["name"].replace("-", "_")
    server = _nginx_listen(model, "https", ssl_listen) + http2 + [
        f"server_name {' '.join(model['server_names'])};",
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
    ] if model["files_from_disk"] else []) + _nginx_proxy_settings(model) + ([
        "# Extra server-level directives (nginx_extra_server_directives).",
    ] + ext["nginx_extra_server_directives"] + [""] if ext["nginx_extra_server_directives"] else []) + [
        f"# The status page is served on {STATUS_ADDRESS}:{model['status']['port']} alone (its own server, above).",
        f"location = {NGINX_STATUS_PATH} {{",
    ] + _block([f"include {include};", "deny all;", "access_log off;"]) + ["}"]
    for loc in model["locations"]:
        if loc["kind"] != "acme":
            server += [""] + _nginx_location(model, loc, include, ext)
    return server + _nginx_extra_locations(ext, include)


def nginx_extensions(model, extensions=None):
    """The validated override points (NGINX_EXTENSIONS) for this model's site."""
    known = [loc["path"] for loc in model["locations"] if loc["kind"] != "acme"]
    return check_extensions(extensions, NGINX_EXTENSIONS, "nginx", known, reserved=[NGINX_STATUS_PATH])


def render_nginx_site(model, nginx_version="1.22.1", headers_include=NGINX_HEADERS_INCLUDE, extensions=None):
    """The whole site file (http context): maps, zones, upstream, catch-all and real servers.

    ``extensions``: the nginx role's override points (NGINX_EXTENSIONS), empty by default.
    """
    model = _check_model(model)
    ext = nginx_extensions(model, extensions)
    version = _nginx_version(nginx_version)
    include = _abs_path(headers_include, "headers_include")
    tls = render_nginx_tls(model, nginx_version).splitlines()
    h2_in_listen = version < (1, 25, 1)
    ssl_listen = "ssl http2" if h2_in_listen else "ssl"
    http2 = [] if h2_in_listen else ["http2 on;"]
    out = [MANAGED, ""] + _nginx_http_level(model)
    if ext["nginx_extra_http_directives"]:
        out += ["# Extra http-level directives (nginx_extra_http_directives)."]
        out += ext["nginx_extra_http_directives"] + [""]
    out += _nginx_catch_all_servers(model, ssl_listen, http2, tls)
    out += _nginx_http_server(model)
    out += _nginx_status_server(model) + [""]
    server = _nginx_site_server(model, include, ssl_listen, http2, tls, ext)
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

