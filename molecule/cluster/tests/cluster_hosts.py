"""Helpers of the cluster verify: the app instances of the scenario's hosts."""

from __future__ import annotations

from testinfra_helpers import inventory_host, inventory_hosts


def instance_units(host) -> list[str]:
    """The host's ``signaling@PORT`` units, loaded or not."""
    out = host.check_output(
        "systemctl list-units --all --plain --no-legend --type=service 'signaling@*' | cut -d' ' -f1"
    )
    return sorted(out.split())


def instance_port(unit: str) -> int:
    """``signaling@8081.service`` -> 8081."""
    return int(unit.removeprefix("signaling@").removesuffix(".service"))


def app_instances() -> dict[str, list[int]]:
    """App host name -> the ports of its instances, in inventory order (app1, app2)."""
    return {
        name: [instance_port(unit) for unit in instance_units(inventory_host(name))]
        for name in inventory_hosts("signaling_app")
    }
