"""local scenario: the README's quick start on a fresh Debian machine (issue 3, "Done when").

The deploys ran *inside* the test host, from a copy of this working tree, by
exactly the README's commands (converge.yml, side_effect.yml): ``make deploy``
and, later, ``make deploy PROXY=apache``. That each second run reports
changed=0 is checked where the runs happen (Molecule's idempotence step,
side_effect.yml). This suite runs after each deploy, expecting the proxy that
deploy asked for (recorded by tasks/make_deploy.yml), and proves:

- ``https://localhost/`` (the host's 443, published on 127.0.0.1) serves the
  browser client, the very ``index.html`` of the clone, over a certificate
  that the CA the README tells users to trust (``/etc/webrtc-edge/tls/ca.pem``)
  verifies, and the answer comes from the expected proxy;
- ``wss://localhost/ws`` answers with ``welcome``;
- everything is installed and running on that one machine: the proxy (its
  config valid), one app instance per CPU, Redis, coturn, a clean boot;
- the other proxy is neither running nor enabled: absent after the nginx
  deploy, left stopped and disabled by the switch to Apache;
- http redirects to https and the security headers are there (the deploy
  gives the same site as the role-level scenarios).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from deployment_checks import (  # noqa: F401 (fixtures and checks collected here)
    Site,
    app_host,
    app_ports,
    proxy_host,
    redis_host,
    test_app_instances_running,
    test_boot_is_clean,
    test_http_redirects_to_https,
    test_other_proxy_not_running,
    test_proxy_config_passes_its_validator,
    test_proxy_enabled_and_running,
    test_redis_running,
    test_security_headers,
    test_turn_running,
    test_websocket_upgrade_and_welcome,
)
from testinfra_helpers import inventory_hosts, run_ca_file

testinfra_hosts = inventory_hosts("all")

# The CA the README tells users to trust, on the machine deployed.
HOST_CA = "/etc/webrtc-edge/tls/ca.pem"
# Where prepare.yml put the clone the deploys ran from (molecule.yml: local_repo_dir).
CLONE = "/root/webrtc-edge"
CLIENT_PAGE = f"{CLONE}/app/src/signaling/static/index.html"


@pytest.fixture(scope="module")
def proxy_kind() -> str:
    """The proxy the last deploy asked for: ``nginx`` after ``make deploy``,
    ``apache`` after ``make deploy PROXY=apache``."""
    marker = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "local" / "deployed_proxy"
    return marker.read_text().strip()


@pytest.fixture(scope="module")
def site(proxy_host) -> Site:
    """The site at the host's published 80/443, trusting only the host's CA.

    Ansible ran on the host, so the run's CA is the one the deploy made there;
    it is copied to where the shared checks look for the run's trust anchor.
    """
    ca = run_ca_file()
    ca.parent.mkdir(parents=True, exist_ok=True)
    ca.write_text(proxy_host.file(HOST_CA).content_string)
    return Site(proxy_host.backend.get_hostname())


def test_https_localhost_serves_the_client(site, proxy_host):
    answer = site.get("/")
    assert answer.status == 200
    assert answer.headers.get_content_type() == "text/html"
    assert answer.body.decode() == proxy_host.file(CLIENT_PAGE).content_string


def test_answered_by_the_deployed_proxy(site, proxy_kind):
    server = site.get("/").headers["Server"] or ""
    assert server.lower().startswith(proxy_kind), server
