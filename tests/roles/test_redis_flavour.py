"""Redis or Valkey (issue 14): which server the redis role's preflight chooses, run by Ansible
itself (roles/redis/tasks/preflight.yml, as playbooks/preflight.yml includes it) for made-up
hosts: their Debian release (``ansible_facts``) and what is installed on them
(``webrtc_edge_installed_packages``, as playbooks/preflight.yml reads it).

* on a host without either server: Redis on Debian 12 (which has no valkey-server), Valkey on
  Debian 13;
* a host that has redis-server installed (Debian 12 upgraded to 13) keeps Redis, one that has
  valkey-server keeps Valkey; one that has both (switched once) keeps the one whose unit is
  enabled;
* what the inventory sets wins, and the other server is then the one the role stops;
* an unknown value, or Valkey on Debian 12, fails in the preflight with a message naming what
  is allowed;
* the chosen server's row of the role's table decides the packages, the unit, the client, the
  config files and the sandbox's paths, published for other plays as redis_server, redis_unit
  and redis_cli.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from local_playbook import ROOT, run_local_playbook

ROLE = ROOT / "roles" / "redis"
FLAVOURS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["__redis_flavours"]

BOOKWORM = {"distribution": "Debian", "distribution_major_version": "12", "distribution_release": "bookworm"}
TRIXIE = {"distribution": "Debian", "distribution_major_version": "13", "distribution_release": "trixie"}
REDIS = ["redis-server", "redis-tools"]
VALKEY = ["valkey-server", "valkey-tools"]

#: What the role publishes and derives from the choice, written by the play below.
SHOWN = {
    "server": "redis_server", "unit": "redis_unit", "cli": "redis_cli", "packages": "__redis_packages",
    "config": "__redis_config", "main_config": "__redis_main_config", "stopped": "__redis_other_units",
    "validate": "__redis_validate", "read_write": "__redis_systemd_read_write_paths",
    "exec": "__redis_systemd_exec_paths",
}


def _preflight(tmp_path: Path, facts: dict, installed: list[str], **values) -> tuple[dict, str]:
    """Run the role's preflight for a host with ``facts`` and ``installed`` packages; what it
    published and derived (empty when it failed), and Ansible's output."""
    out = tmp_path / "shown.json"
    playbook = tmp_path / "flavour.yml"
    playbook.write_text(json.dumps([{
        "name": "The redis role's preflight", "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"ansible.builtin.include_role": {"name": "redis", "tasks_from": "preflight.yml", "public": True}},
            {"ansible.builtin.copy": {
                "content": "{{ {" + ", ".join(f"'{k}': {v}" for k, v in SHOWN.items()) + "} | to_json }}",
                "dest": str(out), "mode": "0600"}},
        ],
    }]))
    extra = {"ansible_facts": facts, "webrtc_edge_installed_packages": installed,
             "redis_password": "a-password-of-forty-characters-0123456789", **values}
    proc = run_local_playbook(playbook, extra, must_succeed=False)
    output = proc.stdout + proc.stderr
    return (json.loads(out.read_text()) if proc.returncode == 0 else {}), output


@pytest.mark.parametrize(("facts", "installed", "values", "server"), [
    pytest.param(BOOKWORM, [], {}, "redis", id="bookworm"),
    pytest.param(TRIXIE, [], {}, "valkey", id="trixie"),
    pytest.param(TRIXIE, REDIS, {}, "redis", id="trixie-upgraded-from-bookworm-keeps-redis"),
    pytest.param(TRIXIE, VALKEY, {}, "valkey", id="trixie-with-valkey"),
    pytest.param(BOOKWORM, REDIS, {"redis_server": "redis"}, "redis", id="inventory-redis-on-bookworm"),
    pytest.param(TRIXIE, REDIS, {"redis_server": "valkey"}, "valkey", id="inventory-wins-over-installed"),
    pytest.param(TRIXIE, [], {"redis_server": "redis"}, "redis", id="inventory-wins-over-release"),
    pytest.param(TRIXIE, REDIS + VALKEY, {"__redis_enabled": {"stdout_lines": ["disabled", "enabled"]}}, "valkey",
                 id="both-installed-valkey-enabled"),
    pytest.param(TRIXIE, REDIS + VALKEY, {"__redis_enabled": {"stdout_lines": ["enabled", "disabled"]}}, "redis",
                 id="both-installed-redis-enabled"),
])
def test_server_chosen(tmp_path, facts, installed, values, server):
    shown, output = _preflight(tmp_path, facts, installed, **values)
    assert shown, output
    flavour = FLAVOURS[server]
    assert (shown["server"], shown["unit"], shown["cli"]) == (server, flavour["unit"], flavour["cli"])
    assert shown["packages"] == flavour["packages"]


@pytest.mark.parametrize(("facts", "installed", "values", "message"), [
    pytest.param(TRIXIE, [], {"redis_server": "memcached"},
                 "redis on localhost: redis_server must be one of: redis, valkey (got 'memcached')", id="unknown"),
    pytest.param(BOOKWORM, [], {"redis_server": "valkey"},
                 "redis on localhost: redis_server valkey needs Debian 13 or later (valkey-server is not in Debian 12, "
                 "bookworm); use redis_server: redis there", id="valkey-on-bookworm"),
    pytest.param(BOOKWORM, REDIS, {"redis_server": "valkey"}, "redis_server valkey needs Debian 13 or later",
                 id="valkey-on-bookworm-with-redis"),
])
def test_bad_choice_fails_in_the_preflight(tmp_path, facts, installed, values, message):
    shown, output = _preflight(tmp_path, facts, installed, **values)
    assert not shown
    assert message in " ".join(output.split()), output


@pytest.mark.parametrize(("facts", "installed", "name"), [
    pytest.param(TRIXIE, [], "valkey", id="valkey"),
    pytest.param(BOOKWORM, REDIS, "redis", id="redis-as-before"),  # the paths it had before Valkey came
])
def test_files_and_sandbox_follow_the_server(tmp_path, facts, installed, name):
    shown, output = _preflight(tmp_path, facts, installed)
    assert shown, output
    assert (shown["config"], shown["main_config"]) == (f"/etc/{name}/webrtc-edge.conf", f"/etc/{name}/{name}.conf")
    assert shown["validate"].rstrip().endswith(f"validate /usr/bin/{name}-server %s")
    assert shown["read_write"] == [f"-/var/lib/{name}", f"-/var/log/{name}", f"-/run/{name}"]
    assert shown["exec"] == [f"/usr/bin/{name}-server", "/usr/lib"]
    assert shown["stopped"] == []


def test_switch_stops_the_other_server(tmp_path):
    shown, output = _preflight(tmp_path, TRIXIE, REDIS, redis_server="valkey")
    assert shown, output
    assert shown["stopped"] == ["redis-server.service"]


def test_every_flavour_has_every_key():
    """The table is literal (Molecule's helpers read it too) and complete."""
    keys = {"packages", "unit", "server", "cli", "user", "config_dir", "main_config", "data_dir", "log_dir", "run_dir",
            "debian_min"}
    for name, flavour in FLAVOURS.items():
        assert set(flavour) == keys, name
        assert "{{" not in json.dumps(flavour), name
        assert flavour["unit"] == f"{flavour['packages'][0]}.service", name
