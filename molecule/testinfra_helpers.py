"""Helpers for the testinfra suites of every Molecule scenario.

Importable from any ``molecule/<scenario>/tests/test_*.py`` as
``from testinfra_helpers import ...`` (``pythonpath`` in molecule/pytest.ini).

Tests reach the test hosts only through ports published on 127.0.0.1
(``published_port``) or the containers' own addresses (``container_address``).
"""

from __future__ import annotations

import json
import os
import subprocess

import testinfra.utils.ansible_runner


def inventory_hosts(pattern: str = "all") -> list[str]:
    """Names of the scenario's hosts matching ``pattern``, for ``testinfra_hosts``.

    At module level: ``testinfra_hosts = inventory_hosts("proxy")``.
    """
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.utils.ansible_runner.AnsibleRunner(inventory).get_hosts(pattern)


def _inspect(container: str) -> dict:
    out = subprocess.run(
        ["docker", "container", "inspect", container],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)[0]


def published_port(container: str, port: int, proto: str = "tcp") -> int:
    """The port on 127.0.0.1 where ``container`` publishes ``port``.

    Platforms publish as ``127.0.0.1::PORT``: Docker picks the host port, so
    runs never collide with each other or with the machine's own services.
    """
    bindings = _inspect(container)["NetworkSettings"]["Ports"].get(f"{port}/{proto}")
    loopback = [b for b in bindings or [] if b["HostIp"] == "127.0.0.1"]
    if not loopback:
        raise LookupError(
            f"{container} does not publish {port}/{proto} on 127.0.0.1: {bindings}"
        )
    return int(loopback[0]["HostPort"])


def container_address(container: str) -> str:
    """The IPv4 address of ``container`` on its (first) network."""
    networks = _inspect(container)["NetworkSettings"]["Networks"]
    return next(n["IPAddress"] for n in networks.values() if n["IPAddress"])
