"""acme scenario: the proxy's certificate comes from a real ACME server.

What it proves (issue 4, the ACME bullet; issue 3, the tls role's `acme`
source), with Pebble on the scenario's network:

- the certificate nginx serves on the published 443 is for the proxy's name,
  is signed by Pebble's intermediate and chains to Pebble's root, both fetched
  from Pebble's management API by the proxy host (which trusts Pebble's API
  certificate and resolves Pebble by name, as the ACME client did);
- validation was real HTTP-01: every challenge URL Pebble's log says it
  fetched from the proxy's port 80 appears in the proxy's access log, requested
  from Pebble's address and answered 200, and no token is left behind;
- renewal before expiry is wired: the tls role's `issue` entry point, run with
  `tls_renew_before_days` above the certificate's remaining days, orders a new
  certificate (a new serial Pebble's log reports issuing) and nginx serves it.
  A run within the threshold changes nothing: Molecule's idempotence step.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from testinfra_helpers import container_address, inventory_hosts, published_port

PROXY = inventory_hosts("proxy")[0]
PEBBLE = inventory_hosts("pebble")[0]
testinfra_hosts = [PROXY]

CHALLENGE_DIR = "/var/lib/webrtc-edge/acme/.well-known/acme-challenge"
RENEW_PLAYBOOK = Path(__file__).resolve().parent.parent / "renew.yml"
# Pebble's log line for each HTTP-01 fetch (va/va.go).
VALIDATION = re.compile(
    r"Attempting to validate w/ HTTP: http://(?P<name>[^:/]+):80"
    r"/\.well-known/acme-challenge/(?P<token>[A-Za-z0-9_-]+)"
)


@pytest.fixture(scope="module")
def pebble_host():
    """The Pebble host, reached through the scenario's inventory."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{PEBBLE}?ansible_inventory={inventory}")


def pebble_management(host, path: str) -> x509.Certificate:
    """Certificate at ``path`` of Pebble's management API, fetched by ``host``.

    The proxy host does the fetch with its own trust store and DNS: it proves
    the same trust and name resolution the ACME client relied on.
    """
    url = f"https://{PEBBLE}:15000{path}"
    pem = host.check_output(
        "python3 -c 'import sys, urllib.request; "
        "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' %s",
        url,
    )
    return x509.load_pem_x509_certificate(pem.encode())


@pytest.fixture(scope="module")
def pebble_root(host) -> x509.Certificate:
    return pebble_management(host, "/roots/0")


@pytest.fixture(scope="module")
def pebble_intermediate(host) -> x509.Certificate:
    return pebble_management(host, "/intermediates/0")


def served_certificate(root: x509.Certificate) -> x509.Certificate:
    """The leaf nginx serves on the published 443 for the proxy's name.

    The handshake trusts only Pebble's ``root`` and checks the host name, so it
    succeeds only when the served chain leads there and names the proxy.
    """
    context = ssl.create_default_context(
        cadata=root.public_bytes(Encoding.PEM).decode()
    )
    port = published_port(PROXY, 443)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=PROXY) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def pebble_log(pebble_host) -> str:
    """Pebble's whole journal: every order, validation and issue since it started."""
    return pebble_host.check_output("journalctl --no-pager -o cat -u pebble")


def renew(threshold_days: int) -> subprocess.CompletedProcess:
    """Run renew.yml (the tls role's `issue` entry point) with a renewal threshold."""
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]),
            "-e",
            f"tls_renew_before_days={threshold_days}",
            str(RENEW_PLAYBOOK),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_served_certificate_chains_to_pebble_root(pebble_root):
    leaf = served_certificate(pebble_root)
    assert leaf.issuer != leaf.subject, "still the self-signed placeholder"


def test_served_certificate_is_for_the_proxy_name(pebble_root):
    leaf = served_certificate(pebble_root)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [PROXY]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == PROXY


def test_served_certificate_is_signed_by_pebble_intermediate(
    pebble_root, pebble_intermediate
):
    leaf = served_certificate(pebble_root)
    assert leaf.issuer == pebble_intermediate.subject
    leaf.verify_directly_issued_by(pebble_intermediate)  # raises on a bad signature


def test_http01_validation_was_real(host, pebble_host):
    journal = pebble_log(pebble_host)
    fetches = [m.groupdict() for m in VALIDATION.finditer(journal)]
    assert fetches, f"Pebble's log shows no HTTP-01 validation:\n{journal[-2000:]}"
    assert {f["name"] for f in fetches} == {PROXY}

    pebble_address = re.escape(container_address(PEBBLE))
    access_log = host.file("/var/log/nginx/access.log").content_string
    for token in {f["token"] for f in fetches}:
        served = re.compile(
            rf'^{pebble_address} .*"GET /\.well-known/acme-challenge/{token} HTTP/1\.1" 200 ',
            re.MULTILINE,
        )
        assert served.search(access_log), f"token {token} not served 200 to Pebble"


def test_no_challenge_response_left_behind(host):
    assert host.file(CHALLENGE_DIR).is_directory
    assert host.file(CHALLENGE_DIR).listdir() == []


def test_renewal_before_expiry(pebble_root, pebble_host):
    before = served_certificate(pebble_root)
    remaining = before.not_valid_after_utc - datetime.datetime.now(datetime.UTC)

    run = renew(remaining.days + 1)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

    # nginx reloads asynchronously: new workers pick the new certificate up.
    deadline = time.monotonic() + 20
    after = served_certificate(pebble_root)
    while after.serial_number == before.serial_number and time.monotonic() < deadline:
        time.sleep(1)
        after = served_certificate(pebble_root)
    assert after.serial_number != before.serial_number, "no new certificate served"

    issued = re.findall(
        r"Issued certificate serial ([0-9a-f]+)", pebble_log(pebble_host)
    )
    assert format(after.serial_number, "x") in {serial.lstrip("0") for serial in issued}
