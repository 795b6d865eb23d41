"""The monitoring role's Prometheus config, rendered by Ansible from an inventory, passes
promtool and scrapes what the inventory says: every app instance at its endpoint, each
exporter on the hosts of its groups (detection off: the controller runs no exporter; with
detection on, an exporter that is not installed is not scraped), the jobs of the kit's
scrape.yml. The preflight names a bad setting, and refuses app instances bound to loopback on
another host than the monitoring host."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
RULES = ROOT / "monitoring" / "prometheus" / "rules" / "webrtc-edge.yml"

INVENTORY = {
    "all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "children": {
            "signaling_app": {"hosts": {
                "app1": {"signaling_app_endpoints": [{"address": "10.0.0.11", "port": 8081},
                                                     {"address": "10.0.0.11", "port": 8082}]},
                "app2": {"signaling_app_endpoints": [{"address": "10.0.0.12", "port": 8081}]},
            }},
            "proxy": {"hosts": {"edge1": {}}},
            "redis": {"hosts": {"redis1": {}}},
            "monitoring": {"hosts": {"prom1": {}}},
        },
    },
}


def _play(tmp_path: Path, extra: dict, inventory: dict = INVENTORY) -> subprocess.CompletedProcess:
    """Run tmp_path/play.yml on ``inventory`` (every host local) with ``extra`` variables."""
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml"),
         "-e", json.dumps({"__monitoring_rules": str(RULES), **extra})],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
             "ANSIBLE_CACHE_PLUGIN": "memory", "HOME": str(tmp_path)},
    )


def _render(tmp_path: Path, detect: bool) -> dict:
    out = tmp_path / "prometheus.yml"
    playbook = [{
        "name": "Facts", "hosts": "all", "gather_facts": True, "gather_subset": ["!all", "network"],
    }, {
        "name": "Render the monitoring role's config",
        "hosts": "monitoring",
        "gather_facts": False,
        "tasks": [
            {"ansible.builtin.include_role": {"name": "monitoring", "tasks_from": "preflight.yml", "public": True}},
            {"ansible.builtin.include_role": {"name": "monitoring", "tasks_from": "targets.yml", "public": True},
             "vars": {"monitoring_exporters_detect": detect}},
            {"ansible.builtin.template": {"src": str(ROOT / "roles/monitoring/templates/prometheus.yml.j2"),
                                          "dest": str(out), "mode": "0600"},
             "vars": {"monitoring_exporters_detect": detect}},
        ],
    }]
    (tmp_path / "play.yml").write_text(json.dumps(playbook))
    proc = _play(tmp_path, {})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install Debian's `prometheus` package (bash tests/setup-host.sh)"
    check = subprocess.run([promtool, "check", "config", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return yaml.safe_load(out.read_text())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return {detect: _render(tmp_path_factory.mktemp(f"detect-{detect}"), detect) for detect in (False, True)}


def _targets(config: dict, job: str) -> dict[str, list[str]]:
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    return {c["labels"]["host"]: c["targets"] for c in jobs[job]["static_configs"]}


def test_app_instances_from_the_endpoints(rendered):
    for config in rendered.values():
        assert _targets(config, "webrtc_edge_app") == {"app1": ["10.0.0.11:8081", "10.0.0.11:8082"],
                                                       "app2": ["10.0.0.12:8081"]}


def test_exporters_on_the_hosts_of_their_groups(rendered):
    config = rendered[False]
    assert set(_targets(config, "webrtc_edge_node")) == {"app1", "app2", "edge1", "redis1"}
    assert set(_targets(config, "webrtc_edge_nginx")) == set(_targets(config, "webrtc_edge_apache")) == {"edge1"}
    assert set(_targets(config, "webrtc_edge_redis")) == {"redis1"}
    assert all(t[0].endswith(":9121") for t in _targets(config, "webrtc_edge_redis").values())


def test_detection_scrapes_only_installed_exporters(rendered):
    """The controller runs none of Debian's exporters, so with detection no host has one."""
    installed = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status} ", "prometheus-node-exporter",
                                "prometheus-nginx-exporter", "prometheus-apache-exporter", "prometheus-redis-exporter"],
                               capture_output=True, text=True).stdout
    if "installed" in installed.split():
        pytest.skip("an exporter is installed on this controller")
    for job in ("webrtc_edge_node", "webrtc_edge_nginx", "webrtc_edge_apache", "webrtc_edge_redis"):
        assert _targets(rendered[True], job) == {}


def test_same_jobs_as_the_kits_scrape_config(rendered):
    kit = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "scrape.yml").read_text())
    kit_jobs = {j["job_name"] for j in kit["scrape_configs"]}
    assert {j["job_name"] for j in rendered[False]["scrape_configs"]} == kit_jobs | {"prometheus"}
    assert rendered[False]["rule_files"] == [str(RULES)]


def _preflight_play(tmp_path: Path) -> None:
    playbook = [{"name": "Preflight", "hosts": "monitoring", "gather_facts": False, "tasks": [
        {"ansible.builtin.include_role": {"name": "monitoring", "tasks_from": "preflight.yml"}}]}]
    (tmp_path / "play.yml").write_text(json.dumps(playbook))


@pytest.mark.parametrize(("extra", "message"), [
    ({"monitoring_listen_address": "9090"}, "monitoring_listen_address must be ADDRESS:PORT (got '9090')"),
    ({"monitoring_retention_size": "2G"}, "got '2G'"),
])
def test_preflight_names_bad_settings(tmp_path, extra, message):
    _preflight_play(tmp_path)
    proc = _play(tmp_path, extra)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout[-3000:]


def test_preflight_refuses_loopback_instances_on_another_host(tmp_path):
    """An app host bound to loopback cannot be scraped from a separate monitoring host."""
    _preflight_play(tmp_path)
    inventory = json.loads(json.dumps(INVENTORY))
    app2 = inventory["all"]["children"]["signaling_app"]["hosts"]["app2"]
    app2["signaling_app_endpoints"][0]["address"] = "127.0.0.1"
    proc = _play(tmp_path, {}, inventory)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "the app instances of app2 listen on loopback only" in proc.stdout, proc.stdout[-3000:]
