"""What every deployed webrtc-edge service must prove, whatever its topology.

Group ``deployment``, which molecule/default, molecule/apache and molecule/cluster select with
``--checks`` (molecule/common/testinfra_plugin.py): the fixtures below find
the hosts of each inventory group, the proxy's published ports on 127.0.0.1 and
the run's CA, and instances are read at the address they listen on (loopback on
one host, a private address when the proxy is elsewhere), so the tests need
nothing scenario-specific.
Tests reach the service only through those published ports and run commands
inside the hosts through testinfra (issue 4, "What verify proves").

Inside the hosts
    the chosen proxy (``proxy_server``) enabled and running and the other one
    not; the N ``signaling@<port>`` instances and Redis up; listening sockets
    (80/443 everywhere, app ports only on loopback or a private address); the
    app running as its own non-root user; secret-bearing files not readable by
    others; the proxy's config passing its validator; the app unit's
    ``systemd-analyze security`` exposure at 2.0 or lower.
From outside, through the proxy
    308 from http to https except the ACME path; unknown Host names refused on
    both ports; TLS 1.2/1.3 only; HTTP/2 by ALPN; the security headers on the
    page, the API and on errors; WebSocket upgrade with ``welcome``; a room's
    host and participant, and a polling and a WebSocket peer, signalling each
    other; status pages and ``/metrics`` refused from outside the allowlist but
    served on the host; uploads round-tripping with sandboxing headers, oversize
    bodies refused by the proxy itself.
Disruptive checks (each restores every instance, even on failure)
    stopping the instance a peer is connected through: the peer gets 1001,
    resumes through the proxy with the same id and room, the proxy keeps
    answering, and the restarted instance gets new sessions again; with every
    instance stopped, the proxy answers with our own small 50x page (JSON
    under ``/api/``).
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import os
import re
import secrets
import socket
import ssl
import stat
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

import aiohttp
import pytest
from testinfra_helpers import (
    assert_unit_up,
    inventory_host,
    inventory_hosts,
    published_port,
    redis_flavour,
    run_ca_file,
    run_credentials_dir,
)

from signaling import client

pytestmark = pytest.mark.deployment  # the group a scenario selects with --checks (testinfra_plugin.py)

SITE_NAME = "localhost"  # in the certificate and server_name of every scenario
HSTS = "max-age=63072000; includeSubDomains"  # + "; preload" where hsts_preload()
MAX_EXPOSURE = 2.0
APP_USER = "signaling"
UPLOAD_MAX_DEFAULT = 10 * 1024 * 1024
# The proxy's own status page, by proxy_server.
STATUS_PAGE = {"nginx": "/nginx_status", "apache": "/server-status"}
STATUS_PORT = 8405  # proxy_status_port: the status page's loopback server, the site refuses it
SERVICE = {"nginx": "nginx", "apache": "apache2"}
VALIDATOR = {"nginx": "nginx -t", "apache": "apache2ctl configtest"}
# Heading of our own 50x page (proxy_model.render_error_document).
OWN_ERROR_PAGE = "<h1>Service unavailable</h1>"


# ---------------------------------------------------------------------------
# Fixtures: hosts, ports, trust
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxy_host():
    """The testinfra host of the (one) ``proxy`` group host."""
    return inventory_host(inventory_hosts("proxy")[0])


@pytest.fixture(scope="module")
def proxy_kind(proxy_host) -> str:
    """``nginx`` or ``apache``: the inventory's ``proxy_server`` for the proxy host."""
    return proxy_host.ansible.get_variables().get("proxy_server", "nginx")


@pytest.fixture(scope="module", params=inventory_hosts("signaling_app"))
def app_host(request):
    """Each ``signaling_app`` host in turn."""
    return inventory_host(request.param)


@pytest.fixture(scope="module", params=inventory_hosts("redis"))
def redis_host(request):
    """Each ``redis`` host in turn."""
    return inventory_host(request.param)


@pytest.fixture(scope="module")
def app_ports(app_host) -> list[int]:
    """Ports of the ``signaling@<port>`` units installed on ``app_host``."""
    return _app_ports(app_host)


def _app_ports(host) -> list[int]:
    names = host.check_output(
        "systemctl list-units --all --plain --no-legend --type=service 'signaling@*'"
        " | cut -d' ' -f1"
    ).split()
    return sorted(int(re.fullmatch(r"signaling@(\d+)\.service", n).group(1)) for n in names)


@dataclass
class Answer:
    """One HTTP answer, read in full."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)


class Site:
    """The deployed site as a client on the controller sees it.

    Everything goes to 127.0.0.1 at the ports the proxy container publishes,
    with the site's name in SNI and ``Host`` (``localhost:<port>``, as a
    browser sends it), trusting only the run's CA.
    """

    def __init__(self, container: str, name: str = SITE_NAME) -> None:
        self.name = name
        self.http_port = published_port(container, 80)
        self.https_port = published_port(container, 443)
        self.ca_file = str(run_ca_file())
        self.base = f"https://{name}:{self.https_port}"

    def tls_context(self, **versions) -> ssl.SSLContext:
        """A client context trusting the run's CA (optionally min/max versions)."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        for attr, value in versions.items():
            setattr(ctx, attr, value)
        return ctx

    def tls_socket(self, context: ssl.SSLContext, sni: str | None = None) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.https_port), timeout=10)
        try:
            return context.wrap_socket(raw, server_hostname=sni or self.name)
        except BaseException:
            raw.close()
            raise

    def request(self, method: str, path: str, *, tls: bool = True, host: str | None = None,
                sni: str | None = None, context: ssl.SSLContext | None = None,
                headers: dict[str, str] | None = None, body: bytes | None = None,
                timeout: float = 15) -> Answer:
        """One HTTP/1.1 request; ``host`` overrides the Host header, ``sni`` the TLS name."""
        port = self.https_port if tls else self.http_port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        if tls:
            conn.sock = self.tls_socket(context or self.tls_context(), sni)
            conn.sock.settimeout(timeout)
        try:
            conn.request(method, path, body=body,
                         headers={"Host": host or f"{self.name}:{port}", **(headers or {})})
            resp = conn.getresponse()
            return Answer(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs) -> Answer:
        return self.request("GET", path, **kwargs)

    def session(self) -> aiohttp.ClientSession:
        """An aiohttp session for the site (create it inside the event loop)."""
        connector = aiohttp.TCPConnector(ssl=self.tls_context(), family=socket.AF_INET)
        return aiohttp.ClientSession(base_url=self.base, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60))


@pytest.fixture(scope="module")
def site(proxy_host) -> Site:
    """The site behind the proxy host's published 80/443."""
    return Site(proxy_host.backend.get_hostname())


@dataclass(frozen=True)
class Instance:
    """One ``signaling@<port>`` instance: its host, port and the address it listens on
    (the address in the proxy's endpoint list: loopback on a single host, the host's
    private address when the proxy is elsewhere)."""

    host: object
    port: int
    address: str

    @property
    def name(self) -> str:
        return f"{self.host.backend.get_hostname()}:{self.port}"

    @property
    def unit(self) -> str:
        return f"signaling@{self.port}"

    @property
    def url(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{address}:{self.port}"

    def metric(self, name: str, labels: str = "") -> float:
        """A sample of the instance's /metrics, read on its own host (0 if absent)."""
        text = self.host.check_output(f"curl -sf {self.url}/metrics")
        for line in text.splitlines():
            if line.startswith(name + labels + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def wait_ready(self, timeout: float = 60) -> None:
        """Poll /ready on the instance's host until it answers 200."""
        deadline = time.monotonic() + timeout
        while self.host.run(f"curl -sf -o /dev/null {self.url}/ready").rc != 0:
            assert time.monotonic() < deadline, (
                f"{self.unit} on {self.name} not ready again:\n"
                + self.host.run(f"journalctl --no-pager -n 30 -u {self.unit}").stdout)
            time.sleep(0.5)


def _instances() -> list[Instance]:
    """Every instance of every app host, with the address from its unit's ``--host``."""
    found = []
    for name in inventory_hosts("signaling_app"):
        host = inventory_host(name)
        for port in _app_ports(host):
            exec_start = host.check_output(f"systemctl show -p ExecStart --value signaling@{port}")
            found.append(Instance(host, port, re.search(r"--host (\S+)", exec_start).group(1)))
    return found


def _wait_site_serves(site: Site, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while site.get("/health").status != 200:
        assert time.monotonic() < deadline, "the proxy does not serve /health again"
        time.sleep(0.5)


@contextmanager
def _stopped(site: Site, instances: list[Instance]) -> Iterator[None]:
    """Run the block, then start every instance again and wait until each is ready
    and the proxy serves, whatever happened in the block."""
    try:
        yield
    finally:
        for i in instances:
            i.host.run(f"systemctl start {i.unit}")
        for i in instances:
            i.wait_ready()
        _wait_site_serves(site)


def artifacts_dir() -> Path:
    """``molecule/artifacts/<label>/``: what a run keeps for people to read (scanner output,
    measured figures; tests/tools/report.py prints them), under the label tests/tools/run-scenario.sh
    gives the run, ``<scenario>[-<proxy>]-<release>``, from the same variables."""
    proxy = os.environ.get("MOLECULE_PROXY")
    release = os.environ.get("MOLECULE_DISTRO") or "bookworm"  # the molecule.yml files' default
    label = "-".join(filter(None, [os.environ["MOLECULE_SCENARIO_NAME"], proxy, release]))
    return Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "molecule" / "artifacts" / label


def run_async(coro):
    """Run ``coro`` to completion on an event loop of its own thread (the
    browser call's playwright keeps a loop running in the main thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# ---------------------------------------------------------------------------
# Inside the hosts
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", inventory_hosts("all"))
def test_boot_is_clean(name):
    host = inventory_host(name)
    state = host.run("systemctl is-system-running --wait").stdout.strip()
    if state != "running":
        print(host.run("systemctl --failed --no-pager").stdout)
    assert state == "running"


def test_proxy_enabled_and_running(proxy_host, proxy_kind):
    assert_unit_up(proxy_host, SERVICE[proxy_kind])


def test_other_proxy_not_running(proxy_host, proxy_kind):
    (other,) = set(SERVICE) - {proxy_kind}
    assert not proxy_host.service(SERVICE[other]).is_running
    # Stopped and disabled, or never installed. Not testinfra's is_enabled: systemd 257 (Debian
    # 13) answers `is-enabled` for a unit it does not know with exit 4, which that reads as an error.
    enabled = proxy_host.run(f"systemctl is-enabled {SERVICE[other]}")
    assert enabled.rc != 0, f"{SERVICE[other]} is {enabled.stdout.strip()}"


def test_app_instances_running(app_host, app_ports):
    expected = app_host.ansible.get_variables().get("signaling_app_instances")
    expected = int(expected) if expected is not None else int(app_host.check_output("nproc"))
    assert len(app_ports) == expected, app_ports
    assert app_ports == list(range(app_ports[0], app_ports[0] + expected)), "ports not consecutive"
    for port in app_ports:
        assert_unit_up(app_host, f"signaling@{port}")


def test_redis_running(redis_host):
    """Redis or Valkey, whichever the redis role deployed (the other one is not enabled)."""
    assert_unit_up(redis_host, redis_flavour(redis_host)["unit"])


@pytest.mark.parametrize("name", inventory_hosts("turn"))
def test_turn_running(name):
    assert_unit_up(inventory_host(name), "coturn")


def _listening(host, port: int) -> list[str]:
    return [s.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
            for s in host.socket.get_listening_sockets()
            if s.startswith("tcp") and s.endswith(f":{port}")]


@pytest.mark.parametrize("port", [80, 443])
def test_proxy_listens_on_80_and_443(proxy_host, port):
    addresses = _listening(proxy_host, port)
    assert {"0.0.0.0", "::"} & set(addresses), addresses


def test_app_listens_only_inside(app_host, app_ports):
    for port in app_ports:
        addresses = _listening(app_host, port)
        assert addresses, f"nothing listens on {port}"
        for addr in addresses:
            ip = ip_address(addr)
            assert ip.is_loopback or ip.is_private, f"{port} listens on {addr}"
            assert not ip.is_unspecified, f"{port} listens on every address"


def test_app_runs_as_its_own_user(app_host, app_ports):
    uid = int(app_host.check_output(f"id -u {APP_USER}"))
    assert uid != 0
    main_pids = {app_host.check_output(f"systemctl show -p MainPID --value signaling@{port}")
                 for port in app_ports}
    # Every process running the app, not only the units' main ones: real,
    # effective, saved and filesystem uid all the app's user.
    procs = app_host.check_output(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null"
        " | grep -q '/bin/signaling[ ]--config' && echo ${p#/proc/} $(grep ^Uid: $p/status); done; true"
    ).splitlines()
    uids = {line.split()[0]: set(map(int, line.split()[2:])) for line in procs}
    assert main_pids <= set(uids), (main_pids, procs)
    assert all(ids == {uid} for ids in uids.values()), procs


# Files that hold secrets, by the group whose hosts have them: (path, mode, owner, group).
# The TLS key is root's alone; configs carrying passwords are 0600, readable by their
# service's own user only (Redis's: {config_dir} and {user} of the server deployed there,
# Redis or Valkey); coturn reads its copy of the key (which it re-reads on every reload)
# through its group, and cannot change it.
SECRET_FILES = {
    "proxy": [("/etc/webrtc-edge/tls/privkey.pem", 0o600, "root", "root")],
    "signaling_app": [("/etc/signaling/signaling.toml", 0o600, APP_USER, APP_USER)],
    "redis": [("{config_dir}/webrtc-edge.conf", 0o600, "{user}", "{user}")],
    "turn": [("/etc/turnserver.conf", 0o600, "turnserver", "turnserver"),
             ("/etc/webrtc-edge/tls/privkey.pem", 0o600, "root", "root"),
             ("/etc/coturn/tls/privkey.pem", 0o640, "root", "turnserver")],
}


@pytest.mark.parametrize("name, path, mode, owner, group", [
    pytest.param(name, *spec, id=f"{name}:{spec[0]}")
    for name, spec in dict.fromkeys((name, spec) for grp, specs in SECRET_FILES.items()
                                    for name in inventory_hosts(grp) for spec in specs)
])
def test_secret_files_closed(name, path, mode, owner, group):
    host = inventory_host(name)
    if "{" in path:
        path, owner, group = (v.format(**redis_flavour(host)) for v in (path, owner, group))
    f = host.file(path)
    assert f.is_file
    assert (oct(f.mode), f.user, f.group) == (oct(mode), owner, group)


@pytest.mark.parametrize("relpath", ["tls-ca/ca.key"]
                         + ["redis_password"] * bool(inventory_hosts("redis"))
                         + ["turn_secret"] * bool(inventory_hosts("turn")))
def test_controller_secrets_closed(relpath):
    """The run's controller-side secrets (CA key, generated passwords of the groups
    the inventory has): 0600."""
    path = run_credentials_dir() / relpath
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_proxy_config_passes_its_validator(proxy_host, proxy_kind):
    result = proxy_host.run(VALIDATOR[proxy_kind])
    assert result.rc == 0, result.stderr


def test_app_unit_exposure(app_host, app_ports):
    for port in app_ports:
        unit = f"signaling@{port}.service"
        out = app_host.check_output(f"systemd-analyze security --no-pager {unit}")
        exposure = float(out.rsplit(f"Overall exposure level for {unit}:", 1)[1].split()[0])
        assert exposure <= MAX_EXPOSURE, out


# ---------------------------------------------------------------------------
# HTTP and TLS from outside
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/some/page?x=1&y=2"])
def test_http_redirects_to_https(site, path):
    answer = site.get(path, tls=False)
    assert answer.status == 308
    # Same name and path on the default https port (the published http port
    # means nothing for https).
    assert answer.headers["Location"] == f"https://{site.name}{path}"


def test_acme_challenge_served_over_http(site, proxy_host):
    """A token under the ACME webroot answers 200 over plain http: no redirect."""
    root = proxy_host.ansible.get_variables().get("proxy_acme_root", "/var/lib/webrtc-edge/acme")
    token = secrets.token_urlsafe(12)
    path = f"{root}/.well-known/acme-challenge/{token}"
    proxy_host.run(f"install -D -m 0644 /dev/null {path} && echo {token}.thumb > {path}")
    try:
        answer = site.get(f"/.well-known/acme-challenge/{token}", tls=False)
        missing = site.get("/.well-known/acme-challenge/absent", tls=False)
    finally:
        proxy_host.run(f"rm -f {path}")
    assert (answer.status, answer.body.strip()) == (200, f"{token}.thumb".encode())
    assert missing.status == 404


def _refused(call) -> str:
    """Run ``call``; describe how the server refused it, or fail if it served it."""
    try:
        answer = call()
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected) as exc:
        return f"connection refused: {exc!r}"
    assert 400 <= answer.status < 500 and "Location" not in answer.headers, (
        f"served: {answer.status} {dict(answer.headers)}")
    assert b"webrtc" not in answer.body.lower()
    return f"status {answer.status}"


def test_unknown_host_refused_on_http(site):
    print(_refused(lambda: site.get("/", tls=False, host="unknown.invalid")))


@pytest.mark.parametrize("sni, host", [
    ("unknown.invalid", "unknown.invalid"),   # a name the site does not have
    (SITE_NAME, "unknown.invalid"),           # the right certificate, another Host
])
def test_unknown_host_refused_on_https(site, sni, host):
    # Check the chain but not the name: the refusal must be the server's.
    context = site.tls_context(check_hostname=False)
    print(_refused(lambda: site.get("/", sni=sni, host=host, context=context)))


@pytest.mark.parametrize("version, accepted", [
    (ssl.TLSVersion.TLSv1, False),
    (ssl.TLSVersion.TLSv1_1, False),
    (ssl.TLSVersion.TLSv1_2, True),
    (ssl.TLSVersion.TLSv1_3, True),
])
def test_tls_version(site, version, accepted):
    context = site.tls_context(minimum_version=version, maximum_version=version)
    if not accepted:
        # The controller's OpenSSL would not even offer TLS 1.0/1.1 at its
        # default security level; level 0 makes the refusal the server's.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        with site.tls_socket(context) as tls:
            negotiated = tls.version()
    except (ssl.SSLError, ConnectionError) as exc:
        assert "no protocols available" not in str(exc).lower(), "refused by the client"
        assert not accepted, f"{version.name} refused: {exc}"
    else:
        assert accepted, f"{version.name} accepted"
        assert negotiated == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]


def test_http2_offered(site):
    context = site.tls_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with site.tls_socket(context) as tls:
        assert tls.selected_alpn_protocol() == "h2"


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/", 200),                                       # the client page (from disk)
    ("GET", "/js/app.js", 200),                              # a static asset
    ("GET", "/health", 200),                                 # proxied
    ("GET", "/api/ice-servers", 200),                        # the API
    ("GET", "/no-such-file.png", 404),                       # an error from the app
    ("GET", "/api/sessions/nobody/messages?wait=0", 401),    # a JSON API error
    ("DELETE", "/uploads/nothing.png", None),                # an error from the proxy itself
])
def test_security_headers(site, method, path, status):
    answer = site.request(method, path)
    if status is None:
        assert answer.status in (403, 405), answer.status
    else:
        assert answer.status == status
    _assert_security_headers(answer)


@functools.cache
def hsts_preload() -> bool:
    """The inventory's ``proxy_hsts_preload`` for the proxy host (default off)."""
    proxy = inventory_host(inventory_hosts("proxy")[0])
    return bool(proxy.ansible.get_variables().get("proxy_hsts_preload", False))


def _assert_security_headers(answer: Answer) -> None:
    h = answer.headers
    assert h["Strict-Transport-Security"] == HSTS + ("; preload" if hsts_preload() else "")
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["X-Frame-Options"] in ("DENY", "SAMEORIGIN")
    assert h["Referrer-Policy"]
    assert "camera=" in (h["Permissions-Policy"] or "")
    assert "default-src" in (h["Content-Security-Policy"] or "")
    assert len(h.get_all("Content-Security-Policy")) == 1, "one policy, not two stacked"


def test_status_pages_refused_from_outside(site, proxy_kind):
    # The controller reaches the container through Docker's port mapping, so
    # the proxy sees a non-loopback client address: outside the allowlist.
    for path in (STATUS_PAGE[proxy_kind], "/metrics"):
        assert site.get(path).status == 403, path


# Fetches argv[1] over https on the proxy host itself (from loopback, inside the
# allowlist), trusting the deployment's CA: python3 is on every host, curl need not be.
_FETCH_ON_HOST = """
import ssl, sys, urllib.request
context = ssl.create_default_context(cafile="/etc/webrtc-edge/tls/ca.pem")
print(urllib.request.urlopen(sys.argv[1], context=context, timeout=10).read().decode())
"""


def test_status_pages_served_on_the_host(proxy_host, proxy_kind):
    # /metrics through the site from loopback (the allowlist); the proxy's status page on its
    # loopback port alone (proxy_status_port), which the exporters read.
    out = proxy_host.check_output("python3 -c %s %s", _FETCH_ON_HOST, f"https://{SITE_NAME}/metrics")
    assert "signaling_sessions" in out, out[:300]
    url = f"http://127.0.0.1:{STATUS_PORT}{STATUS_PAGE[proxy_kind]}" + ("?auto" if proxy_kind == "apache" else "")
    out = proxy_host.check_output("python3 -c %s %s", _FETCH_ON_HOST, url)
    assert re.search("Active connections|Scoreboard", out), out[:300]


def _tiny_png() -> bytes:
    """A valid 1x1 PNG, generated so its bytes are ours."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    pixel = zlib.compress(b"\x00" + secrets.token_bytes(3))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", pixel) + chunk(b"IEND", b""))


def _multipart(filename: str, ctype: str, data: bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_upload_round_trip(site):
    png = _tiny_png()
    body, ctype = _multipart("dot.png", "image/png", png)
    created = site.request("POST", "/api/uploads", body=body, headers={"Content-Type": ctype})
    assert created.status == 201, created.body
    url = created.json()["url"]
    assert re.fullmatch(r"/uploads/[A-Za-z0-9_-]+\.png", url)
    fetched = site.get(url)
    assert fetched.status == 200
    assert fetched.body == png
    assert fetched.headers["Content-Type"] == "image/png"
    _assert_security_headers(fetched)
    assert "sandbox" in fetched.headers["Content-Security-Policy"]


def _upload_limit(app_host) -> int:
    return int(app_host.ansible.get_variables().get("signaling_app_upload_max_size",
                                                    UPLOAD_MAX_DEFAULT))


def test_upload_at_the_limit_accepted(site, app_host):
    """A file of exactly the app's limit fits through the proxy's body limit too."""
    data = secrets.token_hex(_upload_limit(app_host) // 2).encode()
    body, ctype = _multipart("big.txt", "text/plain", data)
    created = site.request("POST", "/api/uploads", body=body, headers={"Content-Type": ctype},
                           timeout=60)
    assert created.status == 201, created.body[:300]
    assert site.get(created.json()["url"]).body == data


def test_oversize_upload_refused_by_proxy(site, app_host):
    size = _upload_limit(app_host) + 2**20
    # Send like a browser: headers, then the body, stopping if the proxy
    # answers and closes early (nginx decides from Content-Length alone;
    # Apache reads the body against LimitRequestBody first).
    with site.tls_socket(site.tls_context()) as tls:
        tls.settimeout(30)
        tls.sendall(f"POST /api/uploads HTTP/1.1\r\nHost: {site.name}:{site.https_port}\r\n"
                    f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {size}\r\n"
                    "Connection: close\r\n\r\n".encode())
        chunk = b"x" * 2**16
        try:
            for _ in range(size // len(chunk)):
                tls.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        resp = http.client.HTTPResponse(tls)
        resp.begin()
        answer = Answer(resp.status, resp.headers, resp.read())
    assert answer.status == 413
    # The app's own 413 is a JSON error object; the proxy's is its page.
    assert not answer.headers.get("Content-Type", "").startswith("application/json"), answer.body
    assert b'"too-large"' not in answer.body


# ---------------------------------------------------------------------------
# Signaling through the proxy
# ---------------------------------------------------------------------------

class WsPeer(client.WsPeer):
    """A signaling peer over ``wss://<site>/ws``: the app's reference client, where
    ``expect`` skips other messages and a ``seq`` gap is not judged (checks that need
    either read ``ws`` themselves)."""

    timeout = 15

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, query: str = "") -> WsPeer:
        # ws_connect returns only after a 101 with a valid Sec-WebSocket-Accept.
        return await super().connect(session, f"/ws{query}", timeout=10, heartbeat=None)

    def seq_gap(self, last: int, seq: int) -> None:
        """Not judged here."""

    async def expect(self, kind: str, timeout: float | None = None) -> dict:
        """The next message of type ``kind`` (others are skipped)."""
        return await self.wait_for(kind, timeout)


class PollingPeer(client.PollingPeer):
    """A signaling peer over HTTP long-polling under ``/api/sessions``: the app's reference
    client, where ``expect`` skips other messages (polls of 5 s with ``ack``)."""

    timeout = 15

    def seq_gap(self, last: int, seq: int) -> None:
        """Not judged here."""

    async def expect(self, kind: str, timeout: float | None = None) -> dict:
        return await self.wait_for(kind, timeout)


async def _exchange(a, b) -> None:
    """``a`` offers to ``b``, ``b`` answers, both send a candidate: all relayed intact."""
    sdp = {"type": "offer", "sdp": f"v=0 o=- {secrets.token_hex(4)}"}
    await a.send(type="offer", to=b.id, data=sdp)
    got = await b.expect("offer")
    assert (got["from"], got["data"]) == (a.id, sdp)
    answer = {"type": "answer", "sdp": f"v=0 o=- {secrets.token_hex(4)}"}
    await b.send(type="answer", to=a.id, data=answer)
    got = await a.expect("answer")
    assert (got["from"], got["data"]) == (b.id, answer)
    for x, y in ((a, b), (b, a)):
        cand = {"candidate": f"candidate:1 1 udp 1 192.0.2.1 {secrets.randbelow(60000) + 1024} typ host",
                "sdpMid": "0"}
        await x.send(type="candidate", to=y.id, data=cand)
        got = await y.expect("candidate")
        assert (got["from"], got["data"]) == (x.id, cand)


def test_websocket_upgrade_and_welcome(site):
    async def scenario():
        async with site.session() as session:
            peer = await WsPeer.connect(session)
            await peer.ws.close()
        return peer.welcome

    welcome = run_async(scenario())
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", welcome["id"])
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", welcome["token"])
    assert welcome["heartbeat"] > 0 and welcome["resume"] > 0


def test_room_host_and_participant_signal(site):
    room = f"verify-{secrets.token_hex(4)}"

    async def scenario():
        async with site.session() as session:
            host = await WsPeer.connect(session)
            guest = await WsPeer.connect(session)
            await host.send(type="join", room=room, role="host", name="Bo")
            assert (await host.expect("joined"))["peers"] == []
            await guest.send(type="join", room=room, role="participant", name="Ana")
            joined = await guest.expect("joined")
            assert [p["id"] for p in joined["peers"]] == [host.id]
            assert (await host.expect("peer-joined"))["peer"]["id"] == guest.id
            await _exchange(guest, host)
            for peer in (host, guest):
                await peer.ws.close()

    run_async(scenario())


def test_polling_and_websocket_peers_signal(site):
    async def scenario():
        async with site.session() as session:
            ws_peer = await WsPeer.connect(session)
            poller = await PollingPeer.create(session)
            await _exchange(ws_peer, poller)
            await _exchange(poller, ws_peer)
            await ws_peer.ws.close()
            await poller.close()

    run_async(scenario())


# ---------------------------------------------------------------------------
# Disruptive checks: each restores every instance before it returns
# ---------------------------------------------------------------------------

def _ws_connections(instances: list[Instance]) -> dict[str, float]:
    return {i.name: i.metric("signaling_connections", '{transport="websocket"}') for i in instances}


def test_instance_failover(site):
    instances = _instances()
    assert len(instances) >= 2, "failover needs two instances"
    room = f"failover-{secrets.token_hex(4)}"

    async def scenario():
        async with site.session() as session:
            before = _ws_connections(instances)
            peer = await WsPeer.connect(session)
            await peer.send(type="join", room=room, role="host", name="Bo")
            await peer.expect("joined")
            after = _ws_connections(instances)
            grown = [i for i in instances if after[i.name] > before[i.name]]
            assert len(grown) == 1, (before, after)
            (stopped,) = grown
            with _stopped(site, [stopped]):
                # Stop the instance the peer is on; it drains, closing with 1001.
                stopping = asyncio.create_task(
                    asyncio.to_thread(stopped.host.run, f"systemctl stop {stopped.unit}"))
                msg = await peer.ws.receive(timeout=30)
                while msg.type == aiohttp.WSMsgType.TEXT:
                    msg = await peer.ws.receive(timeout=30)
                # The close frame the draining app sent, relayed by the proxy.
                assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1001), msg
                assert (await stopping).rc == 0
                assert not stopped.host.service(stopped.unit).is_running

                # Resume through the proxy: another instance takes the session.
                resumed = await WsPeer.connect(session, f"?resume={peer.token}&ack={peer.last_seq}")
                w = resumed.welcome
                assert (w["resumed"], w["id"], w["room"], w["role"]) == (True, peer.id, room, "host")
                # The room is live: a newcomer finds the host and signals it.
                guest = await WsPeer.connect(session)
                await guest.send(type="join", room=room, role="participant", name="Ana")
                assert [p["id"] for p in (await guest.expect("joined"))["peers"]] == [peer.id]
                assert (await resumed.expect("peer-joined"))["peer"]["id"] == guest.id
                await _exchange(guest, resumed)

                # The proxy keeps serving with the instance down.
                statuses = []
                for _ in range(20):
                    async with session.get("/health") as resp:
                        statuses.append(resp.status)
                    await asyncio.sleep(0.1)
                assert statuses == [200] * 20

                # Start it again: new sessions reach it again (its fresh counter
                # moves) once the proxy's failure timeout is over. One request per
                # attempt, all alike: a create-then-delete pair would alternate
                # with a round-robin tie-break and could land every create on the
                # same instance.
                await asyncio.to_thread(stopped.host.run, f"systemctl start {stopped.unit}")
                await asyncio.to_thread(stopped.wait_ready)
                pollers = []
                deadline = time.monotonic() + 45
                while not await asyncio.to_thread(
                        stopped.metric, "signaling_sessions_opened_total", '{transport="poll"}'):
                    assert time.monotonic() < deadline, f"{stopped.name} gets no new sessions back"
                    pollers.append(await PollingPeer.create(session))
                    await asyncio.sleep(0.3)
                for p in pollers:
                    await p.close()
                for p in (resumed, guest):
                    await p.ws.close()

    run_async(scenario())


def test_own_error_pages_when_every_instance_is_down(site):
    instances = _instances()
    with _stopped(site, instances):
        for i in instances:
            i.host.check_output(f"systemctl stop {i.unit}")
        page = site.get("/health")
        api = site.get("/api/ice-servers")
    assert page.status in (502, 503, 504)
    assert page.headers["Content-Type"].startswith("text/html")
    assert OWN_ERROR_PAGE in page.body.decode(), page.body[:300]
    _assert_security_headers(page)
    assert api.status in (502, 503, 504)
    assert api.headers["Content-Type"].startswith("application/json")
    assert api.json()["code"] == "unavailable"
    _assert_security_headers(api)
