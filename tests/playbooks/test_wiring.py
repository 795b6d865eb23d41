"""The wiring between the roles (playbooks/tasks/wire_*.yml, issue 13) on made-up inventories.

Each role's defaults/main.yml holds a lone host's values; the wire files set the deployment's as
facts, in plays without the roles, keeping what the inventory or -e sets. Here:

* the wire files of redis, coturn, tls and the exporters alone, on multi-host inventories whose
  hosts are all this machine (local connection), each with an address and an FQDN of its own
  (made-up facts) and, in the inventory, what the roles would have published (redis_url,
  redis_unit, signaling_app_endpoints, coturn_tls_names);
* the standalone playbooks, in --check with --tags always: their facts and wiring plays run, and
  of the roles only the argument checks;
* every playbook that runs one of the roles wires it first, in a play without that role.

tests/playbooks/test_preflight.py runs the whole preflight, wiring included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from local_inventory import local_inventory

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
WIRE_DIR = ROOT / "playbooks" / "tasks"
UNSET = "UNSET"
FIREWALL = "webrtc-edge-firewall.service"

#: What the wire files set, as each host has it after them (UNSET where they left it alone).
SHOWN = ["redis_address", "coturn_room_max_peers", "coturn_tls_profile", "tls_server_names",
         "exporters_listen_address", "exporters_node_systemd_units", "exporters_status_port",
         "exporters_redis_address", "exporters_redis_password", "signaling_app_redis_url"]

#: Every host this machine under another name, with an address and FQDN of its own: a play that
#: gathers the real facts, then overrides these in the fact cache (later plays gather no more:
#: gathering = smart, ansible.cfg).
FAKE_FACTS = {
    "name": "Made-up facts: an address and an FQDN per host",
    "hosts": "all",
    "gather_facts": True,
    "tags": ["always"],
    "tasks": [{
        "name": "Address and FQDN",
        "ansible.builtin.set_fact": {
            "cacheable": True,
            "ansible_default_ipv4": {"address": "{{ fake_address }}"},
            "ansible_fqdn": "{{ inventory_hostname }}.example.org",
        },
    }],
}
SHOW = {
    "name": "Show the wiring",
    "hosts": "all",
    "gather_facts": False,
    "tags": ["always"],
    "tasks": [{
        "name": "Wiring",
        "ansible.builtin.debug": {"msg": {name: f"{{{{ {name} | default('{UNSET}') }}}}" for name in SHOWN}},
    }],
}


def _run(tmp_path: Path, inventory: Path, plays: list[dict], extra_vars: dict | None = None) -> dict[str, dict]:
    """Made-up facts, ``plays``, then what each host has; --check, --tags always."""
    playbook = tmp_path / "wiring.yml"
    playbook.write_text(yaml.safe_dump([FAKE_FACTS, *plays, SHOW], sort_keys=False))
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(extra_vars or {}))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_CACHE_PLUGIN": "memory",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json",
    }
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "--check", "--tags", "always", "-i", str(inventory), "-e", f"@{extra}", str(playbook)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    (task,) = [t for play in report["plays"] for t in play["tasks"] if t["task"]["name"] == "Wiring"]
    return {host: result["msg"] for host, result in task["hosts"].items()}


def _wire(tmp_path: Path, groups: dict, extra_vars: dict | None = None, **all_vars) -> dict[str, dict]:
    """The wire files of redis, coturn, tls and the exporters, in the preflight's order."""
    plays = [{"name": "Wire", "hosts": "all", "gather_facts": False, "tags": ["always"], "tasks": [
        {"name": f"Wire {name}", "ansible.builtin.include_tasks": str(WIRE_DIR / f"wire_{name}.yml")}
        for name in ("redis", "turn", "tls", "exporters")]}]
    return _run(tmp_path, local_inventory(tmp_path, groups, **all_vars), plays, extra_vars)


# -- the wire files -----------------------------------------------------------------------------

#: Apart hosts and a monitoring group; what the roles publish, set in the inventory.
CLUSTER = {
    "signaling_app": {
        "app1": {"fake_address": "10.0.0.11", "signaling_app_room_max_peers": 80,
                 "signaling_app_endpoints": [{"port": 8081}, {"port": 8082}]},
        "app2": {"fake_address": "10.0.0.12", "signaling_app_endpoints": [{"port": 8081}]},
        "app3": {"fake_address": "10.0.0.13", "signaling_app_room_max_peers": 30,
                 "signaling_app_endpoints": [{"port": 9000}]},
    },
    "proxy": {"edge1": {"fake_address": "10.0.0.21"}},
    "redis": {"redis1": {"fake_address": "10.0.0.31", "redis_port": 6380, "redis_unit": "valkey-server.service",
                         "redis_url": "redis://:p%40ss@10.0.0.31:6380/0"}},
    "turn": {"turn1": {"fake_address": "10.0.0.41", "coturn_tls_names": ["turn.example.org"]},
             "turn2": {"fake_address": "10.0.0.42", "coturn_tls_names": []}},  # coturn_tls: false
    "monitoring": {"prom1": {"fake_address": "10.0.0.51"}},
}
CLUSTER_VARS = {"proxy_tls_profile": "modern", "proxy_status_port": 8406}


def _with(groups: dict, **host_vars: dict) -> dict:
    """``groups`` with more variables for some hosts."""
    return {g: {h: {**v, **host_vars.get(h, {})} for h, v in members.items()} for g, members in groups.items()}


def test_a_single_host_keeps_everything_on_loopback(tmp_path):
    groups = {g: {"one": {"fake_address": "10.0.0.5", "signaling_app_endpoints": [{"port": 8081}],
                          "redis_url": "redis://:s%2Fcret@127.0.0.1:6379/0", "coturn_tls_names": ["turn.example.org"]}}
              for g in ("signaling_app", "proxy", "redis", "turn")}
    one = _wire(tmp_path, groups)["one"]
    assert one["redis_address"] == "127.0.0.1"
    assert (one["coturn_room_max_peers"], one["coturn_tls_profile"]) == (50, "intermediate")
    assert one["tls_server_names"] == ["one.example.org", "localhost", "turn.example.org"]
    assert one["exporters_listen_address"] == "127.0.0.1"
    assert one["exporters_node_systemd_units"] == [
        "nginx.service", "signaling@8081.service", "redis-server.service", "coturn.service", FIREWALL]
    assert (one["exporters_status_port"], one["exporters_redis_address"]) == (8405, "redis://127.0.0.1:6379")
    assert one["exporters_redis_password"] == "s/cret"


def test_a_cluster_wires_each_host_by_its_groups(tmp_path):
    shown = _wire(tmp_path, CLUSTER, **CLUSTER_VARS)
    # Redis on a host of its own serves on its address; nothing else is a Redis host.
    assert shown["redis1"]["redis_address"] == "10.0.0.31"
    assert {h for h, v in shown.items() if v["redis_address"] != UNSET} == {"redis1"}
    # coturn: the largest room of the app hosts (app2 has the app's default, 50), the proxy's profile.
    for turn in ("turn1", "turn2"):
        assert (shown[turn]["coturn_room_max_peers"], shown[turn]["coturn_tls_profile"]) == (80, "modern")
    assert shown["app1"]["coturn_room_max_peers"] == UNSET
    # The TURN name in the certificate of the TURN host that serves TURN over TLS, nowhere else.
    assert shown["turn1"]["tls_server_names"] == ["turn1.example.org", "localhost", "turn.example.org"]
    assert {h for h, v in shown.items() if v["tls_server_names"] != UNSET} == {"turn1"}
    # Exporters: each host's own address (a monitoring group), its own units; not on prom1.
    units = {"app1": ["signaling@8081.service", "signaling@8082.service"], "app2": ["signaling@8081.service"],
             "app3": ["signaling@9000.service"], "edge1": ["nginx.service"], "redis1": ["valkey-server.service"],
             "turn1": ["coturn.service"], "turn2": ["coturn.service"]}
    for host, own in units.items():
        found = shown[host]
        assert found["exporters_listen_address"] == CLUSTER[next(g for g in CLUSTER if host in CLUSTER[g])][host][
            "fake_address"]
        assert found["exporters_node_systemd_units"] == [*own, FIREWALL], host
        assert found["exporters_status_port"] == 8406
        assert found["exporters_redis_address"] == ("redis://127.0.0.1:6380" if host == "redis1"
                                                    else "redis://127.0.0.1:6379")
        assert found["exporters_redis_password"] == ("p@ss" if host == "redis1" else UNSET)
    assert all(value == UNSET for value in shown["prom1"].values())


def test_redis_on_one_of_two_app_hosts_serves_on_its_address(tmp_path):
    """Loopback only when every app host is the Redis host; an Apache proxy there."""
    groups = {"signaling_app": {"a1": {"fake_address": "10.0.0.1"}, "a2": {"fake_address": "10.0.0.2"}},
              "proxy": {"a1": {}}, "redis": {"a1": {}}}
    shown = _wire(tmp_path, groups, proxy_server="apache")
    assert shown["a1"]["redis_address"] == "10.0.0.1"
    assert shown["a1"]["exporters_node_systemd_units"] == ["apache2.service", "redis-server.service", FIREWALL]


def test_what_the_inventory_or_extra_vars_set_wins(tmp_path):
    groups = _with(CLUSTER,
                   redis1={"redis_address": "127.0.0.1", "exporters_redis_password": "given"},
                   turn1={"coturn_room_max_peers": 12, "tls_server_names": ["turn.example.org"]},
                   edge1={"exporters_listen_address": "127.0.0.1"},
                   app1={"exporters_node_systemd_units": ["custom.service"]})
    shown = _wire(tmp_path, groups, {"coturn_tls_profile": "intermediate", "exporters_status_port": 9000},
                  **CLUSTER_VARS)
    assert shown["redis1"]["redis_address"] == "127.0.0.1"
    assert (shown["turn1"]["coturn_room_max_peers"], shown["turn2"]["coturn_room_max_peers"]) == (12, 80)
    assert {shown[t]["coturn_tls_profile"] for t in ("turn1", "turn2")} == {"intermediate"}
    assert shown["turn1"]["tls_server_names"] == ["turn.example.org"]
    assert (shown["edge1"]["exporters_listen_address"], shown["app2"]["exporters_listen_address"]) == (
        "127.0.0.1", "10.0.0.12")
    assert shown["app1"]["exporters_node_systemd_units"] == ["custom.service"]
    assert {v["exporters_status_port"] for h, v in shown.items() if h != "prom1"} == {9000}
    assert shown["redis1"]["exporters_redis_password"] == "given"


# -- the standalone playbooks -------------------------------------------------------------------

#: Apart hosts, nothing published: the playbooks publish and wire what they need.
STANDALONE = {
    "signaling_app": {"app1": {"fake_address": "10.0.0.11", "signaling_app_instances": 1,
                               "signaling_app_room_max_peers": 80},
                      "app2": {"fake_address": "10.0.0.12", "signaling_app_instances": 1}},
    "proxy": {"edge1": {"fake_address": "10.0.0.21"}},
    "redis": {"redis1": {"fake_address": "10.0.0.31", "redis_password": "0123456789abcdefXYZ"}},
    "turn": {"turn1": {"fake_address": "10.0.0.41", "coturn_public_host": "turn.example.org"}},
}


def _standalone(tmp_path: Path, playbook: str) -> dict[str, dict]:
    play = {"name": playbook, "ansible.builtin.import_playbook": str(ROOT / "playbooks" / playbook)}
    return _run(tmp_path, local_inventory(tmp_path, STANDALONE, proxy_tls_profile="modern"), [play])


def test_redis_playbook_wires_the_address(tmp_path):
    assert _standalone(tmp_path, "redis.yml")["redis1"]["redis_address"] == "10.0.0.31"


def test_app_playbook_publishes_the_wired_redis_url(tmp_path):
    """app.yml's facts play wires Redis's address before it publishes redis_url for the app."""
    shown = _standalone(tmp_path, "app.yml")
    assert shown["app1"]["signaling_app_redis_url"] == "redis://:0123456789abcdefXYZ@10.0.0.31:6379/0"


def test_turn_playbook_wires_room_size_and_profile(tmp_path):
    turn = _standalone(tmp_path, "turn.yml")["turn1"]
    assert (turn["coturn_room_max_peers"], turn["coturn_tls_profile"]) == (80, "modern")


def test_tls_playbook_wires_the_turn_name(tmp_path):
    shown = _standalone(tmp_path, "tls.yml")
    assert shown["turn1"]["tls_server_names"] == ["turn1.example.org", "localhost", "turn.example.org"]
    assert shown["edge1"]["tls_server_names"] == UNSET  # the role's default: its FQDN and localhost


def test_exporters_playbook_wires_units_and_password(tmp_path):
    shown = _standalone(tmp_path, "exporters.yml")
    assert shown["app1"]["exporters_node_systemd_units"] == ["signaling@8081.service", FIREWALL]
    assert shown["edge1"]["exporters_node_systemd_units"] == ["nginx.service", FIREWALL]
    assert shown["redis1"]["exporters_redis_password"] == "0123456789abcdefXYZ"
    assert {v["exporters_listen_address"] for v in shown.values()} == {"127.0.0.1"}  # no monitoring group


# -- every playbook wires a role before it runs it ----------------------------------------------

#: Role -> its wire file, and the entry points that read what the file sets.
WIRED_ROLES = {
    "redis": ("wire_redis.yml", {"main", "preflight", "facts"}),
    "coturn": ("wire_turn.yml", {"main", "preflight"}),
    "tls": ("wire_tls.yml", {"main", "preflight", "facts", "issue"}),
    "exporters": ("wire_exporters.yml", {"main", "preflight"}),
    "signaling_app": ("wire_app.yml", {"main", "endpoints", "preflight"}),
    "nginx": ("wire_proxy.yml", {"main"}),
    "apache": ("wire_proxy.yml", {"main"}),
}
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))
#: (playbook, role) run unwired on purpose: wheelhouse.yml runs the app's preflight for the wheels'
#: Python and machine only; the endpoints it publishes on the way are not used.
UNWIRED = {("wheelhouse.yml", "signaling_app")}


def _tasks(tasks: list[dict] | None):
    for task in tasks or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def _role_use(task: dict) -> tuple[str, str, bool] | None:
    """(role, entry point, static) of an import_role or include_role task."""
    for module, static in (("import_role", True), ("include_role", False)):
        args = task.get(f"ansible.builtin.{module}")
        if args:
            return args["name"], Path(args.get("tasks_from", "main")).stem, static
    return None


def _wire_file(task: dict) -> str | None:
    args = task.get("ansible.builtin.include_tasks") or task.get("ansible.builtin.import_tasks")
    name = Path(str(args)).name if args else ""
    return name if name.startswith("wire_") else None


def test_wire_files_exist():
    assert {f for f, _ in WIRED_ROLES.values()} <= {p.name for p in WIRE_DIR.glob("wire_*.yml")}


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_wires_a_role_before_it_runs_it(playbook):
    """A role's entry point that reads wired values comes after its wire file (an earlier task or
    play), and the wire file never runs in a play that has the role's defaults in scope (roles:,
    import_role), where `x | default(...)` would keep the role's default."""
    wired: set[str] = set()
    for play in yaml.safe_load(playbook.read_text()) or []:
        tasks = [t for key in ("pre_tasks", "tasks", "post_tasks") for t in _tasks(play.get(key))]
        listed = {r if isinstance(r, str) else r["role"] for r in play.get("roles") or []}
        static = listed | {use[0] for use in map(_role_use, tasks) if use and use[2]}
        for role in sorted(listed & WIRED_ROLES.keys()):
            assert WIRED_ROLES[role][0] in wired, f"{playbook.name}, play {play.get('name')}: {role} unwired"
        for task in tasks:
            if wire := _wire_file(task):
                clash = sorted(r for r in static if WIRED_ROLES.get(r, ("",))[0] == wire)
                assert not clash, f"{playbook.name}, play {play.get('name')}: {wire} with {clash}'s defaults in scope"
                wired.add(wire)
            elif ((use := _role_use(task)) and use[0] in WIRED_ROLES and use[1] in WIRED_ROLES[use[0]][1]
                  and (playbook.name, use[0]) not in UNWIRED):
                assert WIRED_ROLES[use[0]][0] in wired, (
                    f"{playbook.name}, task {task.get('name')}: {use[0]} ({use[1]}) before {WIRED_ROLES[use[0]][0]}")
