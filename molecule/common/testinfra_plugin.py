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

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
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


def marker_expression(expression: str) -> tuple[Callable[[set[str]], bool], set[str]]:
    """``-m``'s grammar (marker names, ``and``, ``or``, ``not``, parentheses): a predicate on a
    test's marker names, and the names the expression uses.

    Python's parser reads it (its precedence for these is ``-m``'s: not, and, or); any other
    syntax is a usage error. pytest's own parser is private (``_pytest.mark.expression``).
    """
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError as error:
        raise pytest.UsageError(f"--checks {expression!r}: {error.msg}") from None

    def evaluate(node: ast.expr, marks: set[str]) -> bool:
        if isinstance(node, ast.Name):
            return node.id in marks
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not evaluate(node.operand, marks)
        if isinstance(node, ast.BoolOp):
            results = (evaluate(value, marks) for value in node.values)
            return all(results) if isinstance(node.op, ast.And) else any(results)
        raise pytest.UsageError(f"--checks {expression!r}: {ast.unparse(node)!r} is not a marker name, "
                                "and, or, not or parentheses")

    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    evaluate(tree, set())  # refuses other syntax now, not at the first test
    return (lambda marks: evaluate(tree, marks)), names


def _shared(item: pytest.Item) -> bool:
    return item.path.parent == SHARED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Shared checks whose markers do not match ``--checks`` deselected. Then tests marked
    ``on_converged_hosts`` first, before any test changes the hosts; then the unmarked ones;
    then ``changes_deployment`` (what they leave behind would fail the others: a certificate
    renewed by playbooks/tls.yml alone is not yet coturn's); ``replaces_hosts`` last, so every
    other test sees the hosts converge made. Else file order."""
    expression = config.getoption("checks").strip()
    selects, names = marker_expression(expression) if expression else (None, set())
    known = {line.split(":")[0].strip() for line in config.getini("markers")}
    if unknown := names - known:
        raise pytest.UsageError(f"--checks names no group of molecule/pytest.ini: {sorted(unknown)}")

    def selected(item: pytest.Item) -> bool:
        if not _shared(item):
            return True
        return selects is not None and selects({mark.name for mark in item.iter_markers()})

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
