"""Reading the app's dependency locks (app/locks/*.txt, written by app/locks/update.sh).

Importable from the tests in this folder as ``from lock_helpers import ...``.
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.utils import canonicalize_name

LOCKS = Path(__file__).resolve().parents[2] / "app" / "locks"


def read_lock(path: Path) -> dict[str, tuple[str, set[str]]]:
    """``{canonical name: (version, {sha256 hex, ...})}`` of every pin in a lock file.

    A lock holds only ``name==version`` lines, each with its ``--hash`` options on
    backslash-continued lines; anything else (a marker, a range, an option line)
    fails here.
    """
    pins: dict[str, tuple[str, set[str]]] = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", requirement)
        assert match, f"{path.name}: not an exact pin: {line!r}"
        assert options and all(o.startswith("--hash=sha256:") for o in options), f"{path.name}: {line!r}"
        pins[canonicalize_name(match[1])] = (match[2], {o.removeprefix("--hash=sha256:") for o in options})
    return pins


def lock_header(path: Path) -> dict[str, str]:
    """The ``# python:``, ``# glibc:`` and ``# arches:`` lines the role reads."""
    return dict(re.findall(r"(?m)^# (python|glibc|arches): (.+)$", path.read_text()))
