"""apache scenario: one Debian 12 host in every group, behind Apache.

The same deployment as default with ``proxy_server: apache``: the shared
checks (molecule/common/deployment_checks.py) and the real browser call
(molecule/common/browser_checks.py) prove Apache renders the same proxy model into the
same behaviour as nginx; below, what only this scenario promises.
"""

from __future__ import annotations

from deployment_checks import proxy_host, proxy_kind  # noqa: F401 (fixtures)
from testinfra_helpers import inventory_hosts

testinfra_hosts = inventory_hosts("all")


def test_deploys_apache(proxy_kind):
    assert proxy_kind == "apache"


def test_nginx_not_installed(host):
    """A fresh host behind Apache never gets nginx at all."""
    assert not host.package("nginx").is_installed

