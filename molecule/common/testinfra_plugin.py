"""The pytest plugin of the testinfra suites of every Molecule scenario: fixtures they share,
which shared checks a scenario runs, and in what order everything runs.

molecule/conftest.py loads it (``pytest_plugins``); Molecule runs each scenario's ``tests/`` with
``-c molecule/pytest.ini``, which puts this folder on ``sys.path``. Plain helpers live in
testinfra_helpers.py.

Shared checks
    ``molecule/common/*_checks.py``, collected in every scenario (``additional_files_or_dirs``
    in .config/molecule/config.yml). Each is marked with its group(s) (molecule/pytest.ini
    lists them); a scenario runs those whose marks match its ``--checks`` expression (its
    molecule.yml, ``verifier.options.checks``; ``-m`` syntax), no other: a test added to a
    shared module runs wherever its group is selected. Without ``--checks``, none runs. The
    scenario's own ``tests/test_*.py`` always run.
Order
    Molecule passes the shared folder before the scenario's tests (it sorts the paths), so the
    shared checks run first, module by module; then ``on_converged_hosts`` before everything
    else, ``changes_deployment`` after it, and ``replaces_hosts`` last.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression
from testinfra_helpers import assert_unit_up

SHARED = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--checks", default="", metavar="EXPR",
        help="run the shared checks (molecule/common/) whose markers match EXPR, as -m does "
             "(e.g. 'deployment or firewall and not reachability'); none without it")


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


def _shared(item: pytest.Item) -> bool:
    return item.path.parent == SHARED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Shared checks whose markers do not match ``--checks`` deselected. Then tests marked
    ``on_converged_hosts`` first, before any test changes the hosts; then the unmarked ones;
    then ``changes_deployment`` (what they leave behind would fail the others: a certificate
    renewed by playbooks/tls.yml alone is not yet coturn's); ``replaces_hosts`` last, so every
    other test sees the hosts converge made. Else file order."""
    expression = config.getoption("checks").strip()
    selects = Expression.compile(expression) if expression else None
    known = {line.split(":")[0].strip() for line in config.getini("markers")}
    if unknown := set(re.findall(r"\w+", expression)) - {"and", "or", "not"} - known:
        raise pytest.UsageError(f"--checks names no group of molecule/pytest.ini: {sorted(unknown)}")

    def selected(item: pytest.Item) -> bool:
        if not _shared(item):
            return True
        marks = {mark.name for mark in item.iter_markers()}
        return selects is not None and selects.evaluate(lambda name, /, **kwargs: not kwargs and name in marks)

    deselected = [item for item in items if not selected(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if selected(item)]

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("on_converged_hosts"):
            return 0
        if item.get_closest_marker("replaces_hosts"):
            return 3
        return 2 if item.get_closest_marker("changes_deployment") else 1

    items.sort(key=rank)
