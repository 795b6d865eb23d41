"""resilience scenario: faults under load, and nothing lost.

Converge deploys the cluster topology (proxy, two app hosts with two instances
each, Redis) with site.yml. verify then runs, in one module-scoped fixture
(``run``), a load driver that keeps ``PEERS`` signaling peers (WebSocket, and
``POLLING_SHARE`` of them long-polling) talking in rooms through the proxy,
each sending numbered messages every ``INTERVAL`` seconds, while the faults
below happen one after the other, ``CLEAN_S`` seconds of clean traffic apart:

1. ``kill``: one app instance gets SIGKILL (``systemctl kill -s SIGKILL``);
   nothing but systemd (``Restart=``) brings it back;
2. ``reload-1``, ``reload-2``: the proxy reloads its configuration
   (``nginx -s reload`` / ``apachectl graceful``);
3. ``redis``: ``systemctl restart redis-server`` (or ``valkey-server``) on the Redis host;
4. ``upgrade``: playbooks/app.yml rolls a new release (a copy of app/ with its
   version bumped, molecule/common/releases.py) over both app hosts, one instance at
   a time.

The load lasts at least ``MIN_LOAD_S`` seconds; then the peers stop sending,
everything settles, and the driver compares what every receiver got with what
every sender sent. The tests prove, one property each:

* each fault happened: the killed instance came back with a new PID and a
  higher ``NRestarts`` (systemd restarted it on its own) and listens again;
  each reload replaced the proxy's workers (nginx: new worker PIDs; Apache:
  a new configuration generation on its status page); Redis runs with a new
  PID; every instance reports the new version on /health;
* the faults reached the peers (some resumed) and the load was the full one
  for the full time;
* no message was lost, none was delivered twice, each sender's order was kept
  at each receiver, every peer is back in its room with its id, and the
  driver found nothing else wrong (no ``seq`` gap, no error but those that
  ask for a resend, no message left unconfirmed).

One run proves both proxies on the same hosts, nginx first (as converge deployed
it), then Apache: before Apache's load, site.yml runs again with
``proxy_server=apache`` (the switch ``make deploy PROXY=apache`` makes), which
also puts release N back. ``MOLECULE_PROXY=nginx|apache`` runs one proxy only
(converge then deploys that one).

The figures (messages sent, delivered, lost, duplicated, resumes, the longest
time any peer could not send, each fault's timing) are printed (``-s``) and
written to molecule/artifacts/<label>/resilience-<proxy>.json (the run's label,
e.g. resilience-trixie: tests/tools/run-scenario.sh).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from deployment_checks import _FETCH_ON_HOST, SITE_NAME, STATUS_PORT, artifacts_dir
from load_driver import Load
from releases import app_copy, bumped, release_n, run_playbook
from testinfra_helpers import (
    container_address,
    cpu_first,
    instance_ports,
    inventory_host,
    inventory_hosts,
    published_port,
    redis_flavour,
    run_ca_file,
    wait_for_spare_cpu,
)

# Controller-side: the whole run happens once, whatever the host.
testinfra_hosts = inventory_hosts("proxy")
# The run (connecting the peers, >= 3 minutes of load, a rolling upgrade, settling)
# outlasts molecule/pytest.ini's per-test timeout of 300 s.
pytestmark = pytest.mark.timeout(1800)

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
# RESILIENCE_PEERS: fewer peers, for a quicker run while developing (the issue asks for 1,000).
PEERS = int(os.environ.get("RESILIENCE_PEERS", "1000"))
POLLING_SHARE = 0.1
ROOM_SIZE = 10
INTERVAL = 1.0  # seconds between a peer's messages
MIN_LOAD_S = 180  # the faults happen within at least this much load
CLEAN_S = 8  # seconds of clean traffic before, between and after the faults
FAULT_TIMEOUT = 90  # seconds a fault's effect (a unit back, new workers) may take to show
# Seconds for 1,000 peers to connect and deliver their first messages: 20-60 s alone, more
# beside another scenario's converge (make test runs two at a time).
FLOWING_TIMEOUT = 300
# At most this long for half the host's CPU to be spare before each load: longer waits only
# move the time to the other run's converge, which may outlast any bound (CI ran out of time).
SPARE_CPU_WAIT_S = 120
# The load driver's nice during the load: ahead of the other run's host-side work, and still one
# thread, so at most one core of the two.
LOAD_NICE = -5
APP_PLAYBOOK = "playbooks/app.yml"
RELOAD = {"nginx": "nginx -s reload", "apache": "apachectl graceful"}
# The proxies the run proves, in order: both on the same hosts, or MOLECULE_PROXY's alone.
PROXIES = [os.environ["MOLECULE_PROXY"]] if os.environ.get("MOLECULE_PROXY") else ["nginx", "apache"]

# Lists the children of the process whose PID is argv[1]: "PID command line" per line.
# The test hosts have python3 but no ps.
_CHILDREN = r"""
import os, sys
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
        cmdline = open(f"/proc/{pid}/cmdline").read().replace("\0", " ").strip()
    except OSError:
        continue
    if stat.rsplit(")", 1)[1].split()[1] == sys.argv[1]:
        print(pid, cmdline)
"""


@dataclass
class Fault:
    """One fault: when it started (seconds into the load), how long until its effect showed, and the evidence."""

    name: str
    at_s: float = 0.0
    took_s: float | None = None  # None: the effect never showed within FAULT_TIMEOUT
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """What the test judges: the load's report and problems, and the faults."""

    proxy: str
    version: str  # the release the upgrade rolled out
    load_s: float  # from the load flowing to the peers stopping
    report: dict[str, Any]
    problems: list[str]
    faults: dict[str, Fault]


# -- looking at the hosts ------------------------------------------------------


def unit_state(host, unit: str) -> dict[str, str]:
    """``systemctl show``'s MainPID, NRestarts, ActiveState and Restart of ``unit``."""
    out = host.check_output(f"systemctl show -p MainPID -p NRestarts -p ActiveState -p Restart {unit}")
    return dict(line.split("=", 1) for line in out.splitlines())


def instance_health(app_name: str, port: int) -> dict | None:
    """An instance's /health at its container's address, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{container_address(app_name)}:{port}/health", timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def nginx_workers(proxy) -> set[int]:
    """PIDs of nginx's serving workers (not those still shutting down after a reload)."""
    master = proxy.check_output("systemctl show -p MainPID --value nginx")  # wherever its pid file is
    lines = proxy.check_output("python3 -c %s %s", _CHILDREN, master).splitlines()
    return {int(line.split()[0]) for line in lines
            if "worker process" in line and "shutting down" not in line}


def apache_generation(proxy) -> int:
    """Apache's configuration generation, from its status page (its loopback port, proxy_status_port)."""
    out = proxy.check_output("python3 -c %s %s", _FETCH_ON_HOST, f"http://127.0.0.1:{STATUS_PORT}/server-status?auto")
    return int(next(line.split(":")[1] for line in out.splitlines()
                    if line.startswith("ParentServerConfigGeneration:")))


def wait_for(check: Callable[[], Any], timeout: float = FAULT_TIMEOUT) -> tuple[Any, float | None]:
    """Call ``check`` until it returns something true; return it and the seconds it took (None: never)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        value = check()
        if value:
            return value, round(time.monotonic() - started, 3)
        time.sleep(0.5)
    return None, None


# -- the faults (blocking: the load runs them in a thread) ------------------------


def kill_instance(fault: Fault, app_name: str, port: int) -> None:
    """SIGKILL one instance; wait for systemd to start a new process that serves /health."""
    app, unit = inventory_host(app_name), f"signaling@{port}.service"
    fault.before = {"instance": f"{app_name}:{port}", **unit_state(app, unit)}
    app.check_output(f"systemctl kill -s SIGKILL {unit}")

    def back() -> dict | None:
        state = unit_state(app, unit)
        if state["ActiveState"] == "active" and state["MainPID"] not in ("0", fault.before["MainPID"]):
            return state if instance_health(app_name, port) else None
        return None

    after, fault.took_s = wait_for(back)
    fault.after = after or unit_state(app, unit)


def reload_proxy(fault: Fault, proxy_name: str, kind: str) -> None:
    """Reload the proxy; wait until its workers are new (nginx) or its generation moved on (Apache)."""
    proxy = inventory_host(proxy_name)
    if kind == "nginx":
        fault.before = {"workers": sorted(nginx_workers(proxy))}
        proxy.check_output(RELOAD[kind])
        old = set(fault.before["workers"])

        def renewed() -> bool:
            workers = nginx_workers(proxy)
            return bool(workers) and workers.isdisjoint(old)

        _, fault.took_s = wait_for(renewed)
        fault.after = {"workers": sorted(nginx_workers(proxy))}
    else:
        fault.before = {"generation": apache_generation(proxy)}
        proxy.check_output(RELOAD[kind])
        _, fault.took_s = wait_for(lambda: apache_generation(proxy) > fault.before["generation"])
        fault.after = {"generation": apache_generation(proxy)}


def restart_redis(fault: Fault, redis_name: str) -> None:
    """Restart Redis (or Valkey); wait until it runs again under a new PID."""
    redis = inventory_host(redis_name)
    unit = redis_flavour(redis)["unit"]
    fault.before = unit_state(redis, unit)
    redis.check_output(f"systemctl restart {unit}")
    def back() -> dict | None:
        state = unit_state(redis, unit)
        return state if state["ActiveState"] == "active" and state["MainPID"] != fault.before["MainPID"] else None

    after, fault.took_s = wait_for(back)
    fault.after = after or unit_state(redis, unit)


def instance_versions() -> dict[str, str | None]:
    """``app host:port`` -> the version on its /health, for every instance."""
    return {
        f"{name}:{port}": (instance_health(name, port) or {}).get("version")
        for name in inventory_hosts("signaling_app")
        for port in instance_ports(inventory_host(name))
    }


# -- the run ---------------------------------------------------------------------------


async def under_load(proxy_kind: str, source: Path) -> tuple[Load, float, dict[str, Fault]]:
    """Start the load, run the faults in order with clean traffic between them, settle."""
    proxy_name = inventory_hosts("proxy")[0]
    app_name = inventory_hosts("signaling_app")[0]
    kill_port = (await asyncio.to_thread(instance_ports, inventory_host(app_name)))[0]
    faults = {name: Fault(name) for name in ("kill", "reload-1", "reload-2", "redis", "upgrade")}
    steps: dict[str, Callable[[Fault], None]] = {
        "kill": lambda f: kill_instance(f, app_name, kill_port),
        "reload-1": lambda f: reload_proxy(f, proxy_name, proxy_kind),
        "reload-2": lambda f: reload_proxy(f, proxy_name, proxy_kind),
        "redis": lambda f: restart_redis(f, inventory_hosts("redis")[0]),
    }
    base = f"https://{SITE_NAME}:{published_port(proxy_name, 443)}"
    load = Load(base=base, cafile=str(run_ca_file()), peers=PEERS, polling_share=POLLING_SHARE,
                room_size=ROOM_SIZE, interval=INTERVAL)
    async with load:
        await load.flowing(timeout=FLOWING_TIMEOUT)
        started = time.monotonic()
        for name, step in steps.items():
            await asyncio.sleep(CLEAN_S)
            faults[name].at_s = round(time.monotonic() - started, 3)
            await asyncio.to_thread(step, faults[name])
        await asyncio.sleep(CLEAN_S)

        upgrade = faults["upgrade"]
        upgrade.at_s = round(time.monotonic() - started, 3)
        upgrade.before = await asyncio.to_thread(instance_versions)
        await run_playbook(APP_PLAYBOOK, EPHEMERAL / "resilience-upgrade.log",
                           f"signaling_app_source_dir={source}",
                           # N+1's wheelhouse belongs to this run, not the repo's cache.
                           f"signaling_app_wheelhouse_cache={EPHEMERAL / 'wheelhouse'}")
        upgrade.took_s = round(time.monotonic() - started - upgrade.at_s, 3)
        upgrade.after = await asyncio.to_thread(instance_versions)

        await asyncio.sleep(max(CLEAN_S, MIN_LOAD_S - (time.monotonic() - started)))
        load_s = round(time.monotonic() - started, 3)
        await load.settle(timeout=60)
    return load, load_s, faults


def deployed_proxy() -> str:
    """The proxy running on the proxy host now: nginx, or apache after a switch."""
    proxy = inventory_host(inventory_hosts("proxy")[0])
    return "apache" if proxy.service("apache2").is_running else "nginx"


@pytest.fixture(scope="module", params=PROXIES)
def run(request) -> Run:
    kind = request.param
    # Apache after nginx, or a second verify: switch the proxy and put release N back, as an
    # operator would, with site.yml.
    if deployed_proxy() != kind or set(instance_versions().values()) != {release_n()}:
        asyncio.run(run_playbook("site.yml", EPHEMERAL / f"deploy-{kind}.log", f"proxy_server={kind}"))
    assert deployed_proxy() == kind, f"site.yml -e proxy_server={kind} left {deployed_proxy()} running"
    version = bumped(release_n())
    source = app_copy(EPHEMERAL / "app-next", version)
    # The load's 1,000 peers need a core of their own: not beside another run's converge. Wait
    # a while for one; then the scenario's containers and the load's event loop come first for
    # the CPU (a peer starved of it beside another run's checks once missed its resume window).
    spare = wait_for_spare_cpu(0.5, within=SPARE_CPU_WAIT_S)
    print(f"\nspare CPU before the load: {spare:.0%}")
    with cpu_first(nice=LOAD_NICE):
        load, load_s, faults = asyncio.run(under_load(kind, source))
    result = Run(proxy=kind, version=version, load_s=load_s, report=load.report(), problems=load.problems(),
                 faults=faults)
    artifact = artifacts_dir() / f"resilience-{kind}.json"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"\nresilience ({kind}), {load_s} s of load: {json.dumps(result.report)}")
    for fault in faults.values():
        print(f"  {fault.name}: at {fault.at_s} s, took {fault.took_s} s; {fault.before} -> {fault.after}")
    print(f"  {len(result.problems)} problems{': ' if result.problems else ''}" + "; ".join(result.problems[:20]))
    print(f"  written to {artifact}")
    return result


# -- the faults happened ------------------------------------------------------------


def test_killed_instance_restarted_by_systemd(run):
    fault = run.faults["kill"]
    assert fault.took_s is not None, f"{fault.before['instance']} not back within {FAULT_TIMEOUT} s: {fault.after}"
    assert fault.before["Restart"] in ("on-failure", "on-abnormal", "always"), fault.before
    assert fault.after["MainPID"] != fault.before["MainPID"]
    # NRestarts counts only restarts systemd made by itself (Restart=), not a `systemctl start`.
    assert int(fault.after["NRestarts"]) > int(fault.before["NRestarts"]), (fault.before, fault.after)


@pytest.mark.parametrize("name", ["reload-1", "reload-2"])
def test_proxy_reloaded(run, name):
    fault = run.faults[name]
    assert fault.took_s is not None, f"{run.proxy} did not reload within {FAULT_TIMEOUT} s: {fault}"
    if run.proxy == "nginx":
        assert fault.after["workers"] and not set(fault.after["workers"]) & set(fault.before["workers"])
    else:
        assert fault.after["generation"] > fault.before["generation"]


def test_redis_restarted(run):
    fault = run.faults["redis"]
    assert fault.took_s is not None, f"Redis not back within {FAULT_TIMEOUT} s: {fault.after}"
    assert fault.after["MainPID"] != fault.before["MainPID"]


def test_every_instance_runs_the_new_release(run):
    before, after = run.faults["upgrade"].before, run.faults["upgrade"].after
    assert len(after) == 4, after
    assert set(before.values()) == {release_n()}, before
    assert set(after.values()) == {run.version}, after


def test_faults_spread_over_three_minutes_of_load(run):
    assert run.load_s >= MIN_LOAD_S
    starts = [f.at_s for f in run.faults.values()]
    assert starts == sorted(starts) and starts[0] >= CLEAN_S, starts


# -- the load, and what it saw ----------------------------------------------------------


def test_every_peer_took_part(run):
    assert run.report["peers"] == PEERS, run.report


def test_faults_reached_the_peers(run):
    assert run.report["resumes"] > 0, "no peer was ever sent away, so the faults proved nothing on them"


def test_no_message_lost(run):
    assert run.report["sent"] > 0
    assert run.report["lost"] == 0, run.problems[:20]


def test_no_message_duplicated(run):
    assert run.report["duplicated"] == 0, run.problems[:20]


def test_order_kept_per_sender(run):
    assert run.report["out_of_order"] == 0, run.problems[:20]


def test_every_peer_back_in_its_room_with_its_id(run):
    assert run.report["not_back_in_room"] == 0, run.problems[:20]


def test_nothing_else_wrong(run):
    """Whatever else the driver flags: seq gaps, errors other than "retry", messages never confirmed."""
    assert not run.problems, run.problems[:20]
