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


def run_local_playbook(playbook: Path, extra_vars: dict, *, may_fail: bool = False) -> subprocess.CompletedProcess:
    """``ansible-playbook`` on localhost (local connection, this Python) with ``extra_vars``;
    fails the test with Ansible's output when the run fails, unless ``may_fail``."""
    extra = playbook.with_suffix(".extra.json")
    extra.write_text(json.dumps({**extra_vars, "ansible_python_interpreter": sys.executable}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_CACHE_PLUGIN="memory")
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", "-e", f"@{extra}", str(playbook)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert may_fail or proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def role_vars_files(role: Path) -> list[Path]:
    """A role's ``defaults/main.yml`` then ``vars/main.yml``, in the order Ansible layers them."""
    return [role / "defaults" / "main.yml", role / "vars" / "main.yml"]


def render_templates(out: Path, templates: list[Path], vars_files: list[Path], *,
                     variants: dict[str, dict] | None = None, extra_vars: dict | None = None) -> None:
    """Render each template (``.../templates/NAME.j2``) into ``out/NAME``, with ``vars_files`` in
    order (later files win) and ``extra_vars`` above all, in one ``ansible-playbook`` run.

    With ``variants`` (name -> values), once per variant into ``out/<variant>-NAME``, each with its
    values layered after ``vars_files``."""
    plays = []
    for name, values in (variants or {"": {}}).items():
        values_file = out / f"{name or 'render'}.values.json"
        values_file.write_text(json.dumps(values))
        plays.append({
            "name": f"Render {name or 'the templates'}",
            "hosts": "localhost",
            "gather_facts": False,
            "vars_files": [str(f) for f in [*vars_files, values_file]],
            "tasks": [{
                "ansible.builtin.template": {
                    "src": "{{ item }}",
                    "dest": f"{out}/{name + '-' if name else ''}" + "{{ item | basename | splitext | first }}",
                    "mode": "0600",
                },
                "loop": [str(t) for t in templates],
            }],
        })
    playbook = out / f"render-{len(list(out.glob('render-*.yml')))}.yml"
    playbook.write_text(json.dumps(plays))
    run_local_playbook(playbook, extra_vars or {})
