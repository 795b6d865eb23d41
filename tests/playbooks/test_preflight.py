"""playbooks/preflight.yml against made-up multi-host inventories.

Every host is this machine (ansible_connection=local) under another name, so the real
play runs, in --check mode, with real facts. Bad inventories must fail before anything
changes, with a message that names the problem; a good one publishes the endpoints and
wires the roles together (playbooks/tasks/wire_*.yml).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from local_inventory import local_inventory as _inventory

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

SHOW = """
- name: Preflight
  ansible.builtin.import_playbook: {root}/playbooks/preflight.yml
- name: Show the published endpoints
  hosts: signaling_app
  gather_facts: false
  tasks:
    - name: Endpoints
      ansible.builtin.debug:
        var: signaling_app_endpoints
- name: Show the firewall models
  hosts: all
  gather_facts: false
  tasks:
    - name: Firewall
      ansible.builtin.debug:
        var: __firewall_model
- name: Show the wiring (playbooks/tasks/wire_*.yml)
  hosts: all
  gather_facts: false
  tasks:
    - name: Wiring
      ansible.builtin.debug:
        msg:
          bind_address: "{{{{ signaling_app_bind_address | default(None) }}}}"
          redis_url: "{{{{ signaling_app_redis_url | default(None) }}}}"
          trusted_proxies: "{{{{ signaling_app_trusted_proxies | default(None) }}}}"
          turn_urls: "{{{{ signaling_app_turn_urls | default(None) }}}}"
          turn_secret_set: "{{{{ signaling_app_turn_secret | default('') | length > 0 }}}}"
          body_max: "{{{{ proxy_body_max | default(None) }}}}"
          heartbeat: "{{{{ proxy_app_heartbeat | default(None) }}}}"
          server_names: "{{{{ proxy_server_names | default(None) }}}}"
          crl: "{{{{ proxy_tls_crl | default(None) }}}}"
          redis_address: "{{{{ redis_address | default(None) }}}}"
          room_max_peers: "{{{{ coturn_room_max_peers | default(None) }}}}"
          turn_tls_profile: "{{{{ coturn_tls_profile | default(None) }}}}"
          tls_server_names: "{{{{ tls_server_names | default(None) }}}}"
          exporters_address: "{{{{ exporters_listen_address | default(None) }}}}"
          exporters_units: "{{{{ exporters_node_systemd_units | default(None) }}}}"
          exporters_status_port: "{{{{ exporters_status_port | default(None) }}}}"
          exporters_password_set: "{{{{ exporters_redis_password | default('') | length > 0 }}}}"
"""


def _platform_play(platform: dict[str, str]) -> str:
    """A play before the preflight that makes every host look like ``platform`` (facts without their
    ``ansible_`` prefix): it gathers the real facts, then overrides these in the fact cache. The
    preflight gathers no more (gathering = smart, ansible.cfg) and its checks read the cache."""
    return yaml.safe_dump([{
        "name": "Fake the platform",
        "hosts": "all",
        "gather_facts": True,
        "tasks": [{
            "name": "Platform facts",
            "ansible.builtin.set_fact": {"cacheable": True, **{f"ansible_{k}": v for k, v in platform.items()}},
        }],
    }], sort_keys=False)


def _play(tmp_path: Path, inventory: Path, platform: dict[str, str] | None = None,
          **env_vars: str) -> tuple[int, str, dict[str, dict]]:
    """Run the preflight, on this machine's platform or a made-up one; its exit code, output, and
    what it published per host: "Endpoints" (signaling_app_endpoints) and "Firewall" (the firewall
    role's model). ``env_vars`` go to Ansible's environment, over the settings below."""
    playbook = tmp_path / "show.yml"
    playbook.write_text((_platform_play(platform) if platform else "") + SHOW.format(root=ROOT))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_CACHE_PLUGIN": "memory",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json",  # replaces the timing callbacks of ansible.cfg
        **env_vars,
    }
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "--check", "-i", str(inventory), str(playbook)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    shown: dict[str, dict] = {"Endpoints": {}, "Firewall": {}, "Wiring": {}}
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return proc.returncode, proc.stdout + proc.stderr, shown
    for play in report["plays"]:
        for task in play["tasks"]:
            name = task["task"]["name"]
            if name in shown:
                var = {"Endpoints": "signaling_app_endpoints", "Firewall": "__firewall_model", "Wiring": "msg"}[name]
                shown[name] = {h: r[var] for h, r in task["hosts"].items()}
    return proc.returncode, proc.stdout + proc.stderr, shown


def _run(tmp_path: Path, inventory: Path) -> tuple[int, str, dict]:
    rc, out, shown = _play(tmp_path, inventory)
    return rc, out, shown["Endpoints"]


def test_multi_host_endpoints(tmp_path):
    inv = _inventory(
        tmp_path,
        {
            "signaling_app": {
                "app1": {"signaling_app_instances": 2, "signaling_app_bind_address": "10.0.0.11"},
                "app2": {"signaling_app_instances": 1, "signaling_app_bind_address": "10.0.0.12",
                         "weight": 3, "max_fails": 5, "fail_timeout": 30},
                "app3": {"signaling_app_instances": 1, "signaling_app_bind_address": "10.0.0.13",
                         "signaling_app_base_port": 9000, "backup": True},
            },
            "proxy": {"edge1": None},
            "redis": {"redis1": None},
        },
    )
    rc, out, endpoints = _run(tmp_path, inv)
    assert rc == 0, out
    assert endpoints["app1"] == [
        {"address": "10.0.0.11", "port": 8081, "weight": 1, "backup": False, "max_fails": 3, "fail_timeout": 10},
        {"address": "10.0.0.11", "port": 8082, "weight": 1, "backup": False, "max_fails": 3, "fail_timeout": 10},
    ]
    assert endpoints["app2"] == [
        {"address": "10.0.0.12", "port": 8081, "weight": 3, "backup": False, "max_fails": 5, "fail_timeout": 30},
    ]
    assert endpoints["app3"] == [
        {"address": "10.0.0.13", "port": 9000, "weight": 1, "backup": True, "max_fails": 3, "fail_timeout": 10},
    ]


def test_wiring_follows_the_deployment_and_keeps_what_the_inventory_sets(tmp_path):
    """Apart hosts: the app listens on the host's address, uses the redis host's URL and the
    TURN host's URLs and secret, believes the proxy; the proxy follows the app's upload limit
    and heartbeat and the certificate's names and CRL. What the inventory sets (app2's
    address, the proxy's heartbeat) stays."""
    inv = _inventory(
        tmp_path,
        {
            "signaling_app": {"app1": {"signaling_app_instances": 1},
                              "app2": {"signaling_app_instances": 1, "signaling_app_bind_address": "10.0.0.12"}},
            "proxy": {"edge1": {"proxy_app_heartbeat": 45, "tls_server_names": ["signal.example.org"]}},
            "redis": {"redis1": None},
            "turn": {"turn1": None},
        },
        signaling_app_upload_max_size=20971520,
    )
    rc, out, shown = _play(tmp_path, inv)
    assert rc == 0, out
    wiring, endpoints = shown["Wiring"], shown["Endpoints"]
    address = endpoints["app1"][0]["address"]
    assert address not in ("127.0.0.1", "10.0.0.12")  # the host's own: its proxy is another host
    assert wiring["app1"]["bind_address"] == address
    assert wiring["app2"]["bind_address"] == "10.0.0.12"
    assert wiring["app1"]["redis_url"].startswith("redis://") and wiring["app1"]["redis_url"].endswith(":6379/0")
    assert wiring["app1"]["trusted_proxies"] == ["127.0.0.1/32", "::1/128", address]
    turn_urls = wiring["app1"]["turn_urls"]
    assert turn_urls and all(url.startswith(("turn:", "turns:")) for url in turn_urls)
    assert wiring["app1"]["turn_secret_set"] is True
    proxy = wiring["edge1"]
    assert (proxy["body_max"], proxy["heartbeat"]) == (20971520 + 65536, 45)
    assert (proxy["server_names"], proxy["crl"]) == (["signal.example.org"], "/etc/webrtc-edge/tls/ca.crl")


def test_wiring_of_redis_turn_tls_and_exporters(tmp_path):
    """Apart hosts and a monitoring group: Redis serves on its address; coturn takes the largest
    room of the app hosts and the proxy's TLS profile, and its certificate its TURN name; each
    host's exporters listen on its address and watch its own units, the proxy's status port.
    What the inventory sets (redis1's exporters address) stays; prom1 runs none of it."""
    inv = _inventory(
        tmp_path,
        {
            "signaling_app": {"app1": {"signaling_app_instances": 1, "signaling_app_room_max_peers": 70},
                              "app2": {"signaling_app_instances": 1, "signaling_app_base_port": 8091}},
            "proxy": {"edge1": None},
            "redis": {"redis1": {"exporters_listen_address": "127.0.0.1"}},
            "turn": {"turn1": {"coturn_public_host": "turn.example.org"}},
            "monitoring": {"prom1": None},
        },
        proxy_tls_profile="modern", proxy_status_port=8406,
    )
    rc, out, shown = _play(tmp_path, inv)
    assert rc == 0, out
    wiring = shown["Wiring"]
    address = shown["Endpoints"]["app1"][0]["address"]  # this machine's default IPv4 address
    assert wiring["redis1"]["redis_address"] == address
    assert (wiring["turn1"]["room_max_peers"], wiring["turn1"]["turn_tls_profile"]) == (70, "modern")
    assert "turn.example.org" in wiring["turn1"]["tls_server_names"]
    assert "turn.example.org" not in wiring["edge1"]["tls_server_names"]
    (redis_unit,) = set(wiring["redis1"]["exporters_units"]) - {"webrtc-edge-firewall.service"}
    assert redis_unit in ("redis-server.service", "valkey-server.service")
    for host, units in {"app1": ["signaling@8081.service"], "app2": ["signaling@8091.service"],
                        "edge1": ["nginx.service"], "turn1": ["coturn.service"]}.items():
        assert wiring[host]["exporters_units"] == [*units, "webrtc-edge-firewall.service"], host
        assert wiring[host]["exporters_address"] == address, host
        assert wiring[host]["exporters_status_port"] == 8406
        assert wiring[host]["exporters_password_set"] is False
    assert (wiring["redis1"]["exporters_address"], wiring["redis1"]["exporters_password_set"]) == ("127.0.0.1", True)
    assert wiring["prom1"]["exporters_units"] is None and wiring["prom1"]["room_max_peers"] is None


def test_instances_default_to_one_per_cpu_on_loopback(tmp_path):
    inv = _inventory(tmp_path, {g: {"one": None} for g in ("signaling_app", "proxy", "redis")})
    rc, out, endpoints = _run(tmp_path, inv)
    assert rc == 0, out
    assert [e["port"] for e in endpoints["one"]] == list(range(8081, 8081 + os.cpu_count()))
    assert {e["address"] for e in endpoints["one"]} == {"127.0.0.1"}


@pytest.mark.parametrize(
    ("groups", "all_vars", "message"),
    [
        pytest.param(
            {"signaling_app": {"one": None}, "proxy": {"one": None}},
            {"proxy_server": "caddy"},
            "proxy_server must be one of: nginx, apache (got 'caddy')",
            id="unknown-proxy",
        ),
        pytest.param(
            {"signaling_app": {"one": None}, "proxy": {"one": None}},
            {"proxy_conn_per_address": 100000},
            "proxy_conn_per_address must be 1 to 65535",
            id="conn-limit-too-high",
        ),
        pytest.param(
            {"signaling_app": {"one": {"signaling_app_instances": 2}}, "proxy": {"one": None}},
            {},
            "2 app instances in total (one) share sessions and rooms only through Redis",
            id="two-instances-without-redis",
        ),
        pytest.param(
            {"signaling_app": {"a1": {"signaling_app_instances": 1, "signaling_app_bind_address": "10.0.0.1"},
                               "a2": {"signaling_app_instances": 1, "signaling_app_bind_address": "10.0.0.2"}},
             "proxy": {"p1": None}},
            {},
            "2 app instances in total (a1, a2) share sessions and rooms only through Redis",
            id="two-hosts-without-redis",
        ),
        # Redis or Valkey (issue 14); this machine runs Debian 12
        pytest.param(
            {"signaling_app": {"one": None}, "proxy": {"one": None}, "redis": {"one": None}},
            {"redis_server": "keydb"},
            "redis_server must be one of: redis, valkey (got 'keydb')",
            id="unknown-redis-server",
        ),
        pytest.param(
            {"signaling_app": {"one": None}, "proxy": {"one": None}, "redis": {"one": None}},
            {"redis_server": "valkey"},
            "redis_server valkey needs Debian 13 or later (valkey-server is not in Debian 12, bookworm)",
            id="valkey-on-debian-12",
        ),
        pytest.param(
            {"signaling_app": {"a1": {"signaling_app_instances": 1, "signaling_app_bind_address": "127.0.0.1"}},
             "proxy": {"p1": None}},
            {},
            "The app instances of a1 listen on loopback",
            id="loopback-app-remote-proxy",
        ),
        pytest.param(
            {"signaling_app": {"a1": {"signaling_app_instances": 1, "backup": True}}, "proxy": {"a1": None}},
            {},
            "at least one app host must not be `backup: true`",
            id="only-backups",
        ),
        pytest.param(
            {"signaling_app": {"a1": {"signaling_app_instances": 1}}, "proxy": {"a1": None}},
            {"tls_source": "letsencrypt"},
            "tls_source must be one of: self_signed, files, acme (got 'letsencrypt')",
            id="unknown-tls-source",
        ),
        pytest.param(
            {"signaling_app": {"a1": {"signaling_app_instances": 1}}, "proxy": {"a1": None}},
            {"tls_source": "acme", "tls_server_names": ["signal.example.org"]},
            "tls_source: acme needs tls_acme_terms_agreed: true",
            id="acme-without-terms",
        ),
        pytest.param(
            {"signaling_app": {"a1": {"signaling_app_instances": 0}}, "proxy": {"a1": None}},
            {},
            "need signaling_app_instances >= 1 (got 0)",
            id="zero-instances",
        ),
        # TURN over TLS (issue 11)
        pytest.param(
            {"signaling_app": {"a1": {"signaling_app_instances": 1}}, "proxy": {"a1": None},
             "turn": {"a1": {"coturn_tls_port": 443}}},
            {},
            "coturn_tls_port 443 on a1: this host is also a proxy, whose nginx listens on 80 and 443",
            id="turn-tls-on-443-of-a-proxy",
        ),
        pytest.param(
            {"signaling_app": {"a1": {"signaling_app_instances": 1}}, "proxy": {"a1": None},
             "turn": {"t1": {"coturn_public_host": "192.0.2.41"}}},
            {},
            "TURN over TLS needs coturn_public_host to be the DNS name browsers use",
            id="turn-tls-for-an-address",
        ),
        pytest.param(
            {"signaling_app": {"a1": {"signaling_app_instances": 1}}, "proxy": {"a1": None},
             "turn": {"t1": {"coturn_public_host": "turn.example.org"}}},
            {"tls_server_names": ["signal.example.org"]},
            "coturn on t1 serves TURN over TLS as turn.example.org, which tls_server_names (signal.example.org) lacks",
            id="turn-name-not-in-certificate",
        ),
        pytest.param(
            {"signaling_app": {"a1": {"signaling_app_instances": 1}}, "proxy": {"a1": None},
             "turn": {"t1": {"coturn_public_host": "turn.example.org", "tls_server_names": ["turn.example.org"]}}},
            {"tls_source": "acme", "tls_server_names": ["signal.example.org"], "tls_acme_terms_agreed": True,
             "tls_acme_email": "ops@example.org"},
            "tls_source acme on t1, a TURN host without a proxy",
            id="turn-acme-without-a-proxy",
        ),
        pytest.param(
            {"signaling_app": {"a1": {"signaling_app_instances": 1}}, "proxy": {"a1": None},
             "turn": {"a1": {"coturn_user_quota": 2}}},
            {},
            "coturn_user_quota (2) is below the 3 allocations of a single peer connection",
            id="turn-quota-below-one-call",
        ),
        pytest.param(
            {"signaling_app": {"one": None}, "proxy": {"one": None}},
            {"nginx_extra_locations": [{"path": "/api/", "directives": ["return 204;"]}]},
            "nginx_extra_locations[0]",
            id="nginx-extra-location-on-a-built-in-path",
        ),
        pytest.param(
            {"signaling_app": {"one": None}, "proxy": {"one": None}},
            {"proxy_server": "apache", "apache_location_directives": {"/nowhere/": ["Header set X-A b"]}},
            "apache_location_directives",
            id="apache-directives-for-an-unknown-path",
        ),
    ],
)
def test_bad_inventory_fails_early(tmp_path, groups, all_vars, message):
    rc, out, _ = _run(tmp_path, _inventory(tmp_path, groups, **all_vars))
    assert rc != 0
    assert message in out



# -- platforms (playbooks/vars/platforms.yml) -------------------------------------------------
# The facts Ansible gathers, as they are on each platform.
PLATFORMS = {
    "debian12": {"distribution": "Debian", "distribution_version": "12.11", "distribution_major_version": "12",
                 "distribution_release": "bookworm", "os_family": "Debian"},
    "debian13": {"distribution": "Debian", "distribution_version": "13.1", "distribution_major_version": "13",
                 "distribution_release": "trixie", "os_family": "Debian"},
    "debian11": {"distribution": "Debian", "distribution_version": "11.11", "distribution_major_version": "11",
                 "distribution_release": "bullseye", "os_family": "Debian"},
    "ubuntu2404": {"distribution": "Ubuntu", "distribution_version": "24.04", "distribution_major_version": "24",
                   "distribution_release": "noble", "os_family": "Debian"},
    "rocky9": {"distribution": "Rocky", "distribution_version": "9.5", "distribution_major_version": "9",
               "distribution_release": "Blue Onyx", "os_family": "RedHat"},
}
ONE_APP_HOST = {"signaling_app": {"one": {"signaling_app_instances": 1}}, "proxy": {"one": None}}
SUPPORTED = "webrtc-edge supports Debian 12 (bookworm), Debian 13 (trixie)."
# What follows the platform check in the preflight: none of it runs on a refused host.
AFTER_THE_CHECK = ("Warn that this platform is untested", "Read the installed packages")


@pytest.mark.parametrize("platform", ["debian12", "debian13"])
def test_supported_platform_passes_without_warning(tmp_path, platform):
    rc, out, shown = _play(tmp_path, _inventory(tmp_path, ONE_APP_HOST), PLATFORMS[platform])
    assert rc == 0, out
    assert shown["Endpoints"]["one"]
    assert "does not test" not in out


@pytest.mark.parametrize(
    ("platform", "all_vars", "message"),
    [
        pytest.param(
            "ubuntu2404", {},
            f"one runs Ubuntu 24.04 (noble); {SUPPORTED} To try another Debian release or a Debian derivative all "
            "the same, set webrtc_edge_allow_untested_platform: true",
            id="ubuntu",
        ),
        pytest.param(
            "debian11", {},
            f"one runs Debian 11.11 (bullseye); {SUPPORTED} To try",
            id="debian-11",
        ),
        pytest.param(
            "rocky9", {},
            f"one runs Rocky 9.5 (Blue Onyx); {SUPPORTED} Its OS family is RedHat, not Debian: the roles install "
            "with apt, so webrtc_edge_allow_untested_platform does not let it through.",
            id="redhat",
        ),
        pytest.param(
            "rocky9", {"webrtc_edge_allow_untested_platform": True},
            f"one runs Rocky 9.5 (Blue Onyx); {SUPPORTED} Its OS family is RedHat, not Debian",
            id="redhat-with-the-flag",
        ),
    ],
)
def test_other_platform_fails_before_anything_runs(tmp_path, platform, all_vars, message):
    rc, out, _ = _play(tmp_path, _inventory(tmp_path, ONE_APP_HOST, **all_vars), PLATFORMS[platform])
    assert rc != 0
    assert message in out
    assert not [task for task in AFTER_THE_CHECK if task in out]


@pytest.mark.parametrize("platform", ["ubuntu2404", "debian11"])
def test_untested_platform_passes_with_the_flag_and_a_warning(tmp_path, platform):
    """webrtc_edge_allow_untested_platform lets a Debian derivative or another Debian release through;
    Ansible's default output shows a warning of its own naming the platform."""
    facts = PLATFORMS[platform]
    inv = _inventory(tmp_path, ONE_APP_HOST, webrtc_edge_allow_untested_platform=True)
    rc, out, _ = _play(tmp_path, inv, facts, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default")
    assert rc == 0, out
    found = f"{facts['distribution']} {facts['distribution_version']} ({facts['distribution_release']})"
    assert f"[WARNING]: one runs {found}, which webrtc-edge does not test (it supports Debian 12 (bookworm), " \
           "Debian 13 (trixie))" in out, out


# -- the firewall's lock-out guard ------------------------------------------------
# Ansible runs here with a local connection, the controller being this machine: SSH_CONNECTION
# in its environment is what an operator logged in over SSH would have (the role reads it
# from Ansible's environment, or a parent's). Port 2222 keeps this machine's own SSH sessions,
# if any, out of it.
SSH_FROM_ELSEWHERE = {"SSH_CONNECTION": "203.0.113.7 50022 192.0.2.1 2222"}
ONE_HOST = {g: {"one": None} for g in ("signaling_app", "proxy", "redis", "turn")}


def test_firewall_keeps_ssh_open_to_the_controller(tmp_path):
    inv = _inventory(tmp_path, ONE_HOST, firewall_ssh_port=2222, firewall_ssh_allow=["198.51.100.0/24"])
    rc, out, shown = _play(tmp_path, inv, **SSH_FROM_ELSEWHERE)
    assert rc == 0, out
    model = shown["Firewall"]["one"]
    (ssh,) = model["ssh"]
    assert (ssh["ports"], ssh["ipv4"]) == (["2222"], ["198.51.100.0/24", "203.0.113.7"])
    # Every tier of the host, each from where the issue says.
    comments = [r["comment"] for r in model["rules"]]
    assert comments[:4] == ["proxy: http, https", "turn: TURN", "turn: TURN", "turn: relayed media"]
    assert "signaling_app: the instances, from the proxies" in comments
    assert "redis: from the app hosts" in comments


@pytest.mark.parametrize(
    ("all_vars", "message"),
    [
        pytest.param(
            {"firewall_ssh_port": 2222, "firewall_ssh_allow_controller": False,
             "firewall_ssh_allow": ["198.51.100.0/24"]},
            "The firewall would lock the operator out of one: its new ruleset drops new SSH connections from "
            "203.0.113.7 to port 2222",
            id="controller-not-allowed",
        ),
        pytest.param(
            {"firewall_ssh_port": 22},
            "drops new SSH connections from 203.0.113.7 to port 2222",
            id="sshd-on-another-port",
        ),
        pytest.param(
            {"firewall_ssh_port": 2222, "firewall_allow": [{"port": 8443, "from": ["10.0.0.5/24"]}]},
            "firewall_allow[0].from[0] has host bits set: '10.0.0.5/24' (the network is 10.0.0.0/24)",
            id="bad-firewall-allow",
        ),
        pytest.param(
            {"firewall_ssh_port": 2222, "firewall_extra_rules": ["tcp dport 80 accept; flush ruleset"]},
            "firewall_extra_rules[0] must be one rule on one line",
            id="bad-extra-rule",
        ),
    ],
)
def test_firewall_refuses_before_anything_changes(tmp_path, all_vars, message):
    rc, out, _ = _play(tmp_path, _inventory(tmp_path, ONE_HOST, **all_vars), **SSH_FROM_ELSEWHERE)
    assert rc != 0
    assert message in out


def test_turn_host_of_its_own_may_serve_tls_on_443(tmp_path):
    """A TURN host that is no proxy: 443 is free, its certificate names it by default."""
    inv = _inventory(tmp_path, {"signaling_app": {"a1": {"signaling_app_instances": 1}}, "proxy": {"a1": None},
                                "turn": {"t1": {"coturn_tls_port": 443}}})
    rc, out, _ = _run(tmp_path, inv)
    assert rc == 0, out


def test_check_mode_writes_no_secret(tmp_path):
    """The preflight publishes the Redis URL and the TURN secret; in --check it makes up no secret
    on the controller (the first real run generates them), and reads those already there."""
    groups = {g: {"one": None} for g in ("signaling_app", "proxy", "redis", "turn")}
    rc, out, _ = _run(tmp_path, _inventory(tmp_path, groups))
    assert rc == 0, out
    assert not (tmp_path / "credentials").exists()

    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "redis_password").write_text("KeptRedisPassword0123456789abcdef\n")
    (tmp_path / "credentials" / "turn_secret").write_text("KeptTurnSecret0123456789abcdef\n")
    rc, out, _ = _run(tmp_path, _inventory(tmp_path, groups))
    assert rc == 0, out
    assert sorted(p.name for p in (tmp_path / "credentials").iterdir()) == ["redis_password", "turn_secret"]
    assert (tmp_path / "credentials" / "redis_password").read_text() == "KeptRedisPassword0123456789abcdef\n"
