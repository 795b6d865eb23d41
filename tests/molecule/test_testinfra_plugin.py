"""molecule/common/testinfra_plugin.py: the ``--checks`` expression picks shared checks as ``-m`` would."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "molecule" / "common"))
from testinfra_plugin import marker_expression  # molecule/common is a folder on sys.path, not a package

# The scenarios' own expressions (molecule/*/molecule.yml) and -m's precedence: not, and, or.
CASES = [
    ("deployment", {"deployment"}, True),
    ("deployment", {"firewall"}, False),
    ("firewall and not reachability", {"firewall"}, True),
    ("firewall and not reachability", {"firewall", "reachability"}, False),
    ("hardening and not redis_restarts or hostile", {"hostile", "redis_restarts"}, True),
    ("hardening and not redis_restarts or hostile", {"hardening", "redis_restarts"}, False),
    ("sandbox and not switches_sandbox or ws_conformance", {"sandbox"}, True),
    ("sandbox and not switches_sandbox or ws_conformance", {"sandbox", "switches_sandbox"}, False),
    ("not (a or b)", {"c"}, True),
    ("not (a or b)", {"b"}, False),
    ("not a and b", {"b"}, True),  # (not a) and b
    ("a or b and c", {"a"}, True),  # a or (b and c)
    ("(a or b) and c", {"a"}, False),
]


@pytest.mark.parametrize(("expression", "marks", "expected"), CASES)
def test_matches_as_dash_m_does(expression, marks, expected):
    selects, _ = marker_expression(expression)
    assert selects(marks) is expected


def test_names_the_markers_it_uses():
    _, names = marker_expression("check_mode or hardening and not redis_restarts")
    assert names == {"check_mode", "hardening", "redis_restarts"}


@pytest.mark.parametrize("expression", ["a +", "a == b", "f(a)", "a.b", "a if b else c", "1", "a; b"])
def test_other_syntax_is_a_usage_error(expression):
    with pytest.raises(pytest.UsageError, match="--checks"):
        marker_expression(expression)
