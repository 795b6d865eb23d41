"""default scenario: the host firewall (molecule/firewall_checks.py) on the one host, seen from
the controller: 80, 443, TURN and its relay range open to it; SSH, the app instances, Redis and
everything else dropped. That it comes back after a reboot is test_reboot.py's part."""

from firewall_checks import *  # noqa: F403 (collects the firewall checks)
