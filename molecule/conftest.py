"""Fixtures shared by the testinfra suites of every Molecule scenario.

Molecule runs each scenario's ``tests/`` with ``-c molecule/pytest.ini``, which
makes this folder pytest's rootdir, so this file loads for all of them. Plain
helpers live in testinfra_helpers.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from testinfra_helpers import assert_unit_up


@pytest.fixture
def journal(host) -> Callable[..., str]:
    """Return ``read(unit, lines=50)``: the unit's latest journal lines."""

    def read(unit: str, lines: int = 50) -> str:
        return host.run(f"journalctl --no-pager -n {lines} -u {unit}").stdout

    return read


@pytest.fixture
def assert_service_up(host) -> Callable[[str], None]:
    """Return ``check(unit)``: asserts the unit is enabled and running.

    On failure it prints the unit's journal, then re-raises, so the report
    says why and not only that.
    """

    def check(unit: str) -> None:
        assert_unit_up(host, unit)

    return check


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``on_converged_hosts`` first, before any test changes the hosts; tests marked
    ``replaces_hosts`` last, so every other test sees the hosts converge made. Else file order."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("on_converged_hosts"):
            return 0
        return 2 if item.get_closest_marker("replaces_hosts") else 1

    items.sort(key=rank)
