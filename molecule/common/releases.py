"""Releases of the app for verify steps that deploy one themselves.

The ``upgrade`` and ``resilience`` scenarios roll out a real new release of
the app under live peers: a copy of app/ whose pyproject.toml says the next
patch version (so a new wheel, wheelhouse and release directory), deployed
by ansible-playbook with the scenario's own inventory. Importable from any
``molecule/<scenario>/tests/test_*.py`` as ``from releases import ...``
(``pythonpath`` in molecule/pytest.ini); call it only under Molecule, which
sets the ``MOLECULE_*`` variables read here.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tomllib
from pathlib import Path

from packaging.version import Version
from testinfra_helpers import ansible_playbook

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])


def release_n() -> str:
    """Version of app/ as it is: what converge deployed."""
    with open(PROJECT / "app" / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def bumped(version: str) -> str:
    """The next patch release: 1.0.0 -> 1.0.1."""
    *head, last = Version(version).release
    return ".".join(map(str, [*head, last + 1]))


def app_copy(dest: Path, version: str) -> Path:
    """Copy app/ to ``dest`` (replacing it) with ``version`` in its pyproject.toml; return ``dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(PROJECT / "app", dest,
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build", "dist", ".pytest_cache"))
    pyproject = dest / "pyproject.toml"
    text, count = re.subn(r'(?m)^version\s*=\s*"[^"]+"', f'version = "{version}"', pyproject.read_text())
    assert count == 1, f"no version line in {pyproject}"
    pyproject.write_text(text)
    return dest


async def run_playbook(playbook: str, log: Path, *extra: str) -> None:
    """``ansible_playbook`` (testinfra_helpers) off the event loop, its whole output in ``log``:
    for verify steps that keep peers talking while a playbook runs."""
    await asyncio.to_thread(ansible_playbook, playbook, *extra, log=log)
