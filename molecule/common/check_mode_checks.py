"""Check mode on the deployed hosts (issue 12): `site.yml --check --diff` succeeds and reports
`changed=0` on every host. Group ``check_mode`` (a scenario selects it with
``--checks``: molecule/common/testinfra_plugin.py). The fresh-host half (check mode before the first deployment writes
nothing, no secret either) is molecule/default/prepare.yml.

Marked ``on_converged_hosts``: it runs first of the scenario's tests (conftest.py), on the
deployment converge and idempotence left, before other tests renew certificates or break things.
"""

from __future__ import annotations

import pytest
from testinfra_helpers import ansible_playbook, changed_per_host

pytestmark = pytest.mark.check_mode  # the group a scenario selects with --checks (testinfra_plugin.py)


@pytest.mark.on_converged_hosts
# A whole site.yml run: 45-55 s alone, up to 200 s beside another scenario's converge (make test
# runs two at a time), more than molecule/pytest.ini's 300 s on a busier machine.
@pytest.mark.timeout(900)
def test_check_mode_on_the_deployed_hosts_changes_nothing():
    output = ansible_playbook("site.yml", check=True, diff=True)
    recap = changed_per_host(output)
    assert recap, output[-3000:]
    changed = {host: n for host, n in recap.items() if n}
    assert not changed, f"check mode on the deployed hosts predicts changes: {changed}\n{output[-6000:]}"
