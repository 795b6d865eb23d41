"""local scenario: after each `make deploy` the proxy it asked for (nginx, then Apache), coturn and
Redis (or Valkey, whichever the redis role chose) run in their sandboxes, rated within the issue's
targets (molecule/common/sandbox_checks.py).
"""

from __future__ import annotations

import pytest
from deployment_checks import SERVICE, proxy_host  # noqa: F401 (fixture)
from sandbox_checks import assert_in_force, assert_within_target
from test_local import proxy_kind  # noqa: F401 (fixture: the proxy the last deploy asked for)
from testinfra_helpers import redis_flavour


def test_proxy_in_its_sandbox(proxy_host, proxy_kind):
    unit = f"{SERVICE[proxy_kind]}.service"
    assert_within_target(proxy_host, unit)
    assert_in_force(proxy_host, unit)


@pytest.mark.parametrize("backend", ["coturn", "redis"])
def test_backend_in_its_sandbox(proxy_host, backend):
    unit = redis_flavour(proxy_host)["unit"] if backend == "redis" else "coturn.service"
    assert_within_target(proxy_host, unit)
    assert_in_force(proxy_host, unit)
