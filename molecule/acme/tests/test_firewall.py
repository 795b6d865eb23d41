"""acme scenario: the host firewall (molecule/firewall_checks.py) on the deployed host, seen from
the controller and from the Pebble host (outside the deployment): port 80 open to Pebble's HTTP-01
validation, SSH, the app instances and Redis dropped."""

from firewall_checks import *  # noqa: F403 (collects the firewall checks)
