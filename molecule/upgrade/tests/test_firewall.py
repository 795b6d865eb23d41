"""upgrade scenario: the host firewall (molecule/firewall_checks.py) as the first deploy left it;
test_upgrade.py then runs site.yml again (new release, rollback, nginx -> Apache) through it."""

from firewall_checks import *  # noqa: F403 (collects the firewall checks)
