"""Helpers for the testinfra suites of every Molecule scenario.

Importable from any ``molecule/<scenario>/tests/test_*.py`` as
``from testinfra_helpers import ...`` (``pythonpath`` in molecule/pytest.ini).

Tests reach the test hosts only through ports published on 127.0.0.1
(``published_port``) or the containers' own addresses (``container_address``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import testinfra
import testinfra.utils.ansible_runner
import yaml


def inventory_hosts(pattern: str = "all") -> list[str]:
    """Names of the scenario's hosts matching ``pattern``, for ``testinfra_hosts``.

    At module level: ``testinfra_hosts = inventory_hosts("proxy")``. Read from the inventory
    directory, so the extra sources a scenario adds (the apache scenario's ``monitoring``
    group) count as they do for ansible-playbook.
    """
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    return testinfra.utils.ansible_runner.AnsibleRunner(inventory).get_hosts(pattern)


def inventory_host(name: str):
    """A testinfra ``Host`` for inventory host ``name`` (Ansible backend).

    For fixtures that need a host of a given group whatever ``testinfra_hosts``
    the test module targets: ``inventory_host(inventory_hosts("proxy")[0])``.
    """
    return testinfra.get_host(
        f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"]
    )


def run_credentials_dir() -> Path:
    """Controller-side secrets and the local CA of this Molecule run.

    The scenarios point ``tls_ca_dir``, ``redis_credentials_dir`` and
    ``coturn_credentials_dir`` here (see molecule/default/molecule.yml), so each
    run has its own and the repo's credentials/ stays untouched.
    """
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "credentials"


def run_ca_file() -> Path:
    """The run's local CA certificate, trust anchor of what the proxy serves."""
    return run_credentials_dir() / "tls-ca" / "ca.pem"


def assert_unit_up(host, unit: str) -> None:
    """Assert ``unit`` is enabled and running on ``host``.

    On failure it prints the unit's journal, then re-raises, so the report
    says why and not only that.
    """
    service = host.service(unit)
    try:
        assert service.is_enabled, f"{unit} is not enabled"
        assert service.is_running, f"{unit} is not running"
    except AssertionError:
        print(f"--- journal of {unit} on {host.backend.get_pytest_id()} ---")
        print(host.run(f"journalctl --no-pager -n 50 -u {unit}").stdout)
        raise


@functools.cache
def redis_flavours() -> dict[str, dict]:
    """The redis role's table of servers (``__redis_flavours`` in roles/redis/vars/main.yml): by
    name, ``redis`` or ``valkey``, its packages, ``unit``, ``server`` and ``cli`` binaries,
    ``user``, ``config_dir``, ``main_config``, ``data_dir``, ``log_dir``, ``run_dir`` and
    ``debian_min``. The one table the role and the checks share."""
    path = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "roles" / "redis" / "vars" / "main.yml"
    return yaml.safe_load(path.read_text())["__redis_flavours"]


def redis_flavour(host) -> dict:
    """The row of the server the redis role deployed on ``host`` (Redis or Valkey), with its
    name under ``name``: the one whose unit is enabled (a switch disables the other).

    Checks name ``redis_flavour(host)["unit"]``, ``["cli"]``, ``["config_dir"]`` ... instead of
    redis-server's names, so that they hold for either server."""
    # `systemctl is-enabled` itself: testinfra's is_enabled raises for a unit that does not exist.
    enabled = [name for name, row in redis_flavours().items()
               if host.run(f"systemctl is-enabled --quiet {row['unit']}").rc == 0]
    assert len(enabled) == 1, f"{host.backend.get_pytest_id()}: enabled Redis units: {enabled or 'none'}"
    return {"name": enabled[0], **redis_flavours()[enabled[0]]}


def redis_server_expected(host) -> str:
    """What the redis role chooses on a fresh ``host``: the inventory's ``redis_server``, else
    Valkey on Debian 13 and later, Redis on Debian 12 (roles/redis/README.md, "Redis or Valkey")."""
    chosen = host.ansible.get_variables().get("redis_server")
    if chosen:
        return chosen
    release = int(host.check_output(". /etc/os-release && echo $VERSION_ID").split(".")[0])
    return "valkey" if release >= redis_flavours()["valkey"]["debian_min"] else "redis"


def instance_ports(host) -> list[int]:
    """Ports of ``host``'s ``signaling@PORT`` units (loaded or not), in order."""
    units = host.check_output(
        "systemctl list-units --all --plain --no-legend --type=service 'signaling@*' | cut -d' ' -f1"
    ).split()
    return sorted(int(u.removeprefix("signaling@").removesuffix(".service")) for u in units)


def _inspect(container: str) -> dict:
    out = subprocess.run(
        ["docker", "container", "inspect", container],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)[0]


def published_port(container: str, port: int, proto: str = "tcp") -> int:
    """The port on 127.0.0.1 where ``container`` publishes ``port``.

    Platforms publish as ``127.0.0.1::PORT``: Docker picks the host port, so
    runs never collide with each other or with the machine's own services.
    """
    bindings = _inspect(container)["NetworkSettings"]["Ports"].get(f"{port}/{proto}")
    loopback = [b for b in bindings or [] if b["HostIp"] == "127.0.0.1"]
    if not loopback:
        raise LookupError(
            f"{container} does not publish {port}/{proto} on 127.0.0.1: {bindings}"
        )
    return int(loopback[0]["HostPort"])


def container_address(container: str) -> str:
    """The IPv4 address of ``container`` on its (first) network."""
    networks = _inspect(container)["NetworkSettings"]["Networks"]
    return next(n["IPAddress"] for n in networks.values() if n["IPAddress"])


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of this machine's CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user..steal


def wait_for_spare_cpu(share: float = 0.5, within: float = 600, window: float = 2.0) -> float:
    """Wait until at least ``share`` of this machine's CPU time was idle over ``window`` seconds,
    for at most ``within`` seconds; return the idle share last measured.

    For checks that time a load they make themselves against the service's answers: make test
    runs two scenarios at a time on 2 cores, and another run's converge leaves no spare core for
    the load and the peers it must not slow. /proc/stat counts the whole host (the test hosts are
    containers on it). Past ``within`` the check measures anyway, and says what it saw.
    """
    deadline = time.monotonic() + within
    while True:
        idle0, total0 = _cpu_times()
        time.sleep(window)
        idle1, total1 = _cpu_times()
        idle = (idle1 - idle0) / max(total1 - total0, 1)
        if idle >= share or time.monotonic() >= deadline:
            return idle


# Held by every cpu_first block on this machine (Molecule runs two scenarios at a time).
LOAD_LOCK = "/tmp/webrtc-edge-load-timed.lock"
# Docker's default CPU weight (cgroup v1 cpu.shares; v2 maps it to cpu.weight 100-ish).
DEFAULT_CPU_SHARES = 1024


@contextlib.contextmanager
def cpu_first(containers: Iterable[str] | None = None, shares: int = 8 * DEFAULT_CPU_SHARES,
              nice: int | None = None) -> Iterator[None]:
    """Within the block, the scenario's containers (default: every inventory host) weigh
    ``shares`` against other containers for the CPU, then Docker's default again; with ``nice``,
    the calling thread (a load driver's event loop) runs at that nice value, then at its own.

    For checks that time the service under a load they make themselves: beside another
    scenario's converge (make test runs two at a time) the service and its load then get most
    of the CPU when they want it, and the other run the rest; nobody waits for a core to be
    spare; and one such block runs at a time on the machine (LOAD_LOCK), so two loads never
    meet. `docker update --cpu-shares` (no restart); a nice below 0 needs root (else ignored).
    """
    names = list(containers) if containers is not None else inventory_hosts("all")
    # One such block on the machine at a time: two loads put first would starve each other (a
    # flood through Apache beside resilience's 1,000 peers slowed its quiet peers 3-5x).
    with open(LOAD_LOCK, "a") as lock:  # closing it releases the flock
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["docker", "update", "--cpu-shares", str(shares), *names], check=True, capture_output=True)
        was = os.getpriority(os.PRIO_PROCESS, 0)  # Linux: the calling thread's
        if nice is not None:
            with contextlib.suppress(PermissionError):
                os.setpriority(os.PRIO_PROCESS, 0, nice)
        try:
            yield
        finally:
            with contextlib.suppress(PermissionError):
                os.setpriority(os.PRIO_PROCESS, 0, was)
            subprocess.run(["docker", "update", "--cpu-shares", str(DEFAULT_CPU_SHARES), *names], check=True,
                           capture_output=True)


def ansible_playbook(playbook: str, *extra: str, check: bool = False, diff: bool = False,
                     env: dict[str, str] | None = None, log: Path | None = None, timeout: float = 1800) -> str:
    """ansible-playbook on the scenario's inventory, from the project, ``-e`` each of ``extra``: its output.

    Uncoloured (Molecule forces colour on), with ``env`` added to the environment; the whole
    output also goes to ``log`` when given. Fails with ``playbook_failure``'s summary.
    """
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent  # with its group_vars/
    argv = ["ansible-playbook", "-i", str(inventory), playbook, *(["--check"] if check else []),
            *(["--diff"] if diff else [])]
    for var in extra:
        argv += ["-e", var]
    proc = subprocess.run(argv, cwd=os.environ["MOLECULE_PROJECT_DIRECTORY"], capture_output=True, text=True,
                          env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", **(env or {})},
                          timeout=timeout, check=False)
    output = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(output)
    assert proc.returncode == 0, (f"(whole output: {log})\n" if log else "") + playbook_failure(argv, output)
    return proc.stdout


def changed_per_host(output: str) -> dict[str, int]:
    """Each host's ``changed=`` count in an ansible-playbook run's PLAY RECAP (empty: no recap)."""
    return {host: int(n) for host, n in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)}


def playbook_failure(argv: list[str], output: str) -> str:
    """What a failed ansible-playbook run says about its failure, for an assertion message.

    The command, then each failed task (its ``TASK`` line and the ``fatal:`` or ``failed:``
    result, with the lines that follow it, up to the next task), then the recap. A CI log
    shows the message and rarely the whole output, whose tail is only the task timings.
    """
    lines = re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines()
    failures, task, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"^(TASK|RUNNING HANDLER) \[", line):
            task = line
        elif re.match(r"^(fatal|failed): \[", line) or line.startswith("ERROR!") or line.startswith("[ERROR]"):
            end = next((j for j in range(i + 1, len(lines))
                        if re.match(r"^(TASK|RUNNING HANDLER|PLAY|NO MORE HOSTS)", lines[j])), len(lines))
            failures.append("\n".join([task, *lines[i:end]])[:3000])
            i = end
            continue
        i += 1
    recap = next((n for n, line in enumerate(lines) if line.startswith("PLAY RECAP")), None)
    summary = lines[recap:recap + 12] if recap is not None else lines[-20:]
    return "\n".join([f"{' '.join(argv)} failed:", *failures[:5], *summary])
