"""apache scenario: one Debian host in every group, behind Apache.

The same deployment as default with ``proxy_server: apache``: the shared
checks (molecule/common/deployment_checks.py) and the real browser call
(molecule/common/browser_checks.py) prove Apache renders the same proxy model into the
same behaviour as nginx; below, what only this scenario promises.
"""

from __future__ import annotations

from deployment_checks import proxy_host, proxy_kind, site  # noqa: F401 (fixtures)
from testinfra_helpers import inventory_hosts

testinfra_hosts = inventory_hosts("all")


def test_deploys_apache(proxy_kind):
    assert proxy_kind == "apache"


def test_nginx_not_installed(host):
    """A fresh host behind Apache never gets nginx at all."""
    assert not host.package("nginx").is_installed


def test_extra_location_served(site):
    """An extra location from the inventory is served, with the site's security headers, and a
    line added to a built-in location reaches its answers."""
    docs = site.get("/docs/")
    assert (docs.status, docs.headers["Location"]) == (301, "https://docs.example.org/")
    assert docs.headers["Strict-Transport-Security"]
    assert docs.headers["X-Content-Type-Options"] == "nosniff"
    api = site.get("/api/ice-servers")
    assert (api.status, api.headers["X-Robots-Tag"]) == (200, "noindex")
    assert site.get("/health").headers["X-Robots-Tag"] is None


def test_site_written_from_the_replaced_template(host):
    """apache_site_template names the scenario's template: Apache runs the site it wrote."""
    site = host.file("/etc/apache2/sites-enabled/webrtc-edge.conf")
    assert site.content_string.startswith("# Written from the apache scenario's apache_site_template")
    assert "SSLCertificateFile /etc/webrtc-edge/tls/fullchain.pem" in site.content_string
