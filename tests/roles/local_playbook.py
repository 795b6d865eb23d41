"""Run a small playbook on the controller itself, as the role-render tests do: Ansible renders a
role's templates with its real defaults, vars and filters, and the tests read the files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")


def run_local_playbook(playbook: Path, extra_vars: dict) -> None:
    """``ansible-playbook`` on localhost (local connection, this Python) with ``extra_vars``;
    fails the test with Ansible's output when the run fails."""
    extra = playbook.with_suffix(".extra.json")
    extra.write_text(json.dumps({**extra_vars, "ansible_python_interpreter": sys.executable}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_CACHE_PLUGIN="memory")
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", "-e", f"@{extra}", str(playbook)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
