"""Every task that handles a secret is ``no_log``, so no secret reaches Ansible's output.

What a secret is comes from the roles themselves: each variable an argument spec marks
``no_log: true`` (the Redis password, the TURN secret, the app's Redis URL and TURN
secret, a provided TLS key), plus everything built from one: role defaults and vars whose
value names a secret (``__signaling_app_settings``) and facts a ``set_fact`` fills from
one (``redis_url``), up to a fixed point. A new secret variable is covered as soon as its
spec says ``no_log``.

A task handles a secret when a Jinja expression in any of its arguments (module
arguments, task ``vars``, ``loop``, ``environment``, labels...) uses one, or when it
renders a template that does. Conditions (``when``, ``changed_when``, ``failed_when``,
``until`` and an assert's ``that``) are exempt: Ansible reports them as expressions, never
their values. A ``no_log`` on an enclosing block covers the tasks inside it. And no task
may carry a secret in ``environment`` at all: with become, sudo logs it to the host's
journal, ``no_log`` or not.

Scanned: every task and handler file of every role, the playbooks' task files
(playbooks/tasks/, the wiring), every playbook and site.yml.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES_DIR = ROOT / "roles"

# Task keys whose values Ansible evaluates to a boolean or never prints.
EXEMPT_KEYS = {"name", "when", "changed_when", "failed_when", "until", "tags", "no_log",
               "register", "notify", "listen", "block", "rescue", "always"}
ASSERT_MODULES = {"assert", "ansible.builtin.assert"}
TEMPLATE_MODULES = {"template", "ansible.builtin.template"}
SET_FACT_MODULES = {"set_fact", "ansible.builtin.set_fact"}
PLAY_TASK_KEYS = ("pre_tasks", "tasks", "post_tasks", "handlers")


class _Loader(yaml.SafeLoader):
    """Safe loader that accepts Ansible's tags (!vault, !unsafe) as plain scalars."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node))


def _load(path: Path):
    return yaml.load(path.read_text(), Loader=_Loader) if path.is_file() else None


def _strings(value) -> Iterator[str]:
    """Every string inside ``value`` (keys and values of nested dicts and lists)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)


def _names_any(value, names: set[str]) -> set[str]:
    """The names among ``names`` that the Jinja expressions in ``value`` use.

    Only ``{{ ... }}`` and ``{% ... %}`` count: a message saying "tls_private_key is
    missing" names the variable without printing it.
    """
    text = "\n".join(m for s in _strings(value) for m in JINJA.findall(s))
    return {n for n in names if re.search(rf"\b{re.escape(n)}\b", text)}


@dataclass(frozen=True)
class Task:
    """One task (or handler) as written, with where it is and whether a block hides it."""

    file: Path
    data: dict
    no_log_inherited: bool

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}: {self.data.get('name', '<unnamed>')}"

    @property
    def no_log(self) -> bool:
        return self.no_log_inherited or self.data.get("no_log") is True

    @property
    def role_dir(self) -> Path | None:
        rel = self.file.relative_to(ROOT).parts
        return ROLES_DIR / rel[1] if rel[0] == "roles" else None

    def module(self) -> tuple[str, object]:
        """The task's module name and arguments (the first key that is not a keyword)."""
        for key, value in self.data.items():
            if key not in EXEMPT_KEYS and key not in TASK_KEYWORDS:
                return key, value
        return "", None

    def arguments(self) -> dict:
        """Everything Ansible may print: the task minus its conditions and bookkeeping."""
        args = {k: v for k, v in self.data.items() if k not in EXEMPT_KEYS}
        module, margs = self.module()
        if module in ASSERT_MODULES and isinstance(margs, dict):
            args[module] = {k: v for k, v in margs.items() if k != "that"}
        return args

    def template_text(self) -> str:
        """The source of the template a template task renders ('' for other tasks)."""
        module, margs = self.module()
        if module not in TEMPLATE_MODULES:
            return ""
        src = margs.get("src", "") if isinstance(margs, dict) else ""
        base = self.role_dir / "templates" if self.role_dir else self.file.parent / "templates"
        path = base / src
        return path.read_text() if path.is_file() else ""


# Task keywords that are not the module (a task's module is its one other key).
TASK_KEYWORDS = {"vars", "loop", "loop_control", "with_items", "with_dict", "environment", "become",
                 "become_user", "delegate_to", "run_once", "check_mode", "diff", "retries", "delay",
                 "ignore_errors", "args", "throttle", "any_errors_fatal", "delegate_facts"}


def _walk(file: Path, tasks, inherited: bool = False) -> Iterator[Task]:
    for data in tasks or []:
        if not isinstance(data, dict):
            continue
        no_log = inherited or data.get("no_log") is True
        if any(k in data for k in ("block", "rescue", "always")):
            for key in ("block", "rescue", "always"):
                yield from _walk(file, data.get(key), no_log)
        else:
            yield Task(file, data, inherited)


def all_tasks() -> list[Task]:
    """Every task and handler in the roles, the playbooks and site.yml."""
    found: list[Task] = []
    task_files = sorted(ROLES_DIR.glob("*/tasks/*.yml")) + sorted(ROLES_DIR.glob("*/handlers/*.yml"))
    for file in [*task_files, *sorted((ROOT / "playbooks" / "tasks").glob("*.yml"))]:  # + the wiring
        found += _walk(file, _load(file))
    for file in [*sorted((ROOT / "playbooks").glob("*.yml")), ROOT / "site.yml"]:
        for play in _load(file) or []:
            for key in PLAY_TASK_KEYS:
                found += _walk(file, play.get(key))
    return found


def _spec_secrets() -> set[str]:
    """Variables an argument spec (any role, any entry point) marks ``no_log: true``."""
    names = set()
    for spec_file in ROLES_DIR.glob("*/meta/argument_specs.yml"):
        for entry in ((_load(spec_file) or {}).get("argument_specs") or {}).values():
            names |= {n for n, o in ((entry or {}).get("options") or {}).items() if (o or {}).get("no_log")}
    return names


def _definitions(tasks: list[Task]) -> dict[str, list]:
    """Variable name -> the values it is defined from: role defaults and vars, set_fact, task vars."""
    defs: dict[str, list] = {}
    for vars_file in list(ROLES_DIR.glob("*/defaults/*.yml")) + list(ROLES_DIR.glob("*/vars/*.yml")):
        for name, value in (_load(vars_file) or {}).items():
            defs.setdefault(name, []).append(value)
    for task in tasks:
        module, margs = task.module()
        sources = [margs] if module in SET_FACT_MODULES else []
        sources.append(task.data.get("vars"))
        for source in sources:
            for name, value in (source or {}).items() if isinstance(source, dict) else ():
                defs.setdefault(name, []).append(value)
    return defs


def secret_names(tasks: list[Task]) -> set[str]:
    """The spec's secrets and every variable defined from one, to a fixed point."""
    secrets = _spec_secrets()
    defs = _definitions(tasks)
    while True:
        more = {name for name, values in defs.items() if name not in secrets and _names_any(values, secrets)}
        if not more:
            return secrets
        secrets |= more


def handles_secret(task: Task, secrets: set[str]) -> set[str]:
    """The secrets ``task`` passes to its module, its loop or its template."""
    return _names_any(task.arguments(), secrets) | _names_any(task.template_text(), secrets)


TASKS = all_tasks()
SECRETS = secret_names(TASKS)


def test_secrets_found():
    """The scan knows the secrets the issue names, directly or as built from them."""
    assert {"redis_password", "coturn_static_auth_secret", "signaling_app_redis_url",
            "signaling_app_turn_secret", "tls_private_key"} <= SECRETS
    assert {"redis_url", "__signaling_app_settings"} <= SECRETS


def test_tasks_handling_secrets_found():
    """The files holding secrets are written by tasks the scan sees as handling them."""
    handling = {t.where for t in TASKS if handles_secret(t, SECRETS)}
    for where in ("roles/redis/tasks/configure.yml: Write our Redis settings",
                  "roles/coturn/tasks/configure.yml: Write the coturn configuration",
                  "roles/signaling_app/tasks/configure.yml: Write the app configuration",
                  "roles/redis/tasks/facts.yml: Publish the Redis URL"):
        assert any(w.startswith(where) for w in handling), (where, sorted(handling))


@pytest.mark.parametrize("task", [t for t in TASKS if handles_secret(t, SECRETS)], ids=lambda t: t.where)
def test_task_handling_a_secret_is_no_log(task):
    assert task.no_log, f"{task.where} handles {sorted(handles_secret(task, SECRETS))} without no_log: true"


def test_no_secret_in_a_task_environment():
    """``no_log`` does not cover ``environment``: with become, the variables are part of the
    command sudo runs and logs to the host's journal. Pass a secret on stdin or in a file."""
    offenders = {t.where: sorted(_names_any(t.data.get("environment"), SECRETS)) for t in TASKS}
    assert {where: names for where, names in offenders.items() if names} == {}


# --- the scanner on tasks made up here ------------------------------------------------

def _made_up(tasks: list[dict]) -> list[Task]:
    return list(_walk(ROOT / "site.yml", tasks))


@pytest.mark.parametrize("task, flagged", [
    ({"name": "a", "ansible.builtin.debug": {"msg": "{{ redis_password }}"}}, True),
    ({"name": "b", "ansible.builtin.command": "true", "environment": {"X": "{{ redis_url }}"}}, True),
    ({"name": "c", "ansible.builtin.command": "true", "when": "redis_password | length > 0"}, False),
    ({"name": "d", "ansible.builtin.assert": {"that": "redis_password | length > 16"}}, False),
    ({"name": "e", "ansible.builtin.assert": {"that": "true", "fail_msg": "{{ redis_password }}"}}, True),
    ({"name": "f", "ansible.builtin.debug": {"msg": "{{ redis_port }}"}}, False),
    ({"name": "g", "ansible.builtin.fail": {"msg": "set redis_password in a vault"}}, False),
])
def test_scanner_flags_secret_arguments(task, flagged):
    (made,) = _made_up([task])
    assert bool(handles_secret(made, SECRETS)) is flagged


def test_scanner_honours_no_log_on_enclosing_blocks():
    leak = {"name": "leak", "ansible.builtin.debug": {"msg": "{{ redis_password }}"}}
    inner, bare = _made_up([{"name": "block", "no_log": True, "block": [leak]}, leak])
    assert inner.no_log and not bare.no_log
