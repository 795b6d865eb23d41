"""Print the figures the Molecule runs left in molecule/artifacts/: what issue 5 asks to see at the end.

Each run keeps them in a folder of its own, named by its label ``<scenario>[-<proxy>]-<release>``
(tests/tools/run-scenario.sh); each row names the run and the Debian release it ran on:

* ``<label>/testssl.json``: testssl.sh's grade of that deployment's TLS and
  its findings rated HIGH or CRITICAL;
* ``<label>/flood.json``: quiet peers' median round trips before and
  during a flood (hostile checks);
* ``<label>/ws_memory.json``: the app instances' peak resident set during
  the RFC 6455 suite's fragment and ping floods through the proxy, and how the
  floods were closed (ws_conformance_checks.py);
* ``<label>/resilience-<proxy>.json``: the resilience scenario's messages sent,
  delivered, lost and duplicated, resumes and the longest time a peer could
  not send.

    .venv/bin/python tests/tools/report.py     # `make test` and `make resilience` end with it

Only reads; exits 0 whatever it finds (the tests that wrote the files judged them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "molecule" / "artifacts"
# The releases molecule/image/build.sh builds test hosts of: the last part of a run's label.
RELEASES = ("bookworm", "trixie")


def _artifacts(pattern: str) -> list[tuple[Path, object]]:
    """Every artefact matching ``pattern`` under ARTIFACTS, in name order, with its JSON."""
    return [(path, json.loads(path.read_text())) for path in sorted(ARTIFACTS.glob(pattern))]


def _run(path: Path) -> str:
    """The run an artefact comes from, as a row's first columns: its label without the
    release, then the release ("?" for a folder named before labels had one)."""
    label = path.parent.name
    name, _, release = label.rpartition("-")
    if release not in RELEASES:
        name, release = label, "?"
    return f"{name:<18} {release:<8}"


def testssl_rows() -> list[str]:
    rows = []
    for path, findings in _artifacts("*/testssl.json"):
        by_id = {f["id"]: f for f in findings}
        grade = by_id.get("overall_grade", {}).get("finding", "?")
        severe = sorted(f["id"] for f in findings if f.get("severity") in ("HIGH", "CRITICAL"))
        rows.append(f"  {_run(path)} grade {grade:<3} HIGH/CRITICAL: {', '.join(severe) or 'none'}"
                    f"  ({path.relative_to(ARTIFACTS.parent.parent)})")
    return rows


def flood_rows() -> list[str]:
    rows = []
    for path, run in _artifacts("*/flood.json"):
        last = run["attempts"][-1]
        pairs = ", ".join(f"{a} -> {b} ms" for a, b in zip(last["before_ms"], last["during_ms"], strict=True))
        worst = max(b / a for a, b in zip(last["before_ms"], last["during_ms"], strict=True))
        rows.append(f"  {_run(path)} {pairs} (x{worst:.2f} at worst; attempt {len(run['attempts'])},"
                    f" {run['floods']} floods closed with {run['closes']})")
    return rows


def ws_memory_rows() -> list[str]:
    rows = []
    for path, run in _artifacts("*/ws_memory.json"):
        for name, case in run["cases"].items():
            growth = max(case["peak_growth_kib"].values())
            rows.append(f"  {_run(path)} {name}: closed {case['close']} after {case['units_sent']:,} frames"
                        f" sent, peak RSS +{growth} KiB (bound {run['bound_kib']} KiB)")
    return rows


def resilience_rows() -> list[str]:
    rows = []
    for path, run in _artifacts("*/resilience*.json"):
        r = run["report"]
        rows.append(
            f"  {_run(path)} {run['proxy']:<7} {r['peers']} peers ({r['polling_peers']} polling), {r['seconds']} s:"
            f" sent {r['sent']}, delivered {r['delivered']}, lost {r['lost']}, duplicated {r['duplicated']},"
            f" out of order {r['out_of_order']}, resumes {r['resumes']}, resends {r['resends']},"
            f" longest outage {r['longest_outage_s']} s, longest unable to send {r['longest_unable_to_send_s']} s,"
            f" not back in room {r['not_back_in_room']}, problems {len(run['problems'])}")
    return rows


def main() -> int:
    sections = [("TLS graded by testssl.sh", testssl_rows()),
                ("Quiet peers' median round trip before -> during a flood", flood_rows()),
                ("App memory under WebSocket fragment and ping floods", ws_memory_rows()),
                ("Faults under load (resilience)", resilience_rows())]
    for title, rows in sections:
        print(f"{title}:")
        print("\n".join(rows) if rows else "  (no figures: the scenario did not run here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
