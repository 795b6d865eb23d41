"""A made-up inventory whose hosts are all this machine (local connection) under other names, as
the playbook tests run the real playbooks in --check (test_preflight.py, test_wiring.py)."""

from __future__ import annotations

from pathlib import Path

import yaml


def local_inventory(tmp_path: Path, groups: dict[str, dict], **all_vars) -> Path:
    """Write ``tmp_path``/hosts.yml: ``groups`` maps each group to its hosts and their variables
    (or None), ``all_vars`` go to every host; the generated secrets go to ``tmp_path``."""
    hosts = {h for members in groups.values() for h in members}
    base = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        "proxy_server": "nginx",
        "redis_credentials_dir": str(tmp_path / "credentials"),
        "coturn_credentials_dir": str(tmp_path / "credentials"),
    }
    inv = {"all": {"vars": {**base, **all_vars}, "hosts": {h: None for h in sorted(hosts)},
                   "children": {g: {"hosts": members} for g, members in groups.items()}}}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inv))
    return path
