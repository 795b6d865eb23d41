"""TURN as browsers get it (issue 11, "TURN that works on restrictive networks and in rooms").

Group ``turn``, selected with ``--checks`` (molecule/common/testinfra_plugin.py) by
molecule/default, where the one host is also the proxy, and molecule/cluster, where coturn has a host of its own and
serves TLS on 443. Each check runs for every ``turn`` host and speaks TURN from the
controller to the host's own address, with a small STUN/TURN client (RFC 8489/8656,
long-term credentials) below.

The URLs and credentials
    ``GET /api/ice-servers`` through the proxy lists, for each TURN host, TURN over UDP and
    TCP on ``listening-port`` and TURN over TLS (``turns:``) on ``tls-listening-port``.
TURN over TLS
    the certificate served there chains to the run's CA, names the host of the ``turns:``
    URL, and is the deployment's: the tls role's on that host (and, on a proxy host, the one
    the proxy serves); TLS 1.0/1.1 and CBC suites are refused, TLS 1.2 is spoken with the
    proxy's profile (and TLS 1.3 exactly where coturn has it, from 4.6.2); an allocation
    over that TLS connection with the app's own credential gets a relay address.
Quota per session
    coturn's ``user-quota`` is the role's derivation: the app's ``room_max_peers`` x the
    URLs offered x 2; one session's credentials (whatever their expiry) get exactly that
    many allocations and the next one is refused with 486, while another session still
    gets its own. That is what a room host needs for a full room: a peer connection per
    participant, an allocation per URL, on two local networks.
Ports
    turnserver listens on ``listening-port`` (UDP, TCP) and ``tls-listening-port`` (TCP)
    only: no RFC 5780 alternate ports (+1), no DTLS.
Renewal
    ``systemctl reload coturn`` (the role's drop-in: SIGUSR2, coturn re-reads its
    certificate and key) keeps the process and its allocations, and TLS is served after.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import socket
import ssl
import struct
import time
import tomllib
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from deployment_checks import proxy_host, site  # noqa: F401 (fixtures)
from hardening_checks import _controller_secret, turn_host  # noqa: F401 (fixtures)
from testinfra_helpers import container_address, inventory_host, inventory_hosts, run_ca_file

pytestmark = pytest.mark.turn  # the group a scenario selects with --checks (testinfra_plugin.py)

CONFIG = "/etc/turnserver.conf"
DEPLOYMENT_CERT = "/etc/webrtc-edge/tls/fullchain.pem"  # the tls role's, on the TURN host
APP_CONFIG = "/etc/signaling/signaling.toml"
NETWORKS_PER_BROWSER = 2  # roles/coturn: coturn_user_quota's factor

# ---------------------------------------------------------------------------
# A small TURN client: Allocate and Refresh with long-term credentials
# ---------------------------------------------------------------------------

MAGIC = 0x2112A442
ALLOCATE, REFRESH = 0x0003, 0x0004
SUCCESS, ERROR = 0x0100, 0x0110
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, LIFETIME = 0x0006, 0x0008, 0x0009, 0x000D
REALM, NONCE, XOR_RELAYED_ADDRESS, REQUESTED_TRANSPORT = 0x0014, 0x0015, 0x0016, 0x0019
UDP = 17


class TurnError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _message(method: int, attributes: list[tuple[int, bytes]], key: bytes | None = None) -> bytes:
    txid = os.urandom(12)
    body = b"".join(_attribute(k, v) for k, v in attributes)
    if key is not None:  # MESSAGE-INTEGRITY over the message with its own length counted in
        header = struct.pack("!HHI", method, len(body) + 24, MAGIC) + txid
        body += _attribute(MESSAGE_INTEGRITY, hmac.new(key, header + body, hashlib.sha1).digest())
    return struct.pack("!HHI", method, len(body), MAGIC) + txid + body


def _parse(data: bytes) -> tuple[int, dict[int, bytes]]:
    kind, length, magic = struct.unpack("!HHI", data[:8])
    assert magic == MAGIC, "not a STUN message"
    attributes, at = {}, 20
    while at < 20 + length:
        k, n = struct.unpack("!HH", data[at:at + 4])
        attributes.setdefault(k, data[at + 4:at + 4 + n])
        at += 4 + n + (-n % 4)
    return kind, attributes


class TurnClient:
    """One TURN session (one 5-tuple): UDP datagrams, or STUN messages over a TCP/TLS stream."""

    def __init__(self, sock: socket.socket, username: str, password: str) -> None:
        self.sock, self.username, self.password = sock, username, password
        self.stream = sock.type == socket.SOCK_STREAM
        self.realm = self.nonce = b""

    @classmethod
    def udp(cls, address: str, port: int, username: str, password: str) -> TurnClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        sock.connect((address, port))
        return cls(sock, username, password)

    def _exchange(self, message: bytes) -> tuple[int, dict[int, bytes]]:
        self.sock.sendall(message)
        if not self.stream:
            return _parse(self.sock.recv(65535))
        data = b""
        while len(data) < 20 or len(data) < 20 + struct.unpack("!H", data[2:4])[0]:
            chunk = self.sock.recv(65535)
            assert chunk, "the server closed the connection"
            data += chunk
        return _parse(data)

    def _request(self, method: int, attributes: list[tuple[int, bytes]]) -> dict[int, bytes]:
        """Send, answering the first 401 (realm and nonce) with credentials."""
        for _ in range(2):
            auth = []
            key = None
            if self.realm:
                auth = [(USERNAME, self.username.encode()), (REALM, self.realm), (NONCE, self.nonce)]
                key = hashlib.md5(b":".join([self.username.encode(), self.realm, self.password.encode()])).digest()
            kind, answer = self._exchange(_message(method, attributes + auth, key))
            if kind == method | SUCCESS:
                return answer
            error = answer.get(ERROR_CODE, b"\0\0\0\0")
            code, reason = (error[2] & 7) * 100 + error[3], error[4:].decode(errors="replace")
            if code in (401, 438) and REALM in answer and NONCE in answer:
                self.realm, self.nonce = answer[REALM], answer[NONCE]
                continue
            raise TurnError(code, reason)
        raise TurnError(401, "credentials refused")

    def allocate(self) -> tuple[str, int]:
        """An allocation of a UDP relay; its XOR-RELAYED-ADDRESS (IPv4)."""
        answer = self._request(ALLOCATE, [(REQUESTED_TRANSPORT, struct.pack("!B3x", UDP))])
        relayed = answer[XOR_RELAYED_ADDRESS]
        port = struct.unpack("!H", relayed[2:4])[0] ^ (MAGIC >> 16)
        address = socket.inet_ntoa(struct.pack("!I", struct.unpack("!I", relayed[4:8])[0] ^ MAGIC))
        return address, port

    def release(self) -> None:
        """Refresh with lifetime 0 deletes the allocation at once; then close the socket."""
        with contextlib.suppress(OSError, TurnError, AssertionError):
            self._request(REFRESH, [(LIFETIME, struct.pack("!I", 0))])
        self.sock.close()


def rest_credential(secret: str, user: str, expiry: int) -> tuple[str, str]:
    """coturn's REST scheme, as the app signs: username ``<expiry>:<user>``."""
    username = f"{expiry}:{user}"
    return username, base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


# ---------------------------------------------------------------------------
# What each TURN host serves
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TurnUrls:
    """The URLs ``/api/ice-servers`` gives for one TURN host, and the credential it signed."""

    name: str          # host part of the URLs (coturn_public_host)
    urls: list[str]
    username: str
    credential: str

    def port(self, scheme: str, transport: str) -> int:
        for url in self.urls:
            if url.startswith(f"{scheme}:") and url.endswith(f"?transport={transport}"):
                return int(url.split("?")[0].rsplit(":", 1)[1])
        raise LookupError(f"no {scheme}:...?transport={transport} among {self.urls}")


@pytest.fixture(scope="module")
def ice_servers(site) -> list[dict]:
    answer = site.get("/api/ice-servers")
    assert answer.status == 200, answer.body[:300]
    return answer.json()["ice_servers"]


def _turn_urls(ice_servers: list[dict], host_name: str) -> TurnUrls:
    """The entries naming this inventory host (coturn_public_host defaults to its name)."""
    for server in ice_servers:
        urls = [u for u in server["urls"] if u.split(":")[1] == host_name]
        if urls:
            return TurnUrls(host_name, urls, server["username"], server["credential"])
    raise LookupError(f"/api/ice-servers names no TURN URL of {host_name}: {ice_servers}")


def _config(host) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in host.file(CONFIG).content_string.splitlines() if "=" in line)
    return {k: v for k, v in pairs}


def _tls_context(**versions) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(run_ca_file()))
    for attr, value in versions.items():
        setattr(ctx, attr, value)
    return ctx


@contextlib.contextmanager
def _turns(host, urls: TurnUrls, context: ssl.SSLContext | None = None, timeout: float = 10):
    """A TLS connection to the host's TURN over TLS port, verified: run's CA, the URL's name."""
    raw = socket.create_connection((container_address(host.backend.get_hostname()), urls.port("turns", "tcp")),
                                   timeout=timeout)
    try:
        with (context or _tls_context()).wrap_socket(raw, server_hostname=urls.name) as tls:
            yield tls
    finally:
        raw.close()


def _leaf(pem: str) -> bytes:
    """The DER of the first (leaf) certificate of a PEM chain."""
    return x509.load_pem_x509_certificates(pem.encode())[0].public_bytes(serialization.Encoding.DER)


def _coturn_version(host) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", host.check_output("turnserver --version"))[:3])


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------

def test_ice_servers_list_turn_over_tls(turn_host, ice_servers):
    urls = _turn_urls(ice_servers, turn_host.backend.get_hostname())
    config = _config(turn_host)
    name = urls.name
    assert urls.urls == [f"turn:{name}:{config['listening-port']}?transport=udp",
                         f"turn:{name}:{config['listening-port']}?transport=tcp",
                         f"turns:{name}:{config['tls-listening-port']}?transport=tcp"]
    assert re.fullmatch(r"\d+:anonymous-[A-Za-z0-9_-]+", urls.username), urls.username


def test_turns_serves_the_deployments_certificate(turn_host, ice_servers, site):
    urls = _turn_urls(ice_servers, turn_host.backend.get_hostname())
    with _turns(turn_host, urls) as tls:  # verified: chains to the run's CA, names urls.name
        served = tls.getpeercert(binary_form=True)
    assert served == _leaf(turn_host.file(DEPLOYMENT_CERT).content_string), "not the tls role's certificate"
    if turn_host.backend.get_hostname() in inventory_hosts("proxy"):
        with site.tls_socket(site.tls_context()) as tls:
            assert served == tls.getpeercert(binary_form=True), "not the certificate the proxy serves"


@pytest.mark.parametrize("version", ["TLSv1_1", "TLSv1_2", "TLSv1_3"])
def test_turns_protocols_follow_the_proxy_profile(turn_host, ice_servers, version):
    urls = _turn_urls(ice_servers, turn_host.backend.get_hostname())
    tls_version = getattr(ssl.TLSVersion, version)
    # TLS 1.3 where coturn speaks it (4.6.2 on); Debian 12's 4.6.1 offers TLS 1.2 only.
    accepted = version == "TLSv1_2" or (version == "TLSv1_3" and _coturn_version(turn_host) >= (4, 6, 2))
    context = _tls_context(minimum_version=tls_version, maximum_version=tls_version)
    if version == "TLSv1_1":
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that the refusal is the server's
    try:
        # coturn 4.6.1 does not answer a TLS 1.1 hello at all (no alert): the handshake times
        # out, which refuses it as well (TLS 1.2, the same server, answers at once).
        with _turns(turn_host, urls, context, timeout=10 if accepted else 5) as tls:
            negotiated, cipher = tls.version(), tls.cipher()[0]
    except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
        assert "no protocols available" not in str(exc).lower(), "refused by the client"
        assert not accepted, f"{version} refused: {exc}"
        return
    assert accepted, f"{version} accepted"
    assert negotiated == version.replace("_", ".")
    if version == "TLSv1_2":
        assert re.fullmatch(r"ECDHE-(ECDSA|RSA)-(AES128-GCM-SHA256|AES256-GCM-SHA384|CHACHA20-POLY1305)",
                            cipher), cipher
        cbc = _tls_context(minimum_version=tls_version, maximum_version=tls_version)
        cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with _turns(turn_host, urls, cbc):
                pass


def test_turns_allocation_with_the_apps_credential(turn_host, ice_servers):
    urls = _turn_urls(ice_servers, turn_host.backend.get_hostname())
    config = _config(turn_host)
    with _turns(turn_host, urls) as tls:
        client = TurnClient(tls, urls.username, urls.credential)
        address, port = client.allocate()
        client.release()
    assert int(config["min-port"]) <= port <= int(config["max-port"]), (address, port)
    # The wrong credential is refused over TLS as well.
    with _turns(turn_host, urls) as tls, pytest.raises(TurnError, match=r"^401"):
        TurnClient(tls, urls.username, base64.b64encode(secrets.token_bytes(20)).decode()).allocate()


def _room_max_peers() -> int:
    """The app's room size, from an app host's config (the default when unset there)."""
    app = inventory_host(inventory_hosts("signaling_app")[0])
    return tomllib.loads(app.file(APP_CONFIG).content_string).get("room_max_peers", 50)


def test_user_quota_derived_from_the_room_size(turn_host, ice_servers):
    urls = _turn_urls(ice_servers, turn_host.backend.get_hostname())
    quota = int(_config(turn_host)["user-quota"])
    assert quota == _room_max_peers() * len(urls.urls) * NETWORKS_PER_BROWSER


def test_one_session_gets_its_quota_and_no_more(turn_host, ice_servers, capsys):
    """A session's credentials carry its id after the expiry (``<expiry>:<id>``): coturn counts
    every allocation of that id, whatever the expiry, against one quota."""
    urls = _turn_urls(ice_servers, turn_host.backend.get_hostname())
    quota = int(_config(turn_host)["user-quota"])
    address, port = container_address(turn_host.backend.get_hostname()), urls.port("turn", "udp")
    secret = _controller_secret("turn_secret")
    session = f"quota-{secrets.token_hex(4)}"
    now = int(time.time())
    # Two credentials of the one session, as the page gets before and after a refresh.
    credentials = [rest_credential(secret, session, now + 600), rest_credential(secret, session, now + 900)]
    held: list[TurnClient] = []
    started = time.monotonic()
    try:
        for n in range(quota):
            client = TurnClient.udp(address, port, *credentials[n % 2])
            held.append(client)
            client.allocate()
        refused = TurnClient.udp(address, port, *credentials[0])
        held.append(refused)
        with pytest.raises(TurnError, match=r"^486"):
            refused.allocate()
        other = TurnClient.udp(address, port, *rest_credential(secret, f"other-{secrets.token_hex(4)}", now + 600))
        held.append(other)
        other.allocate()
    finally:
        for client in held:
            client.release()
    with capsys.disabled():
        print(f"\n{turn_host.backend.get_hostname()}: one session held {quota} allocations (user-quota),"
              f" the next was refused with 486; {time.monotonic() - started:.1f} s")


def test_reload_rereads_certificates_in_place(turn_host, ice_servers):
    """What the `tls certificates changed` handler does after a renewal: the same process
    re-reads its certificate and key (SIGUSR2), and an allocation made before lives on."""
    urls = _turn_urls(ice_servers, turn_host.backend.get_hostname())
    assert "/bin/kill -USR2" in turn_host.check_output("systemctl show -p ExecReload --value coturn")
    before = turn_host.check_output("systemctl show -p MainPID --value coturn")
    since = turn_host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    with _turns(turn_host, urls) as tls:
        client = TurnClient(tls, urls.username, urls.credential)
        client.allocate()
        turn_host.check_output("systemctl reload coturn")
        time.sleep(1)
        client._request(REFRESH, [(LIFETIME, struct.pack("!I", 600))])  # still allocated
        client.release()
    assert turn_host.check_output("systemctl show -p MainPID --value coturn") == before
    journal = turn_host.check_output(f"journalctl -u coturn --no-pager -o cat --since '{since}'")
    assert "Reloading TLS certificates and keys" in journal, journal[-2000:]
    with _turns(turn_host, urls) as tls:
        assert tls.getpeercert(binary_form=True) == _leaf(turn_host.file(DEPLOYMENT_CERT).content_string)


def test_coturn_listens_on_its_ports_only(turn_host):
    """No alternate ports (RFC 5780 would add listening-port + 1 and tls-listening-port + 1
    with two addresses), no DTLS; relay sockets (min-port..max-port) aside."""
    config = _config(turn_host)
    relay = range(int(config["min-port"]), int(config["max-port"]) + 1)
    listening = set()
    for line in turn_host.check_output("ss -H -lntup").splitlines():
        fields = line.split()
        if '"turnserver"' in line and int(fields[4].rsplit(":", 1)[1]) not in relay:
            listening.add((fields[0], int(fields[4].rsplit(":", 1)[1])))
    port, tls_port = int(config["listening-port"]), int(config["tls-listening-port"])
    assert listening == {("udp", port), ("tcp", port), ("tcp", tls_port)}
