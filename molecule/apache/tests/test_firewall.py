"""apache scenario: the host firewall (molecule/firewall_checks.py) beside the apache role's own
nftables table (the per-address connection limit): both loaded, both back after nftables.service
restarts, 443 let in by ours and limited by theirs (test_hostile.py)."""

from firewall_checks import *  # noqa: F403 (collects the firewall checks)
