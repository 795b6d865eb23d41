"""Unit tests for the proxy model (plugins/plugin_utils: proxy, validation, nginx, apache) and its filters."""

import copy
import json
import os
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.webrtc_edge.edge.plugins.filter import proxy_model as proxy_filters
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import apache, nginx, proxy, render, tls, validation

GOLDEN = Path(__file__).parent / "golden"


def build(spec, **changes):
    """Apply dotted-key changes (``{'tls.profile': 'modern'}``) to a copy of spec and build it."""
    spec = copy.deepcopy(spec)
    for dotted, value in changes.items():
        target = spec
        *parents, leaf = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return proxy.build_proxy_model(spec)


def check_golden(name, text):
    """Compare with tests/plugins/filter/golden/<name>; UPDATE_GOLDEN=1 rewrites the file."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 to accept)"


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


def test_model_keys(spec):
    model = proxy.build_proxy_model(spec)
    assert sorted(model) == sorted([
        "name", "server_names", "ports", "status", "listen_ipv6", "upstream", "uploads_upstream", "files_from_disk",
        "tls", "hsts", "headers",
        "uploads_headers", "cache", "limits", "timeouts", "cors", "allowlist", "roots", "gzip_types",
        "error_pages", "locations",
    ])


def test_model_defaults(spec):
    model = proxy.build_proxy_model(spec)
    assert model["ports"] == {"http": 80, "https": 443}
    assert model["upstream"] == {
        "name": "webrtc_edge_app",
        "balance": "least_conn",
        "keepalive": 32,
        "servers": [{"address": "127.0.0.1", "ipv6": False, "port": 8081, "weight": 1, "backup": False,
                     "max_fails": 3, "fail_timeout": 10, "id": "s1"}],
    }
    assert model["tls"]["profile"] == "intermediate"
    assert model["tls"]["certificate"] == "/etc/webrtc-edge/tls/fullchain.pem"
    assert model["tls"]["certificate_key"] == "/etc/webrtc-edge/tls/privkey.pem"
    assert model["tls"]["crl"] is None  # MINIMAL_SPEC: none
    del spec["tls"]["crl"]
    assert proxy.build_proxy_model(spec)["tls"]["crl"] is None  # the role's default: none (site.yml wires the CA's)
    assert model["hsts"]["value"] == "max-age=63072000; includeSubDomains"
    assert model["limits"] == {"api_rate": 10, "api_burst": 20, "conn_per_address": 100, "body_max": 10551296}
    assert model["timeouts"] == {"connect": 5, "read": 30, "api_read": 45, "ws_read": 90,
                                 "client_header": 10, "client_body": 10}
    assert model["allowlist"] == ["127.0.0.1", "::1"]
    assert model["roots"] == {
        "static": "/opt/signaling/current/static",
        "uploads": "/var/lib/signaling/uploads",
        "acme": "/var/lib/webrtc-edge/acme",
        "errors": "/var/lib/webrtc-edge/errors",
    }
    assert model["cors"]["origins"] == []
    assert [loc["path"] for loc in model["locations"]] == [
        "/.well-known/acme-challenge/", "/_errors/", "/ws", "/api/", "/health", "/metrics", "/uploads/", "/"]
    assert [loc["path"] for loc in model["locations"] if loc["restricted"]] == ["/metrics"]


def test_security_headers_on_every_response(spec):
    model = proxy.build_proxy_model(spec)
    names = [h["name"] for h in model["headers"]]
    assert names == ["Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options",
                     "Referrer-Policy", "Permissions-Policy", "Content-Security-Policy"]
    uploads = {h["name"]: h["value"] for h in model["uploads_headers"]}
    assert uploads["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in uploads["Content-Security-Policy"]
    for deprecated in ("X-XSS-Protection", "Expect-CT", "Feature-Policy"):
        assert deprecated not in names


@pytest.mark.parametrize(
    ("openssl", "curves"),
    [
        ("OpenSSL 3.0.11 19 Sep 2023", "X25519:prime256v1:secp384r1"),
        ("3.4.1", "X25519:prime256v1:secp384r1"),
        ("OpenSSL 3.5.0 8 Apr 2025", "X25519MLKEM768:X25519:prime256v1:secp384r1"),
        ("4.0", "X25519MLKEM768:X25519:prime256v1:secp384r1"),
    ],
)
def test_curves_follow_openssl_version(spec, openssl, curves):
    model = build(spec, **{"tls.openssl_version": openssl})
    assert ":".join(model["tls"]["curves"]) == curves


@pytest.mark.parametrize(
    ("profile", "protocols", "cipher_count"),
    [("intermediate", ["TLSv1.2", "TLSv1.3"], 6), ("modern", ["TLSv1.3"], 0)],
)
def test_tls_profiles(spec, profile, protocols, cipher_count):
    offered = build(spec, **{"tls.profile": profile})["tls"]
    assert offered["protocols"] == protocols
    assert len(offered["ciphers"]) == cipher_count
    # What tls_profile gives servers beside the proxy (coturn) is what the proxy offers.
    assert tls.tls_profile(profile) == {"protocols": offered["protocols"], "ciphers": offered["ciphers"]}


def test_tls_profile_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="profile must be one of intermediate, modern, got 'old'"):
        tls.tls_profile("old")


@pytest.mark.parametrize(
    ("changes", "path", "expected"),
    [
        ({"server_names": ["Signal.Example.ORG.", "signal.example.org", "*.example.org"]}, ("server_names",),
         ["signal.example.org", "*.example.org"]),
        ({"http_port": "8080"}, ("ports", "http"), 8080),
        ({"limits.body_max": "10MiB"}, ("limits", "body_max"), 10485760),
        ({"limits.body_max": "512k"}, ("limits", "body_max"), 524288),
        ({"timeouts.ws_read": "120s"}, ("timeouts", "ws_read"), 120),
        ({"allowlist": ["10.0.0.0/8", "127.0.0.1", "127.0.0.1/32"]}, ("allowlist",), ["10.0.0.0/8", "127.0.0.1"]),
        ({"hsts.preload": True}, ("hsts", "value"), "max-age=63072000; includeSubDomains; preload"),
        ({"hsts.include_subdomains": "no"}, ("hsts", "value"), "max-age=63072000"),
        ({"cors.origins": ["https://App.Example.org/"]}, ("cors", "origins"), ["https://app.example.org"]),
        ({"upstreams": [{"address": "[FD00::1]", "port": 8081}]}, ("upstream", "servers", 0, "address"), "fd00::1"),
        ({"gzip_types": ["Text/CSS", "text/css"]}, ("gzip_types",), ["text/css"]),
        ({"roots.static": "/srv//static/"}, ("roots", "static"), "/srv/static"),
    ],
)
def test_normalisation(spec, changes, path, expected):
    value = build(spec, **changes)
    for key in path:
        value = value[key]
    assert value == expected


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"tls.profile": "old"}, r"tls\.profile must be one of intermediate, modern"),
        ({"upstreams": []}, r"upstreams must not be empty"),
        ({"upstreams": [{"address": "10.0.0.1", "port": 0}]}, r"upstreams\[0\]\.port must be between 1 and 65535"),
        ({"upstreams": [{"address": "10.0.0.1", "port": 70000}]}, r"port must be between 1 and 65535"),
        ({"upstreams": [{"address": "10.0.0.1", "port": True}]}, r"port must be an integer, got a boolean"),
        ({"upstreams": [{"address": "10.0.0.1"}]}, r"needs both 'address' and 'port'"),
        ({"upstreams": [{"address": "bad host!", "port": 1}]}, r"neither an IP address nor a host name"),
        ({"upstreams": [{"address": "10.0.0.1", "port": 1, "wieght": 2}]}, r"unknown keys: wieght"),
        ({"upstreams": [{"address": "10.0.0.1", "port": 1}, {"address": "10.0.0.1", "port": 1}]},
         r"upstreams\[1\] duplicates upstream 10\.0\.0\.1:1"),
        ({"upstreams": [{"address": "10.0.0.1", "port": 1, "backup": True}]},
         r"at least one server must not be a backup"),
        ({"upstreams": [{"address": "10.0.0.1", "port": 1, "weight": 0}]}, r"weight must be between 1 and 100"),
        ({"balance": "random"}, r"balance must be one of least_conn, round_robin, ip_hash, room_hash"),
        ({"balance": "ip_hash", "upstreams": [{"address": "10.0.0.1", "port": 1},
                                              {"address": "10.0.0.2", "port": 1, "backup": True}]},
         r"ip_hash cannot be combined with backup servers"),
        ({"server_names": []}, r"server_names must list at least one name"),
        ({"server_names": "signal.example.org"}, r"server_names must be a list"),
        ({"server_names": ["evil.org\nlocation / { return 200; }"]}, r"control character"),
        ({"server_names": ["a b"]}, r"not a valid host name"),
        ({"headers.referrer_policy": "no-referrer\r\nSet-Cookie: x=1"},
         r"headers\.referrer_policy contains a control character"),
        ({"headers.content_security_policy": "default-src 'self'\" always; add_header X \"y"}, r"must not contain \""),
        ({"headers.permissions_policy": "camera=($host)"}, r"must not contain \$"),
        ({"headers.permissions_policy": "camera=%{ENV}e"}, r"must not contain %"),
        ({"headers.frame_options": "ALLOW-FROM x"}, r"frame_options must be DENY or SAMEORIGIN"),
        ({"headers.uploads_content_security_policy": "default-src 'none'"}, r"must contain the sandbox directive"),
        ({"headers.extra": [{"name": "Bad Header", "value": "x"}]}, r"is not a header name"),
        ({"headers.extra": [{"name": "X-Frame-Options", "value": "x"}]}, r"redefines the managed header"),
        ({"cors.origins": ["*"]}, r"'\*' is refused"),
        ({"cors.origins": ["https://a.example.org/path"]}, r"is not an origin"),
        ({"cors.origins": ["javascript:alert(1)"]}, r"is not an origin"),
        ({"hsts.preload": True, "hsts.max_age": 300}, r"preload needs include_subdomains and max_age >= 31536000"),
        ({"timeouts.ws_read": 30}, r"ws_read \(30s\) must exceed the app heartbeat \(30s\)"),
        ({"timeouts.api_read": 25}, r"api_read \(25s\) must exceed the long-poll wait \(30s\)"),
        ({"limits.body_max": "ten megs"}, r"limits\.body_max must be a size"),
        ({"limits.body_max": "3g"}, r"limits\.body_max must be between 1 and 2147483647"),
        ({"allowlist": ["localhost"]}, r"allowlist\[0\] is not an address or network"),
        ({"roots.static": "relative/dir"}, r"must be an absolute path"),
        ({"roots.static": "/"}, r"must not be the filesystem root"),
        ({"roots.uploads": "/var/lib/../etc"}, r"must not contain '\.' or '\.\.' segments"),
        ({"roots.uploads": "/srv/up;loads"}, r"must not contain ;"),
        ({"tls.certificate": "/etc/x.pem; include /etc/shadow"},
         r"tls\.certificate must be an absolute path without spaces"),
        ({"tls.openssl_version": "unknown"}, r"tls\.openssl_version has no version number"),
        ({"tls.ciphers": "ALL"}, r"tls has unknown keys: ciphers"),
        ({"http_port": 443}, r"http_port and https_port must differ"),
        ({"name": "Web Edge"}, r"name must match"),
        ({"gzip_types": ["text"]}, r"not a MIME type"),
        ({"listen_ipv6": "maybe"}, r"listen_ipv6 must be a boolean"),
        ({"surprise": 1}, r"unknown keys: surprise"),
        ({"files_from_disk": False}, r"uploads_upstreams must list the instances of one app host"),
        ({"uploads_upstreams": [{"address": "10.0.0.1", "port": 8081}]}, r"uploads_upstreams is only for a proxy"),
        ({"files_from_disk": False, "uploads_upstreams": [{"address": "10.0.0.1"}]},
         r"uploads_upstreams\[0\] needs both 'address' and 'port'"),
    ],
)
def test_bad_input_is_refused(spec, changes, match):
    with pytest.raises(ValueError, match=match):
        build(spec, **changes)


@pytest.mark.parametrize("missing", ["server_names", "upstreams"])
def test_required_keys(spec, missing):
    del spec[missing]
    with pytest.raises(ValueError, match=f"missing required key '{missing}'"):
        proxy.build_proxy_model(spec)


@pytest.mark.parametrize(
    ("text", "version"),
    [("nginx version: nginx/1.22.1", (1, 22, 1)), ("Server version: Apache/2.4.62 (Debian)", (2, 4, 62)),
     ("3.5", (3, 5, 0)), ([1, 25, 1], (1, 25, 1))],
)
def test_parse_version(text, version):
    assert validation.parse_version(text) == version


# ---------------------------------------------------------------------------
# Ansible wrappers
# ---------------------------------------------------------------------------


def test_filter_module_lists_every_filter():
    """Only the filters the roles use: the other renderers are plain functions the tests call."""
    assert sorted(proxy_filters.FilterModule().filters()) == sorted([
        "proxy_model", "proxy_error_document", "tls_profile",
        "nginx_site", "nginx_headers",
        "apache_site", "apache_ports", "apache_modules",
    ])


@pytest.mark.parametrize("name", sorted(proxy_filters.FilterModule().filters()))
def test_every_filter_has_a_docstring(name):
    assert proxy_filters.FilterModule().filters()[name].__doc__


def test_wrapper_names_the_filter(spec):
    spec["tls"]["profile"] = "old"
    with pytest.raises(AnsibleFilterError, match=r"^proxy_model: tls\.profile must be one of"):
        proxy_filters.proxy_model(spec)


@pytest.mark.parametrize("name", ["nginx_site", "apache_site", "nginx_headers", "apache_modules"])
def test_renderers_refuse_raw_input(name, spec):
    with pytest.raises(AnsibleFilterError, match=rf"^{name}: input is not a proxy model"):
        proxy_filters.FilterModule().filters()[name](spec)


def test_renderer_refuses_old_nginx(spec):
    model = proxy.build_proxy_model(spec)
    with pytest.raises(AnsibleFilterError, match=r"^nginx_site: nginx 1\.18\.0 is too old"):
        proxy_filters.FilterModule().filters()["nginx_site"](model, nginx_version="1.18.0")


def test_renderer_refuses_bad_include_path(spec):
    model = proxy.build_proxy_model(spec)
    with pytest.raises(AnsibleFilterError, match=r"^nginx_site: headers_include must be an absolute path"):
        proxy_filters.FilterModule().filters()["nginx_site"](model, headers_include="snippets/x.conf")


# ---------------------------------------------------------------------------
# Shared renderers
# ---------------------------------------------------------------------------


def test_error_documents(spec):
    model = proxy.build_proxy_model(spec)
    body = json.loads(render.render_error_document(model, "json"))
    assert body["type"] == "error" and body["code"] == "unavailable"
    html = render.render_error_document(model, "html")
    assert html.startswith("<!DOCTYPE html>") and "unavailable" in html
    with pytest.raises(ValueError, match="kind must be html or json"):
        render.render_error_document(model, "xml")


# ---------------------------------------------------------------------------
# nginx
# ---------------------------------------------------------------------------


def test_nginx_upstream_golden(spec):
    spec["upstreams"] = [
        {"address": "10.0.0.1", "port": 8081, "weight": 2},
        {"address": "fd00::2", "port": 8082, "max_fails": 5, "fail_timeout": "30s"},
        {"address": "app3.internal", "port": 8081, "backup": True},
    ]
    assert nginx.render_nginx_upstream(proxy.build_proxy_model(spec)) == (
        "upstream webrtc_edge_app {\n"
        "    zone webrtc_edge_app 64k;\n"
        "    least_conn;\n"
        "    server 10.0.0.1:8081 weight=2 max_fails=3 fail_timeout=10s;\n"
        "    server [fd00::2]:8082 weight=1 max_fails=5 fail_timeout=30s;\n"
        "    server app3.internal:8081 weight=1 max_fails=3 fail_timeout=10s backup;\n"
        "    keepalive 32;\n"
        "    keepalive_requests 1000;\n"
        "    keepalive_timeout 60s;\n"
        "}\n"
    )


@pytest.mark.parametrize(
    ("balance", "line"),
    [("least_conn", "    least_conn;"), ("ip_hash", "    ip_hash;"),
     ("room_hash", "    hash $webrtc_edge_affinity consistent;"), ("round_robin", None)],
)
def test_nginx_balance_methods(spec, balance, line):
    text = nginx.render_nginx_upstream(build(spec, balance=balance))
    second = text.splitlines()[2]  # after the shared zone
    if line is None:
        assert second.startswith("    server ")
    else:
        assert second == line


def test_nginx_room_hash_has_an_affinity_map(spec):
    maps = nginx.render_nginx_maps(build(spec, balance="room_hash"))
    assert "map $arg_room $webrtc_edge_affinity {\n    default $arg_room;\n    \"\" $remote_addr;\n}" in maps


@pytest.mark.parametrize(
    ("profile", "version", "openssl", "expected"),
    [
        ("intermediate", "1.22.1", "3.0.11",
         "ssl_protocols TLSv1.2 TLSv1.3;\n"
         "ssl_ecdh_curve X25519:prime256v1:secp384r1;\n"
         "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
         "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;\n"
         "ssl_prefer_server_ciphers off;\n"
         "ssl_session_timeout 1d;\n"
         "ssl_session_cache shared:MozSSL:10m;\n"
         "ssl_session_tickets off;\n"),
        ("modern", "1.25.3", "3.0.11",
         "ssl_protocols TLSv1.3;\n"
         "ssl_ecdh_curve X25519:prime256v1:secp384r1;\n"
         "ssl_prefer_server_ciphers off;\n"
         "ssl_session_timeout 1d;\n"
         "ssl_session_cache shared:MozSSL:10m;\n"),
        # Debian 13: nginx rotates the ticket keys itself (1.23.2), OpenSSL 3.5 has ML-KEM
        ("intermediate", "1.26.3", "3.5.7",
         "ssl_protocols TLSv1.2 TLSv1.3;\n"
         "ssl_ecdh_curve X25519MLKEM768:X25519:prime256v1:secp384r1;\n"
         "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
         "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;\n"
         "ssl_prefer_server_ciphers off;\n"
         "ssl_session_timeout 1d;\n"
         "ssl_session_cache shared:MozSSL:10m;\n"),
    ],
)
def test_nginx_tls_golden(spec, profile, version, openssl, expected):
    model = build(spec, **{"tls.profile": profile, "tls.openssl_version": openssl})
    assert nginx.render_nginx_tls(model, nginx_version=version) == expected


def test_nginx_headers_golden(spec):
    assert nginx.render_nginx_headers(proxy.build_proxy_model(spec)) == (
        render.MANAGED + "\n"
        "# Included in the server block and in every location: nginx drops inherited\n"
        "# add_header directives in any location that sets its own.\n"
        'add_header Strict-Transport-Security "max-age=63072000; includeSubDomains" always;\n'
        'add_header X-Content-Type-Options "nosniff" always;\n'
        'add_header X-Frame-Options "DENY" always;\n'
        'add_header Referrer-Policy "strict-origin-when-cross-origin" always;\n'
        'add_header Permissions-Policy "camera=(self), microphone=(self), display-capture=(self), '
        'fullscreen=(self), geolocation=(), payment=(), usb=()" always;\n'
        "add_header Content-Security-Policy $webrtc_edge_csp always;\n"
        "proxy_hide_header Strict-Transport-Security;\n"
        "proxy_hide_header X-Content-Type-Options;\n"
        "proxy_hide_header X-Frame-Options;\n"
        "proxy_hide_header Referrer-Policy;\n"
        "proxy_hide_header Permissions-Policy;\n"
        "proxy_hide_header Content-Security-Policy;\n"
    )


CRL_FILE = "/etc/webrtc-edge/tls/ca.crl"


@pytest.mark.parametrize(("crl", "expected"), [("", None), (CRL_FILE, CRL_FILE)])
def test_tls_crl_is_optional(spec, crl, expected):
    spec["tls"]["crl"] = crl
    assert proxy.build_proxy_model(spec)["tls"]["crl"] == expected


@pytest.mark.parametrize("crl", ["ca.crl", "/etc/tls/../ca.crl", "/etc/tls/ca crl"])
def test_tls_crl_must_be_an_absolute_path(spec, crl):
    spec["tls"]["crl"] = crl
    with pytest.raises(ValueError, match=r"tls\.crl must"):
        proxy.build_proxy_model(spec)


def _port80_server(text, start, end):
    """The plain-http server block/vhost for the site's names (after the catch-all one)."""
    begin = text.index(start, text.index("Port 80:"))
    return text[begin:text.index(end, begin)]


@pytest.mark.parametrize("crl", ["", CRL_FILE])
def test_nginx_port80_serves_the_crl_only_when_given(spec, crl):
    spec["tls"]["crl"] = crl
    block = _port80_server(nginx.render_nginx_site(proxy.build_proxy_model(spec)), "server {", "\n}")
    location = (f"    location = {proxy.CRL_PATH} {{\n        alias {CRL_FILE};\n        types {{ }}\n"
                "        default_type application/pkix-crl;\n    }")
    assert (location in block) == bool(crl)
    assert "return 308 https://$host$request_uri;" in block


@pytest.mark.parametrize("crl", ["", CRL_FILE])
def test_apache_port80_serves_the_crl_only_when_given(spec, crl):
    spec["tls"]["crl"] = crl
    vhost = _port80_server(apache.render_apache_site(proxy.build_proxy_model(spec)), "<VirtualHost", "</VirtualHost>")
    served = [f"Alias {proxy.CRL_PATH} \"{CRL_FILE}\"", f"<Location \"{proxy.CRL_PATH}\">",
              "ForceType application/pkix-crl", f"RewriteCond %{{REQUEST_URI}} !={proxy.CRL_PATH}"]
    assert [line in vhost for line in served] == [bool(crl)] * len(served)
    assert "[R=308,L]" in vhost


def golden_spec(spec, deployment, balance):
    """The input of the ``*-single.conf`` and ``*-multi.conf`` goldens: the minimal one, or two
    weighted app hosts with CORS and the CA's CRL, balanced by ``balance``."""
    if deployment == "multi":
        spec.update(balance=balance, upstreams=[
            {"address": "10.0.0.11", "port": 8081, "weight": 3},
            {"address": "10.0.0.12", "port": 8081},
        ], cors={"origins": ["https://app.example.org", "https://admin.example.org"], "credentials": True})
        spec["tls"]["crl"] = CRL_FILE
    return spec


#: The nginx and OpenSSL versions the hosts report, and the goldens their output is checked
#: against: Debian 12's nginx 1.22.1 with OpenSSL 3.0 (``listen ... ssl http2``,
#: ``ssl_session_tickets off``), Debian 13's nginx 1.26.3 with OpenSSL 3.5 (``http2 on;``, nginx
#: rotating ticket keys itself, the X25519MLKEM768 key exchange first).
NGINX_GOLDEN_VERSIONS = [
    pytest.param("1.22.1", "OpenSSL 3.0.11 19 Sep 2023", "", id="nginx-1.22"),
    pytest.param("1.26.3", "OpenSSL 3.5.7", "-1.26", id="nginx-1.26"),
]


@pytest.mark.parametrize(("nginx_version", "openssl", "suffix"), NGINX_GOLDEN_VERSIONS)
@pytest.mark.parametrize("deployment", ["single", "multi"])
def test_nginx_site_golden(spec, deployment, nginx_version, openssl, suffix):
    spec = golden_spec(spec, deployment, balance="room_hash")
    spec["tls"]["openssl_version"] = openssl
    check_golden(f"nginx-{deployment}{suffix}.conf",
                 nginx.render_nginx_site(proxy.build_proxy_model(spec), nginx_version=nginx_version))


@pytest.mark.parametrize(
    ("version", "listen", "http2_on", "tickets"),
    [("1.22.1", "listen 443 ssl http2;", False, True), ("1.25.1", "listen 443 ssl;", True, False)],
)
def test_nginx_http2_syntax_follows_version(spec, version, listen, http2_on, tickets):
    text = nginx.render_nginx_site(proxy.build_proxy_model(spec), nginx_version=version)
    assert f"    {listen}\n" in text
    assert ("http2 on;" in text) is http2_on
    assert ("ssl_session_tickets off;" in text) is tickets


def test_nginx_site_behaviour(spec):
    text = nginx.render_nginx_site(proxy.build_proxy_model(spec))
    # port 80: catch-all closes, known names redirect with 308 except ACME
    assert "listen 80 default_server;\n        listen [::]:80 default_server;" not in text
    assert "    listen 80 default_server;\n    listen [::]:80 default_server;\n    server_name _;" in text
    assert "return 444;" in text
    assert "ssl_reject_handshake on;" in text
    assert "return 308 https://$host$request_uri;" in text
    assert "location ^~ /.well-known/acme-challenge/ {\n        root /var/lib/webrtc-edge/acme;" in text
    # WebSocket: the map keeps keepalive pools, long read timeout, no buffering
    assert "map $http_upgrade $connection_upgrade {\n    default upgrade;\n    ''      '';\n}" in text
    assert 'Connection "upgrade"' not in text
    ws = text.split("location = /ws {")[1].split("\n    }\n")[0]
    assert "proxy_read_timeout 90s;" in ws and "proxy_buffering off;" in ws
    # RFC 6455 4.1: an HTTP/1.0 upgrade is refused, not passed on to the app as HTTP/1.1
    assert "if ($server_protocol = HTTP/1.0) {\n            return 400;\n        }" in ws
    # API: rate limit, body limit, long-poll timeout, JSON errors
    api = text.split("location /api/ {")[1].split("\n    }\n")[0]
    for line in ("limit_req zone=webrtc_edge_api burst=20 nodelay;", "client_max_body_size 10551296;",
                 "proxy_read_timeout 45s;", "error_page 502 503 504 /_errors/50x.json;"):
        assert line in api
    assert "limit_conn webrtc_edge_conn 100;" in text
    # every location includes the one headers file (but the loopback status server's two)
    assert text.count("include /etc/nginx/snippets/webrtc-edge-headers.conf;") == text.count("location ") - 4
    # metrics only from the allowlist
    block = text.split("location = /metrics {")[1].split("}")[0]
    assert "allow 127.0.0.1;" in block and "allow ::1;" in block and "deny all;" in block
    # our own error pages
    assert "error_page 502 503 504 /_errors/50x.html;" in text
    # real client addresses
    for header in ("X-Real-IP $remote_addr", "X-Forwarded-For $remote_addr", "X-Forwarded-Proto $scheme"):
        assert f"proxy_set_header {header};" in text


def test_nginx_https_port_in_redirect(spec):
    text = nginx.render_nginx_site(build(spec, https_port=8443, http_port=8080))
    assert "return 308 https://$host:8443$request_uri;" in text
    assert "listen 8443 ssl http2 default_server;" in text


def test_nginx_client_timeouts_at_http_level(spec):
    """Slow clients: set before the first server block, so the catch-all default servers
    (which decide before the Host header is read) carry them too."""
    text = nginx.render_nginx_site(build(spec, **{"timeouts.client_header": "7s", "timeouts.client_body": 12}))
    head = text.split("server {")[0]
    assert "client_header_timeout 7s;" in head and "client_body_timeout 12s;" in head
    assert text.count("\nclient_header_timeout ") == 1


def test_nginx_ipv6_can_be_off(spec):
    assert "[::]" not in nginx.render_nginx_site(build(spec, listen_ipv6=False))


def test_nginx_cors_only_when_configured(spec):
    assert "Access-Control" not in nginx.render_nginx_site(proxy.build_proxy_model(spec))
    text = nginx.render_nginx_site(build(spec, **{"cors.origins": ["https://app.example.org"]}))
    assert ('map $http_origin $webrtc_edge_cors_origin {\n    default "";\n'
            '    "https://app.example.org" $http_origin;\n}') in text
    assert "add_header Access-Control-Allow-Origin $webrtc_edge_cors_origin always;" in text
    unhidden = text.replace("proxy_hide_header Access-Control-Allow-Credentials", "")
    assert "Access-Control-Allow-Credentials" not in unhidden
    assert "Access-Control-Allow-Origin *" not in text


# ---------------------------------------------------------------------------
# Apache
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "wstunnel"),
    [("2.4.46", True), ("2.4.47", False), ("Server version: Apache/2.4.62 (Debian)", False),
     ("Server version: Apache/2.4.71 (Debian)", False)],
)
def test_apache_websocket_module_follows_version(spec, version, wstunnel):
    model = proxy.build_proxy_model(spec)
    assert ("proxy_wstunnel" in apache.render_apache_modules(model, apache_version=version)) is wstunnel
    balancers = apache.render_apache_balancers(model, apache_version=version)
    assert ('BalancerMember "ws://127.0.0.1:8081"' in balancers) is wstunnel
    assert ("upgrade=websocket" in balancers) is not wstunnel


def test_apache_balancers_golden(spec):
    spec["upstreams"] = [
        {"address": "10.0.0.1", "port": 8081, "weight": 2},
        {"address": "fd00::2", "port": 8082, "backup": True, "fail_timeout": 30},
    ]
    assert apache.render_apache_balancers(proxy.build_proxy_model(spec), apache_version="2.4.62") == (
        '<Proxy "balancer://webrtc-edge-app">\n'
        '    BalancerMember "http://10.0.0.1:8081" loadfactor=2 retry=10 connectiontimeout=5 timeout=45 keepalive=On\n'
        '    BalancerMember "http://[fd00::2]:8082" loadfactor=1 retry=30 connectiontimeout=5 timeout=45 keepalive=On'
        ' status=+H\n'
        "    ProxySet lbmethod=bybusyness\n"
        "</Proxy>\n"
        "\n"
        '<Proxy "balancer://webrtc-edge-ws">\n'
        '    BalancerMember "http://10.0.0.1:8081" loadfactor=2 retry=10 connectiontimeout=5 timeout=90 keepalive=On '
        "upgrade=websocket\n"
        '    BalancerMember "http://[fd00::2]:8082" loadfactor=1 retry=30 connectiontimeout=5 timeout=90 keepalive=On '
        "upgrade=websocket status=+H\n"
        "    ProxySet lbmethod=bybusyness\n"
        "</Proxy>\n"
    )


@pytest.mark.parametrize(
    ("balance", "proxyset"),
    [("least_conn", "lbmethod=bybusyness"), ("round_robin", "lbmethod=byrequests"),
     ("ip_hash", "lbmethod=bybusyness stickysession=WEBRTC_EDGE_ROUTE"),
     ("room_hash", "lbmethod=bybusyness stickysession=WEBRTC_EDGE_ROUTE")],
)
def test_apache_balance_methods(spec, balance, proxyset):
    model = build(spec, balance=balance)
    assert f"    ProxySet {proxyset}\n" in apache.render_apache_balancers(model)
    sticky = "stickysession" in proxyset
    assert ("route=s1" in apache.render_apache_balancers(model)) is sticky
    assert ("Set-Cookie \"WEBRTC_EDGE_ROUTE=" in apache.render_apache_site(model)) is sticky


@pytest.mark.parametrize(
    ("profile", "openssl", "expected"),
    [
        ("intermediate", "3.0.11",
         "SSLProtocol -all +TLSv1.2 +TLSv1.3\n"
         "SSLOpenSSLConfCmd Curves X25519:prime256v1:secp384r1\n"
         "SSLCipherSuite ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
         "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305\n"
         "SSLHonorCipherOrder off\nSSLSessionTickets off\nSSLUseStapling off\n"),
        ("modern", "3.0.11",
         "SSLProtocol -all +TLSv1.3\n"
         "SSLOpenSSLConfCmd Curves X25519:prime256v1:secp384r1\n"
         "SSLHonorCipherOrder off\nSSLSessionTickets off\nSSLUseStapling off\n"),
        ("modern", "3.5.7",  # Debian 13's OpenSSL: ML-KEM first
         "SSLProtocol -all +TLSv1.3\n"
         "SSLOpenSSLConfCmd Curves X25519MLKEM768:X25519:prime256v1:secp384r1\n"
         "SSLHonorCipherOrder off\nSSLSessionTickets off\nSSLUseStapling off\n"),
    ],
)
def test_apache_tls_golden(spec, profile, openssl, expected):
    assert apache.render_apache_tls(build(spec, **{"tls.profile": profile, "tls.openssl_version": openssl})) == expected


def test_apache_ports(spec):
    assert apache.render_apache_ports(build(spec, http_port=8080, https_port=8443)) == (
        render.MANAGED + "\nListen 8080\nListen 127.0.0.1:8405\n<IfModule ssl_module>\n    Listen 8443\n</IfModule>\n"
    )


#: Apache 2.4.62, the goldens' version, and 2.4.71, what Debian 12 and 13 both ship now: the
#: site follows the version at 2.4.39 (RequestReadTimeout handshake=) and 2.4.47 (WebSockets
#: through mod_proxy_http), so both get the same file. `apache2 -t` checks 2.4.71's here.
APACHE_GOLDEN_VERSIONS = ["2.4.62", "2.4.71"]


@pytest.mark.parametrize("apache_version", APACHE_GOLDEN_VERSIONS)
@pytest.mark.parametrize("deployment", ["single", "multi"])
def test_apache_site_golden(spec, deployment, apache_version):
    spec = golden_spec(spec, deployment, balance="ip_hash")
    check_golden(f"apache-{deployment}.conf",
                 apache.render_apache_site(proxy.build_proxy_model(spec), apache_version=apache_version))


def test_apache_site_behaviour(spec):
    text = apache.render_apache_site(proxy.build_proxy_model(spec))
    vhosts = text.split("<VirtualHost ")[1:]
    # the first vhost of each port is the refusing catch-all
    assert vhosts[0].startswith("*:80>\n    ServerName default.invalid") and "Require all denied" in vhosts[0]
    assert vhosts[1].startswith("*:443>\n    ServerName default.invalid") and "[R=421,L]" in vhosts[1]
    assert "[R=308,L]" in vhosts[2] and "!^/\\.well-known/acme-challenge/" in vhosts[2]
    site = vhosts[3]
    assert "Protocols h2 http/1.1" in site
    assert 'Header always set Strict-Transport-Security "max-age=63072000; includeSubDomains"' in site
    assert 'ProxyPassMatch "^/(ws)$" "balancer://webrtc-edge-ws/$1"' in site
    assert "ProxyTimeout 45" in site and "keepalive=On" in text
    assert "LimitRequestBody 10551296" in site
    # LimitRequestBody alone does not cover proxied requests: announced oversize bodies are refused first.
    assert "RewriteCond %{HTTP:Content-Length} -gt10551296\n    RewriteRule ^/api/ - [R=413,L]" in site
    # chunked HTTP/1.1 request bodies refused (Apache drops Content-Length when both come)
    assert ("RewriteCond %{HTTP2} !=on\n    RewriteCond %{HTTP:Transfer-Encoding} !^$\n"
            "    RewriteRule ^ - [R=400,L]") in site
    # RFC 6455 4.1: an HTTP/1.0 upgrade is refused, not tunnelled to the app as HTTP/1.1
    assert "RewriteCond %{SERVER_PROTOCOL} =HTTP/1.0\n    RewriteRule ^/ws$ - [R=400,L]" in site
    assert "ErrorDocument 503 /_errors/50x.json" in site and "ErrorDocument 503 /_errors/50x.html" in site
    assert "<Location \"/metrics\">\n        Require ip 127.0.0.1 ::1\n    </Location>" in site
    assert 'RequestHeader set X-Real-IP "%{REMOTE_ADDR}s"' in site
    assert "DOSPageCount 30" in text


@pytest.mark.parametrize(
    ("version", "directive"),
    [("2.4.62", "RequestReadTimeout handshake=7 header=7 body=12,MinRate=500"),
     # handshake= only exists from 2.4.39
     ("2.4.38", "RequestReadTimeout header=7 body=12,MinRate=500")],
)
def test_apache_client_timeouts(spec, version, directive):
    model = build(spec, **{"timeouts.client_header": 7, "timeouts.client_body": "12s"})
    text = apache.render_apache_site(model, apache_version=version)
    # server-wide, before the first vhost: it replaces Debian's reqtimeout.conf defaults
    assert directive in text.split("<VirtualHost ")[0]


@pytest.mark.parametrize("key", ["client_header", "client_body"])
def test_client_timeouts_refuse_zero(spec, key):
    with pytest.raises(ValueError, match=rf"timeouts\.{key} must be between 1 and 86400"):
        build(spec, **{f"timeouts.{key}": 0})


def test_nginx_status_page_on_loopback_alone(spec):
    text = nginx.render_nginx_site(build(spec, status_port=9405))
    before, rest = text.split("# The status page for prometheus-nginx-exporter")
    status, site = rest.split("# The site.")
    site = before + site
    # the public site refuses the path to everyone, the allowlist included
    block = site.split("location = /nginx_status {")[1].split("}")[0]
    assert "deny all;" in block and "allow" not in block and "stub_status" not in block
    assert "stub_status" not in site
    # a server of its own on loopback: stub_status there, 404 for the rest
    assert "listen 127.0.0.1:9405;" in status and status.count("listen ") == 1
    assert "location = /nginx_status {\n        allow 127.0.0.1;\n        deny all;\n        stub_status;" in status
    assert "location / {\n        return 404;" in status


def test_apache_status_page_on_loopback_alone(spec):
    model = build(spec, status_port=9405)
    text = apache.render_apache_site(model)
    site, status = text.split("# The status page for prometheus-apache-exporter")
    assert "<Location \"/server-status\">\n        Require all denied\n    </Location>" in site
    assert "SetHandler server-status" not in site
    assert "<VirtualHost 127.0.0.1:9405>" in status and "ExtendedStatus On" in status
    assert "<Location \"/server-status\">\n        SetHandler server-status\n        Require local" in status
    assert "Listen 127.0.0.1:9405" in apache.render_apache_ports(model)


@pytest.mark.parametrize(
    ("values", "message"),
    [({"status_port": 443}, r"status_port \(443\) must differ from http_port and https_port"),
     ({"status_port": 8081, "upstreams": [{"address": "127.0.0.1", "port": 8081}]},
      r"status_port \(8081\) is taken by the app instance 127.0.0.1:8081"),
     ({"status_port": 0}, r"status_port")],
)
def test_status_port_refused(spec, values, message):
    with pytest.raises(ValueError, match=message):
        build(spec, **values)


def test_status_port_may_equal_a_remote_instance_port(spec):
    model = build(spec, status_port=8081, upstreams=[{"address": "10.0.0.5", "port": 8081}])
    assert model["status"] == {"address": "127.0.0.1", "port": 8081}


def test_apache_empty_allowlist_denies(spec):
    text = apache.render_apache_site(build(spec, allowlist=[]))
    assert "<Location \"/metrics\">\n        Require all denied" in text


def test_apache_cors_regex_is_anchored_and_escaped(spec):
    text = apache.render_apache_site(build(spec, **{"cors.origins": ["https://app.example.org:8443"]}))
    assert 'SetEnvIf Origin "^(https:\\/\\/app\\.example\\.org:8443)$" WEBRTC_EDGE_CORS_ORIGIN=$0' in text


# ---------------------------------------------------------------------------
# A proxy host that is not an app host: client files and uploads from the app
# ---------------------------------------------------------------------------

APP1 = [{"address": "10.0.0.11", "port": 8081}, {"address": "10.0.0.11", "port": 8082}]
APP2 = [{"address": "10.0.0.12", "port": 8081}, {"address": "10.0.0.12", "port": 8082}]


@pytest.fixture
def split_spec(spec):
    """A proxy host of its own in front of two app hosts; uploads live on the first."""
    spec.update(upstreams=APP1 + APP2, files_from_disk=False, uploads_upstreams=APP1)
    return spec


def test_on_an_app_host_files_come_from_disk(spec):
    model = proxy.build_proxy_model(spec)
    assert model["files_from_disk"] is True
    assert model["uploads_upstream"] is None
    where = {loc["path"]: (loc["upstream"], loc["root"]) for loc in model["locations"]}
    assert where["/uploads/"] == (None, "/var/lib/signaling/uploads")
    assert where["/"] == ("webrtc_edge_app", "/opt/signaling/current/static")
    assert where["/api/"] == ("webrtc_edge_app", None)
    assert "/api/uploads" not in where


def test_split_uploads_go_to_one_app_host(split_spec):
    model = proxy.build_proxy_model(split_spec)
    up = model["uploads_upstream"]
    assert up["name"] == "webrtc_edge_uploads"
    assert [(s["address"], s["port"]) for s in up["servers"]] == [("10.0.0.11", 8081), ("10.0.0.11", 8082)]
    where = {loc["path"]: (loc["upstream"], loc["root"]) for loc in model["locations"]}
    assert where["/api/uploads"] == ("webrtc_edge_uploads", None)
    assert where["/uploads/"] == ("webrtc_edge_uploads", None)
    assert where["/"] == ("webrtc_edge_app", None)  # no client files on the proxy's disk
    assert where["/api/"] == ("webrtc_edge_app", None)
    paths = [loc["path"] for loc in model["locations"]]
    assert paths.index("/api/uploads") < paths.index("/api/")  # the exact match is listed first


def test_nginx_split_uploads_keep_the_proxy_rules(split_spec):
    site = nginx.render_nginx_site(proxy.build_proxy_model(split_spec))
    assert "upstream webrtc_edge_uploads {" in site
    upload = site.split("location = /api/uploads {", 1)[1].split("\n    }", 1)[0]
    assert "client_max_body_size 10551296;" in upload
    assert "limit_req zone=webrtc_edge_api" in upload
    assert "error_page 502 503 504 /_errors/50x.json;" in upload
    assert "proxy_pass http://webrtc_edge_uploads;" in upload
    files = site.split("location ^~ /uploads/ {", 1)[1].split("\n    }", 1)[0]
    assert "include /etc/nginx/snippets/webrtc-edge-headers.conf;" in files  # the sandboxing CSP by $uri
    assert 'add_header Cache-Control "public, max-age=86400" always;' in files
    assert "proxy_hide_header Cache-Control;" in files
    assert "proxy_pass http://webrtc_edge_uploads;" in files
    assert "alias " not in files
    assert "root /opt/signaling" not in site and "try_files" not in site
    pages = site.rsplit("    location / {", 1)[1].split("\n    }", 1)[0]
    assert "proxy_pass http://webrtc_edge_app;" in pages
    assert "Cache-Control" not in pages  # the app's own, as through Apache


def test_apache_split_uploads_keep_the_proxy_rules(split_spec):
    site = apache.render_apache_site(proxy.build_proxy_model(split_spec))
    assert '<Proxy "balancer://webrtc-edge-uploads">' in site
    uploads_pos = site.index('ProxyPassMatch "^/(api\\/uploads)$" "balancer://webrtc-edge-uploads/$1"')
    assert uploads_pos < site.index('ProxyPass "/api/" "balancer://webrtc-edge-app/api/"')
    assert 'ProxyPass "/uploads/" "balancer://webrtc-edge-uploads/uploads/"' in site
    files = site.split('<Location "/uploads/">', 1)[1].split("</Location>", 1)[0]
    assert "sandbox" in files and "Cache-Control" in files and "Require all denied" in files
    assert "LimitRequestBody 10551296" in site.split('<Location "/api/">', 1)[1]
    assert "DocumentRoot" not in site and "Alias /uploads/" not in site


def test_nginx_site_golden_split(split_spec):
    check_golden("nginx-split.conf", nginx.render_nginx_site(proxy.build_proxy_model(split_spec)))


def test_apache_site_golden_split(split_spec):
    check_golden("apache-split.conf", apache.render_apache_site(proxy.build_proxy_model(split_spec)))


# ---------------------------------------------------------------------------
# Override points (plugins/plugin_utils/extend.py)
# ---------------------------------------------------------------------------

EXTENSIONS = yaml.safe_load((Path(__file__).parent / "extensions.yml").read_text())


def test_nginx_site_golden_extended(spec):
    check_golden("nginx-extended.conf",
                 nginx.render_nginx_site(proxy.build_proxy_model(spec), extensions=EXTENSIONS["nginx"]))


def test_apache_site_golden_extended(spec):
    check_golden("apache-extended.conf",
                 apache.render_apache_site(proxy.build_proxy_model(spec), extensions=EXTENSIONS["apache"]))


@pytest.mark.parametrize("empty", [None, {}, {"nginx_extra_http_directives": [], "nginx_location_directives": {}}])
def test_nginx_empty_extensions_change_nothing(spec, empty):
    model = proxy.build_proxy_model(spec)
    assert nginx.render_nginx_site(model, extensions=empty) == nginx.render_nginx_site(model)


@pytest.mark.parametrize("empty", [None, {}, {"apache_extra_vhost_directives": [], "apache_extra_locations": []}])
def test_apache_empty_extensions_change_nothing(spec, empty):
    model = proxy.build_proxy_model(spec)
    assert apache.render_apache_site(model, extensions=empty) == apache.render_apache_site(model)


def test_nginx_extension_points_land_where_they_belong(spec):
    text = nginx.render_nginx_site(proxy.build_proxy_model(spec), extensions=EXTENSIONS["nginx"])
    http_level = text[:text.index("server {")]
    assert "real_ip_header X-Forwarded-For;" in http_level
    site = text[text.index("# The site."):]
    assert "proxy_set_header X-Request-Id $edge_request_id;" in site
    api = site[site.index("location /api/ {"):]
    api = api[:api.index("\n    }")]
    assert 'add_header X-Robots-Tag "noindex" always;' in api
    robots = site[site.index("location = /robots.txt {"):]
    assert robots.splitlines()[1].strip().startswith("include ")  # the security headers stay


def test_apache_extension_points_land_where_they_belong(spec):
    text = apache.render_apache_site(proxy.build_proxy_model(spec), extensions=EXTENSIONS["apache"])
    assert text.index("LimitRequestFieldSize 16384") < text.index("<VirtualHost")
    site = text[text.index("# The site."):text.index("ExtendedStatus On")]
    assert '<LocationMatch "^\\/robots\\.txt$">' in site
    assert '<Location "/internal/">' in site and "RemoteIPHeader X-Forwarded-For" in site


NGINX_BAD = [
    ({"nginx_extra_http_directives": ["real_ip_header X-Forwarded-For"]},
     r"nginx_extra_http_directives\[0\] must end with ';'"),
    ({"nginx_extra_http_directives": ["gzip on;\nserver { }"]}, r"nginx_extra_http_directives\[0\] contains a control"),
    ({"nginx_extra_server_directives": "gzip on;"}, r"nginx_extra_server_directives must be a list"),
    ({"nginx_extra_server_directives": [5]}, r"nginx_extra_server_directives\[0\] must be a string"),
    ({"nginx_extra_server_directives": ["if ($x) {"]}, r"leaves 1 block\(s\) open"),
    ({"nginx_extra_server_directives": ["}", "location / {"]}, r"\[0\] closes a block that is not open"),
    ({"nginx_extra_locations": [{"path": "/api/", "directives": []}]},
     r"nginx_extra_locations\[0\]\.path /api/ collides with a location the site already has"),
    ({"nginx_extra_locations": [{"path": "/nginx_status"}]}, r"/nginx_status collides"),
    ({"nginx_extra_locations": [{"path": "/a/"}, {"path": "/a/"}]}, r"nginx_extra_locations\[1\]\.path /a/ collides"),
    ({"nginx_extra_locations": [{"path": "relative"}]}, r"nginx_extra_locations\[0\]\.path must be an absolute path"),
    ({"nginx_extra_locations": [{"path": "/a/../b"}]}, r"'\.' or '\.\.' segments"),
    ({"nginx_extra_locations": [{"path": "/a{"}]}, r"path must not contain \{"),
    ({"nginx_extra_locations": [{"path": "/a", "match": "regex"}]}, r"match must be prefix or exact"),
    ({"nginx_extra_locations": [{"path": "/a", "root": "/srv"}]}, r"nginx_extra_locations\[0\] has unknown keys: root"),
    ({"nginx_extra_locations": [{"path": "/a", "directives": ["deny all"]}]},
     r"nginx_extra_locations\[0\]\.directives\[0\] must end with ';'"),
    ({"nginx_location_directives": {"/nope": ["deny all;"]}},
     r"nginx_location_directives names '/nope', not a location of the site; known: /_errors/, /ws, /api/"),
    ({"nginx_location_directives": {"/api/": ["deny all"]}}, r"nginx_location_directives\['/api/'\]\[0\] must end"),
    ({"nginx_extra_everything": []}, r"unknown extension points: nginx_extra_everything"),
]


@pytest.mark.parametrize(("extensions", "match"), NGINX_BAD)
def test_nginx_bad_extensions_are_refused(spec, extensions, match):
    with pytest.raises(ValueError, match=match):
        nginx.render_nginx_site(proxy.build_proxy_model(spec), extensions=extensions)


APACHE_BAD = [
    ({"apache_extra_vhost_directives": ["<IfModule remoteip_module>"]}, r"leaves <ifmodule> open"),
    ({"apache_extra_vhost_directives": ["</Location>"]}, r"\[0\] closes a section that is not open"),
    ({"apache_extra_vhost_directives": ["<If a>", "</Location>"]}, r"\[1\] closes a section that is not open"),
    ({"apache_extra_vhost_directives": ["<If x"]}, r"\[0\] is not a section line"),
    ({"apache_extra_server_directives": ["Header set A b\r\nX"]}, r"apache_extra_server_directives\[0\] contains a"),
    ({"apache_extra_locations": [{"path": "/metrics"}]}, r"apache_extra_locations\[0\]\.path /metrics collides"),
    ({"apache_extra_locations": [{"path": "/server-status"}]}, r"/server-status collides"),
    ({"apache_extra_locations": [{"path": "/a", "directives": ["<Directory /x>"]}]},
     r"apache_extra_locations\[0\]\.directives leaves <directory> open"),
    ({"apache_location_directives": {"/nope": ["Require all denied"]}},
     r"apache_location_directives names '/nope', not a location of the site; known: "),
    ({"apache_location_directives": ["/api/"]}, r"apache_location_directives must be a dictionary"),
]


@pytest.mark.parametrize(("extensions", "match"), APACHE_BAD)
def test_apache_bad_extensions_are_refused(spec, extensions, match):
    with pytest.raises(ValueError, match=match):
        apache.render_apache_site(proxy.build_proxy_model(spec), extensions=extensions)


def test_extension_errors_name_the_filter(spec):
    with pytest.raises(AnsibleFilterError, match=r"^nginx_site: nginx_extra_http_directives\[0\] must end"):
        proxy_filters.FilterModule().filters()["nginx_site"](
            proxy.build_proxy_model(spec), extensions={"nginx_extra_http_directives": ["x"]})
