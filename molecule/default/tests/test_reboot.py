"""default scenario, last: the host reboots (``docker restart``: systemd shuts down and boots
again) and comes back with the firewall loaded exactly as before, from its unit at boot, and the
site served again. Last because a reboot moves the published ports (tests read them afresh)."""

from __future__ import annotations

import re
import subprocess
import time

from deployment_checks import Site
from testinfra_helpers import inventory_hosts

testinfra_hosts = inventory_hosts("all")

TABLE = "inet webrtc_edge"


def _table(host) -> str:
    return re.sub(r"counter packets \d+ bytes \d+", "counter", host.check_output(f"nft list table {TABLE}"))


def test_firewall_comes_back_after_a_reboot(host):
    name = host.backend.get_hostname()
    before = _table(host)
    subprocess.run(["docker", "restart", name], check=True, capture_output=True, timeout=180)
    deadline = time.monotonic() + 120
    # Until systemd answers on its bus, is-system-running prints nothing or "offline".
    while (state := host.run("systemctl is-system-running --wait").stdout.strip()) in ("", "offline", "starting"):
        assert time.monotonic() < deadline, "systemd did not finish booting"
        time.sleep(1)
    assert state == "running", host.run("systemctl --failed --no-pager").stdout
    # A new network namespace starts with no ruleset: the unit loaded the table at boot.
    assert host.service("webrtc-edge-firewall").is_running
    assert _table(host) == before
    site, deadline = Site(name), time.monotonic() + 60
    while not _serves(site):
        assert time.monotonic() < deadline, "the site is not served again after the reboot"
        time.sleep(1)


def _serves(site: Site) -> bool:
    try:
        return site.get("/health", timeout=5).status == 200
    except OSError:
        return False
