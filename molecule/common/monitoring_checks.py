"""The monitoring role's Prometheus, on a deployed host, seen through its own API.

Group ``monitoring``, which a scenario whose inventory has a `monitoring` group selects with
``--checks`` (molecule/apache; molecule/common/testinfra_plugin.py):

- Prometheus runs on our config (promtool check config passes on the host), listens on
  loopback only, keeps Debian's own config files as shipped;
- every app instance of the inventory is a target of job ``webrtc_edge_app`` and up; each
  exporter of the role's defaults is a target exactly where its Debian package is installed,
  and up there (before the exporters role exists, none is: the check holds either way);
- the kit's alert rules are loaded, all of them, and evaluate without error;
- every expression of the Grafana dashboard evaluates without error on this Prometheus,
  after real traffic through the proxy (sessions, a room's offer, an error reply, a refused
  resume); those about the app whose metrics the app exposes return data;
- an instance stopped on purpose turns WebrtcEdgeInstanceDown pending for it.

The monitoring host(s) come from the inventory directory Molecule writes (testinfra_helpers; the `monitoring`
group is an extra inventory source there, see molecule/apache/molecule.yml).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from deployment_checks import Site, WsPeer, _instances, _stopped, proxy_host, run_async, site  # noqa: F401 (fixtures)
from testinfra_helpers import assert_unit_up, inventory_host, inventory_hosts

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "monitoring" / "grafana"))
from expressions import expressions  # noqa: E402

RULES = REPO / "monitoring" / "prometheus" / "rules" / "webrtc-edge.yml"
ROLE_DEFAULTS = REPO / "roles" / "monitoring" / "defaults" / "main.yml"
API = "http://127.0.0.1:9090/api/v1"

pytestmark = pytest.mark.monitoring  # the group a scenario selects with --checks (testinfra_plugin.py)


@pytest.fixture(scope="module", params=inventory_hosts("monitoring"))
def prom_host(request):
    """Each ``monitoring`` host in turn."""
    return inventory_host(request.param)


def _api(prom_host, path: str, **params) -> dict:
    url = f"{API}/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    body = json.loads(prom_host.check_output(f"curl -sS --max-time 20 {_quote(url)}"))
    assert body["status"] == "success", f"{path} {params}: {body}"
    return body["data"]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _targets(prom_host) -> list[dict]:
    return _api(prom_host, "targets", state="active")["activeTargets"]


def _wait(what: str, check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def _alerts() -> set[str]:
    return {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}


# -- the service ----------------------------------------------------------------------------

def test_prometheus_running(prom_host):
    assert_unit_up(prom_host, "prometheus.service")


def test_prometheus_config_valid_on_the_host(prom_host):
    out = prom_host.check_output("promtool check config /etc/prometheus/webrtc-edge/prometheus.yml 2>&1")
    assert "SUCCESS" in out and "rules found" in out, out


def test_prometheus_listens_on_loopback_only(prom_host):
    sockets = prom_host.check_output("ss -Hltnp | grep '\"prometheus\"' || true").splitlines()
    addresses = {line.split()[3] for line in sockets}
    assert addresses == {"127.0.0.1:9090"}, sockets


def test_debian_files_untouched(prom_host):
    """Debian's conffiles stay as shipped: package upgrades ask nothing."""
    out = prom_host.check_output("dpkg --verify prometheus || true")
    assert "/etc/prometheus/prometheus.yml" not in out and "/etc/default/prometheus" not in out, out


# -- what it scrapes ---------------------------------------------------------------------------

def test_every_app_instance_scraped_and_up(prom_host):
    expected = {f"{f'[{i.address}]' if ':' in i.address else i.address}:{i.port}" for i in _instances()}
    assert expected

    def app_targets() -> dict[str, str]:
        return {t["labels"]["instance"]: t["health"] for t in _targets(prom_host)
                if t["labels"]["job"] == "webrtc_edge_app"}

    _wait("every app target up", lambda: set(app_targets().values()) == {"up"}, timeout=30)
    assert set(app_targets()) == expected


def _exporters() -> list[dict]:
    return yaml.safe_load(ROLE_DEFAULTS.read_text())["monitoring_exporters"]


@pytest.mark.parametrize("exporter", _exporters(), ids=lambda e: e["job"])
def test_exporter_scraped_where_installed(prom_host, exporter):
    """A target on each host of its groups that has the package, none elsewhere; up."""
    expected = set()
    for group in exporter["groups"]:
        for name in inventory_hosts(group):
            host = inventory_host(name)
            if host.package(exporter["package"]).is_installed:
                expected.add(name)
    found = {t["labels"]["host"]: t["health"] for t in _targets(prom_host) if t["labels"]["job"] == exporter["job"]}
    assert set(found) == expected, f"{exporter['job']}: targets {found}, installed on {expected or 'no host'}"
    if expected:
        _wait(f"{exporter['job']} up", lambda: set(
            t["health"] for t in _targets(prom_host) if t["labels"]["job"] == exporter["job"]) == {"up"}, timeout=30)


# -- the rules -----------------------------------------------------------------------------------

def test_alert_rules_loaded_and_healthy(prom_host):
    def rules() -> dict[str, dict]:
        return {r["name"]: r for g in _api(prom_host, "rules", type="alert")["groups"] for r in g["rules"]}

    assert set(rules()) == _alerts()
    _wait("every rule evaluated", lambda: all(r["health"] != "unknown" for r in rules().values()), timeout=30)
    bad = {name: r.get("lastError") for name, r in rules().items() if r["health"] != "ok"}
    assert not bad, bad


# -- the dashboard -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def traffic(prom_host, site):
    """Real traffic through the proxy, then two scrapes with it: what the panels count."""

    async def scenario():
        async with site.session() as session:
            a = await WsPeer.connect(session)
            b = await WsPeer.connect(session)
            await b.send(type="offer", to=a.id, data={"type": "offer", "sdp": "v=0"})
            await a.expect("offer")
            await a.send(type="join", room=f"monitoring-{os.getpid()}", role="host", name="Bo")
            await a.expect("joined")
            await b.ws.send_str("{not json")
            await b.expect("error")
            bad = await session.ws_connect("/ws?resume=" + "x" * 43, heartbeat=None)
            await bad.receive(timeout=10)
            await bad.close()
            await a.ws.close()
            await b.ws.close()

    run_async(scenario())
    config = yaml.safe_load(_api(prom_host, "status/config")["yaml"])
    interval = config["global"]["scrape_interval"]
    assert interval.endswith("s") and not interval.endswith("ms"), interval
    time.sleep(2 * float(interval[:-1]) + 1)


# One command on the host queries every expression (each testinfra command is an Ansible run).
_QUERY_ALL = f"""
import json, sys, urllib.error, urllib.parse, urllib.request
out = {{}}
for expr in json.loads(sys.argv[1]):
    url = "{API}/query?" + urllib.parse.urlencode({{"query": expr}})
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            out[expr] = json.load(resp)
    except urllib.error.HTTPError as exc:
        out[expr] = json.load(exc)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def dashboard_results(prom_host, traffic) -> dict[str, dict]:
    exprs = [e for _, e in expressions()]
    answer = prom_host.run("python3 -c " + _quote(_QUERY_ALL) + " " + _quote(json.dumps(exprs)))
    assert answer.rc == 0, answer.stderr
    return json.loads(answer.stdout)


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    """Metric families one app instance exposes (process_* with prometheus_client's collector)."""
    instance = _instances()[0]
    text = instance.host.check_output(f"curl -sf {instance.url}/metrics")
    return {_base(n) for n in re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE)} | {"up"}


def _base(name: str) -> str:
    return re.sub(r"_(total|bucket|sum|count)$", "", name)


@pytest.mark.parametrize(("title", "expr"), expressions(), ids=[f"{i}-{t}" for i, (t, _) in enumerate(expressions())])
def test_dashboard_expression(dashboard_results, exposed, title, expr):
    """Evaluates without error; about the app (its job), with metrics it exposes: returns data."""
    body = dashboard_results[expr]
    assert body["status"] == "success", f"{title}: {expr}: {body}"
    names = {_base(n) for n in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr)}
    if 'job="webrtc_edge_app"' in expr and names <= exposed:
        assert body["data"]["result"], f"{title}: {expr} returned no data"


# -- an alert on real data ----------------------------------------------------------------------

def test_stopped_instance_turns_instance_down_pending(prom_host, site):
    instance = _instances()[-1]
    target = f"{instance.address}:{instance.port}"

    def state() -> str:
        for alert in _api(prom_host, "alerts")["alerts"]:
            labels = alert["labels"]
            if labels.get("alertname") == "WebrtcEdgeInstanceDown" and labels.get("instance") == target:
                return alert["state"]
        return ""

    _wait(f"no WebrtcEdgeInstanceDown for {target} (left by earlier tests)", lambda: state() == "", timeout=60)
    with _stopped(site, [instance]):
        instance.host.check_output(f"systemctl stop {instance.unit}")
        _wait(f"WebrtcEdgeInstanceDown for {target}", lambda: state() in ("pending", "firing"), timeout=40)
