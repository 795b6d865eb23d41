"""Every PromQL expression of the Grafana dashboard, ready to send to Prometheus.

    python3 monitoring/grafana/expressions.py [DASHBOARD.json]    # one per line

Grafana's interval variables are replaced by a fixed range (``$__rate_interval`` ->
``1m``), so each expression runs as Grafana would run it. The unit tests
(tests/monitoring/) parse each with promtool; the Molecule verify
(molecule/common/monitoring_checks.py) evaluates each on a Prometheus scraping a deployed host.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent / "webrtc-edge.json"
# Grafana's built-in interval variables and what the tests put in their place.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def panel_targets(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, raw expr) of every query target, rows' nested panels included."""
    found = []
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            found.extend((inner.get("title", ""), t["expr"]) for t in inner.get("targets", []) if "expr" in t)
    return found


def expressions(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, expression with Grafana's variables replaced) for the dashboard at ``path``."""
    result = []
    for title, expr in panel_targets(json.loads(path.read_text())):
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        result.append((title, expr))
    return result


if __name__ == "__main__":
    for _, expr in expressions(Path(sys.argv[1]) if len(sys.argv) > 1 else DASHBOARD):
        print(expr)
