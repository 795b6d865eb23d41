"""apache scenario: the host is also the `monitoring` host (role monitoring, Prometheus).

Checks: molecule/monitoring_checks.py.
"""

from __future__ import annotations

from monitoring_checks import *  # noqa: F403 (collects the monitoring checks)
from testinfra_helpers import inventory_hosts

testinfra_hosts = inventory_hosts("all")
