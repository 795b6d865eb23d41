"""resilience verify: the host firewall is loaded on every host and survives nftables.service
restarts (molecule/firewall_checks.py); who reaches what is the cluster scenario's part (the same
hosts and rules). The controller is let in to the app instances by a test-only firewall_allow
entry (molecule.yml): test_resilience.py reads their /health directly."""

from firewall_checks import test_firewall_loaded, test_firewall_survives_nftables_restart_and_reload  # noqa: F401
