"""The rendered nginx configuration passes `nginx -t` and gixy with no findings."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from validator_helpers import EXTENSIONS, model_spec

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import nginx, proxy

GIXY = Path(sys.executable).with_name("gixy")
#: nginx versions whose output gixy checks here beside the installed nginx's: Debian 13's. Their
#: `nginx -t` cannot run on this controller (Debian 12's nginx 1.22.1 does not know `http2 on;`,
#: new in 1.25.1); it runs in Molecule on the Debian 13 platform, and on every host the nginx
#: role has the host's own nginx test the whole configuration before reloading
#: (roles/nginx/tasks/configure.yml).
GIXY_ONLY_VERSIONS = ["1.26.3"]

MAIN_CONF = """\
worker_processes 1;
worker_rlimit_nofile 8192;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{
    worker_connections 1024;
}}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    sendfile on;
    include {tmp}/sites-enabled/*.conf;
}}
"""


def render_tree(tmp_path, model, nginx_version, main=None, extensions=None):
    """Write site, headers include and a main configuration under tmp_path; return the main file."""
    sites = tmp_path / "sites-enabled"
    sites.mkdir(exist_ok=True)
    include = tmp_path / "snippets" / "webrtc-edge-headers.conf"
    include.parent.mkdir(exist_ok=True)
    include.write_text(nginx.render_nginx_headers(model))
    (sites / "webrtc-edge.conf").write_text(
        nginx.render_nginx_site(model, nginx_version=nginx_version, headers_include=str(include),
                                extensions=extensions))
    conf = tmp_path / "nginx.conf"
    conf.write_text(main if main is not None else MAIN_CONF.format(tmp=tmp_path))
    return conf


def nginx_test(conf):
    return subprocess.run(["nginx", "-t", "-q", "-c", str(conf)], capture_output=True, text=True, check=False)


def test_nginx_accepts_the_site(tmp_path, model, nginx_version):
    done = nginx_test(render_tree(tmp_path, model, nginx_version))
    assert done.returncode == 0, done.stderr
    assert "[warn]" not in done.stderr, done.stderr


def test_nginx_accepts_the_site_inside_debians_main_conf(tmp_path, model, nginx_version):
    """Debian's own nginx.conf (http-level ssl_protocols, gzip on...) with our site as the only one."""
    debian = Path("/etc/nginx/nginx.conf").read_text()
    debian = re.sub(r"^\s*include /etc/nginx/sites-enabled/\*;", f"include {tmp_path}/sites-enabled/*.conf;",
                    debian, flags=re.M)
    debian = re.sub(r"^\s*include /etc/nginx/conf\.d/\*\.conf;", "", debian, flags=re.M)
    debian = re.sub(r"^pid .*;", f"pid {tmp_path}/nginx.pid;", debian, flags=re.M)
    assert f"include {tmp_path}/sites-enabled/*.conf;" in debian
    done = nginx_test(render_tree(tmp_path, model, nginx_version, main=debian))
    assert done.returncode == 0, done.stderr


def test_nginx_rejects_a_broken_site(tmp_path, model, nginx_version):
    """The validator really validates: a bad directive in the rendered site fails."""
    conf = render_tree(tmp_path, model, nginx_version)
    site = tmp_path / "sites-enabled" / "webrtc-edge.conf"
    site.write_text(site.read_text().replace("proxy_buffering off;", "proxy_buffering sometimes;", 1))
    done = nginx_test(conf)
    assert done.returncode != 0
    assert "proxy_buffering" in done.stderr


def test_nginx_dump_shows_one_default_server_per_port(tmp_path, model, nginx_version):
    done = subprocess.run(["nginx", "-T", "-q", "-c", str(render_tree(tmp_path, model, nginx_version))],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    listens = re.findall(r"^\s*listen (\S+)[^;]*default_server;", done.stdout, flags=re.M)
    assert sorted(listens) == sorted(["80", "[::]:80", "443", "[::]:443"])


@pytest.fixture(params=["installed", *GIXY_ONLY_VERSIONS])
def gixy_nginx_version(request, nginx_version):
    """The installed nginx's version, then each of GIXY_ONLY_VERSIONS."""
    return nginx_version if request.param == "installed" else request.param


def test_gixy_has_no_findings(tmp_path, model, gixy_nginx_version):
    assert GIXY.exists(), f"gixy-ng is not installed next to {sys.executable}"
    conf = render_tree(tmp_path, model, gixy_nginx_version)
    done = subprocess.run([str(GIXY), "-f", "json", str(conf)], capture_output=True, text=True, check=False)
    findings = json.loads(done.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=2)
    assert done.returncode == 0, done.stderr


def test_gixy_does_find_a_planted_problem(tmp_path, model, nginx_version):
    """gixy is really looking: a location adding its own header without the include is reported."""
    conf = render_tree(tmp_path, model, nginx_version)
    site = tmp_path / "sites-enabled" / "webrtc-edge.conf"
    text = site.read_text()
    include_line = f"        include {tmp_path}/snippets/webrtc-edge-headers.conf;\n"
    planted = text.replace("location = /health {\n" + include_line, "location = /health {\n", 1)
    planted = planted.replace("location = /health {\n", "location = /health {\n        add_header X-Probe 1;\n", 1)
    assert planted != text
    site.write_text(planted)
    done = subprocess.run([str(GIXY), "-f", "json", str(conf)], capture_output=True, text=True, check=False)
    plugins = {finding["plugin"] for finding in json.loads(done.stdout or "[]")}
    assert "add_header_redefinition" in plugins


@pytest.mark.parametrize("key_type", ["rsa", "ecdsa"])
def test_nginx_loads_both_key_types(tmp_path, nginx_version, key_type):
    model = proxy.build_proxy_model(model_spec(tmp_path, "single", key_type=key_type))
    done = nginx_test(render_tree(tmp_path, model, nginx_version))
    assert done.returncode == 0, done.stderr



def test_nginx_and_gixy_accept_every_extension_point(tmp_path, model, nginx_version):
    """The golden nginx-extended.conf's override points, on each deployment: nginx -t, then gixy."""
    conf = render_tree(tmp_path, model, nginx_version, extensions=EXTENSIONS["nginx"])
    done = nginx_test(conf)
    assert done.returncode == 0, done.stderr
    assert "[warn]" not in done.stderr, done.stderr
    done = subprocess.run([str(GIXY), "-f", "json", str(conf)], capture_output=True, text=True, check=False)
    findings = json.loads(done.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=2)
