"""site.yml's tags: `--tags X` runs exactly X's part, and what it needs.

Read from `ansible-playbook --list-tasks --tags X` (no host is contacted): every task the tag
selects, with its play, its role and its tags. The tasks tagged `always` (the preflight and the
facts plays, the roles' argument checks) run for every tag; of the others, a tag runs every task
of its roles (the same tasks as a run without --tags) and no task of another role, apart from
the roles its own roles import (proxy and systemd_hardening).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
INVENTORY = ROOT / "inventories" / "example"

# The fixed tags of issue 12 and the roles each one runs.
TAG_ROLES = {
    "app": {"signaling_app"},
    "proxy": {"nginx", "apache"},
    "nginx": {"nginx"},
    "apache": {"apache"},
    "tls": {"tls"},
    "redis": {"redis"},
    "turn": {"coturn"},
    "firewall": {"firewall"},
    "monitoring": {"exporters", "monitoring"},
}
# Roles a role imports in its tasks/main.yml: they run under the importing role's tag.
IMPORTED = {
    "nginx": {"proxy", "systemd_hardening"},
    "apache": {"proxy", "systemd_hardening"},
    "redis": {"systemd_hardening"},
    "coturn": {"systemd_hardening"},
}

PLAY = re.compile(r"^  play #\d+ \((?P<hosts>[^)]*)\): (?P<name>.*)\tTAGS: \[(?P<tags>.*)\]$")
TASK = re.compile(r"^      (?:(?P<role>[a-z_]+) : )?(?P<name>.*)\tTAGS: \[(?P<tags>.*)\]$")


@functools.cache
def list_tasks(*tags: str) -> list[dict]:
    """Every task `ansible-playbook site.yml --list-tasks [--tags ...]` lists, in order."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(INVENTORY), "site.yml", "--list-tasks"]
    if tags:
        argv += ["--tags", ",".join(tags)]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tasks, play = [], None
    for line in proc.stdout.splitlines():
        if m := PLAY.match(line):
            play = m["name"]
        elif (m := TASK.match(line)) and play is not None:
            tasks.append({"play": play, "role": m["role"], "name": m["name"],
                          "tags": {t.strip() for t in m["tags"].split(",") if t.strip()}})
    return tasks


@pytest.fixture(scope="module")
def everything() -> list[dict]:
    tasks = list_tasks()
    assert len(tasks) > 100, "site.yml --list-tasks listed almost nothing"
    return tasks


def _key(task: dict) -> tuple:
    return task["play"], task["role"], task["name"]


def _own(tasks: list[dict]) -> list[dict]:
    """The tasks that run for this tag only (not those tagged always)."""
    return [t for t in tasks if "always" not in t["tags"]]


def _present(roles: set[str]) -> set[str]:
    return {r for r in roles if (ROOT / "roles" / r).is_dir()}


@pytest.mark.parametrize("tag", sorted(TAG_ROLES))
def test_tag_runs_its_roles_and_no_other(tag, everything):
    roles = _present(TAG_ROLES[tag])
    if not roles:
        pytest.skip(f"no role of tag {tag} ({', '.join(sorted(TAG_ROLES[tag]))}) in this tree")
    selected = _own(list_tasks(tag))
    allowed = roles | set().union(*(IMPORTED.get(r, set()) for r in roles))
    strangers = sorted({f"{t['role']} : {t['name']}" for t in selected if t["role"] and t["role"] not in allowed})
    assert not strangers, f"--tags {tag} runs tasks of other roles: {strangers}"
    for role in roles:
        expected = Counter(_key(t) for t in _own(everything) if t["role"] == role)
        assert expected, f"role {role} lists no task in site.yml"
        got = Counter(_key(t) for t in selected if t["role"] == role)
        missing = sorted(name for (_, _, name) in (expected - got).elements())
        assert not missing, f"--tags {tag} leaves out tasks of role {role}: {missing}"


def test_nginx_and_apache_tags_exclude_each_other():
    nginx = {t["role"] for t in _own(list_tasks("nginx"))}
    apache = {t["role"] for t in _own(list_tasks("apache"))}
    assert "nginx" in nginx and "apache" not in nginx
    assert "apache" in apache and "nginx" not in apache


@pytest.mark.parametrize("tag", sorted(TAG_ROLES))
def test_always_steps_run_with_every_tag(tag, everything):
    """The preflight (inventory checks, shared facts) and the facts plays run whatever the tag."""
    always = Counter(_key(t) for t in everything if "always" in t["tags"])
    got = Counter(_key(t) for t in list_tasks(tag) if "always" in t["tags"])
    assert always == got
    assert any(play.startswith("Preflight") for play, _, _ in always)


def test_tls_tag_issues_acme_certificates_through_the_proxy():
    """With tls_source acme the certificate is ordered in the proxy play: part of the tls tag."""
    names = [t["name"] for t in _own(list_tasks("tls")) if t["role"] is None]
    assert any(n.startswith("Issue or renew the ACME certificate") for n in names), names
    assert not any(n.startswith("Issue or renew the ACME") for n in
                   (t["name"] for t in _own(list_tasks("nginx"))))
