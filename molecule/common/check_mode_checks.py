"""Check mode on the deployed hosts (issue 12): `site.yml --check --diff` succeeds and reports
`changed=0` on every host. Group ``check_mode`` (a scenario selects it with
``--checks``: molecule/common/testinfra_plugin.py). The fresh-host half (check mode before the first deployment writes
nothing, no secret either) is molecule/default/prepare.yml.

Marked ``on_converged_hosts``: it runs first of the scenario's tests (conftest.py), on the
deployment converge and idempotence left, before other tests renew certificates or break things.
"""

from __future__ import annotations

import re

import pytest
from sandbox_checks import run_playbook

pytestmark = pytest.mark.check_mode  # the group a scenario selects with --checks (testinfra_plugin.py)


@pytest.mark.on_converged_hosts
def test_check_mode_on_the_deployed_hosts_changes_nothing():
    output = run_playbook("site.yml", check=True, diff=True)
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", output, re.M)
    assert recap, output[-3000:]
    changed = {host: int(n) for host, n in recap if int(n)}
    assert not changed, f"check mode on the deployed hosts predicts changes: {changed}\n{output[-6000:]}"
