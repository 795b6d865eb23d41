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
- certificates renew themselves (issue 12), with the controller out of the
  loop: Pebble issues one-day certificates (converge.yml), below the role's
  30-day threshold, so Debian's certbot.timer finds them due. The test starts
  the timer's service on the host as the timer would (no playbook runs): certbot
  renews over HTTP-01 through nginx, its deploy hook checks nginx and reloads it
  (same master), and nginx serves the new certificate (a new serial Pebble's log
  reports issuing); the textfile records the run and the new expiry;
- a renewal that fails (Pebble stopped) leaves the old certificate serving, the
  unit failed with certbot's message in its journal, and
  webrtc_edge_tls_renewal_failed 1 in the textfile;
- the playbook itself orders nothing once certbot holds a fitting certificate:
  Molecule's idempotence step.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import time

import pytest
import testinfra
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from testinfra_helpers import container_address, inventory_hosts, published_port

PROXY = inventory_hosts("proxy")[0]
PEBBLE = inventory_hosts("pebble")[0]
testinfra_hosts = [PROXY]
# Before the shared checks but after check mode (which comes first, from molecule/common/): the
# certificate and validation converge left, then the renewal, which the sandbox checks after it
# prove ran under nginx's drop-in.
pytestmark = pytest.mark.on_converged_hosts

CHALLENGE_DIR = "/var/lib/webrtc-edge/acme/.well-known/acme-challenge"
TEXTFILE = "/var/lib/prometheus/node-exporter/webrtc_edge_tls.prom"
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


def test_served_certificate_chains_to_pebble_root(pebble_root):
    leaf = served_certificate(pebble_root)
    assert leaf.issuer != leaf.subject, "still the self-signed placeholder"


def test_served_certificate_is_for_the_proxy_name(pebble_root):
    leaf = served_certificate(pebble_root)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [PROXY]
    # Clients match the SAN (RFC 6125). Debian 13's Pebble (2.6) leaves the subject's CN out, as
    # Let's Encrypt's newer profiles do; Debian 12's sets it, and then to the same name.
    common_names = [cn.value for cn in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    assert common_names in ([], [PROXY]), common_names


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


def textfile(host) -> dict[str, float]:
    """The samples of the tls role's node-exporter textfile, by name (labels dropped)."""
    samples = {}
    for line in host.file(TEXTFILE).content_string.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name.split("{")[0]] = float(value)
    return samples


def wait_for_serial(root, differs_from: int, seconds: float = 20) -> x509.Certificate:
    """The served leaf once its serial differs from ``differs_from`` (nginx reloads
    asynchronously: new workers pick the new certificate up), or the last one seen."""
    deadline = time.monotonic() + seconds
    leaf = served_certificate(root)
    while leaf.serial_number == differs_from and time.monotonic() < deadline:
        time.sleep(0.5)
        leaf = served_certificate(root)
    return leaf


def host_now(host) -> int:
    return int(host.check_output("date +%s"))


def test_renewal_timer_is_debians_with_the_role_drop_in(host):
    assert host.service("certbot.timer").is_enabled
    assert host.service("certbot.timer").is_running  # a timer "runs" while it waits
    unit = host.check_output("systemctl cat certbot.service")
    assert "ExecStart=/usr/bin/certbot -q renew" in unit
    assert "ExecStopPost=/usr/local/sbin/webrtc-edge-tls" in unit
    renewal = host.file(f"/etc/letsencrypt/renewal/{PROXY}.conf").content_string
    assert re.search(r"^renew_before_expiry = 30 days$", renewal, re.MULTILINE), renewal
    assert re.search(r"^renew_hook = /usr/local/sbin/webrtc-edge-tls .* deploy$", renewal, re.MULTILINE), renewal
    assert re.search(r"^authenticator = webroot$", renewal, re.MULTILINE), renewal


def test_expiry_metric_is_the_served_certificate(host, pebble_root):
    leaf = served_certificate(pebble_root)
    text = host.file(TEXTFILE).content_string
    expected = int(leaf.not_valid_after_utc.timestamp())
    assert f'webrtc_edge_tls_certificate_expiry_timestamp_seconds{{name="{PROXY}"}} {expected}\n' in text, text


def test_timer_renews_on_the_host_and_nginx_serves_it(host, pebble_root, pebble_host):
    before = served_certificate(pebble_root)
    master = host.check_output("systemctl show -p MainPID --value nginx.service")
    started = host_now(host)

    run = host.run("systemctl start certbot.service")  # what certbot.timer does
    journal = host.check_output(f"journalctl --no-pager -o cat -u certbot.service --since @{started}")
    assert run.rc == 0, run.stderr + journal
    assert host.check_output("systemctl show -p Result --value certbot.service") == "success"

    after = wait_for_serial(pebble_root, before.serial_number)
    assert after.serial_number != before.serial_number, "no new certificate served"
    assert after.not_valid_after_utc >= before.not_valid_after_utc
    issued = re.findall(r"Issued certificate serial ([0-9a-f]+)", pebble_log(pebble_host))
    assert format(after.serial_number, "x") in {serial.lstrip("0") for serial in issued}
    # Reloaded after its check, not restarted.
    assert host.check_output("systemctl show -p MainPID --value nginx.service") == master

    samples = textfile(host)
    assert samples["webrtc_edge_tls_certificate_expiry_timestamp_seconds"] == int(after.not_valid_after_utc.timestamp())
    assert samples["webrtc_edge_tls_renewal_failed"] == 0
    assert samples["webrtc_edge_tls_renewal_last_success_timestamp_seconds"] >= started
    assert samples["webrtc_edge_tls_renewal_last_run_timestamp_seconds"] >= started


def test_failed_renewal_keeps_the_old_certificate_and_shows(host, pebble_root, pebble_host):
    """Last in this file: Pebble restarts with new roots (what the checks above trusted)."""
    before = served_certificate(pebble_root)
    last_success = textfile(host)["webrtc_edge_tls_renewal_last_success_timestamp_seconds"]
    pebble_host.run_expect([0], "systemctl stop pebble")
    try:
        started = host_now(host)
        run = host.run("systemctl start certbot.service")
        assert run.rc != 0, "certbot.service succeeded with Pebble stopped"

        assert host.run("systemctl is-failed certbot.service").stdout.strip() == "failed"
        journal = host.check_output(f"journalctl --no-pager -o cat -u certbot.service --since @{started}")
        assert f"Failed to renew certificate {PROXY} with error" in journal, journal
        assert "certbot.service: Failed with result 'exit-code'." in journal, journal

        samples = textfile(host)
        assert samples["webrtc_edge_tls_renewal_failed"] == 1
        assert samples["webrtc_edge_tls_renewal_last_run_timestamp_seconds"] >= started
        assert samples["webrtc_edge_tls_renewal_last_success_timestamp_seconds"] == last_success

        time.sleep(1)  # a reload would have shown by now
        assert served_certificate(pebble_root).serial_number == before.serial_number
    finally:
        pebble_host.run("systemctl start pebble")
        host.run("systemctl reset-failed certbot.service")
