"""The proxy model's smallest input, for the filter tests (tests/conftest.py makes the
collection's Python importable)."""

import copy

import pytest

#: The smallest valid input: everything else falls back to the filter's defaults (the proxy
#: role's), but for tls.crl: no CRL, as with a certificate from an ACME CA, which publishes its
#: own. The default serves the local CA's (the tls role's default, tls_source self_signed).
MINIMAL_SPEC = {
    "server_names": ["signal.example.org", "localhost"],
    "upstreams": [{"address": "127.0.0.1", "port": 8081}],
    "tls": {"openssl_version": "OpenSSL 3.0.11 19 Sep 2023", "crl": ""},
}


@pytest.fixture
def spec():
    """A fresh copy of the minimal input, safe to mutate."""
    return copy.deepcopy(MINIMAL_SPEC)
