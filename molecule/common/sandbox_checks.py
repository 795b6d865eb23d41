"""The sandboxes of the units that face the internet (issue 11, section 5): nginx or Apache on
the proxy hosts, coturn on the turn hosts, redis-server or valkey-server on the redis hosts
(issue 14), each with the drop-in ``webrtc-edge-hardening.conf`` of roles/systemd_hardening.

Group ``sandbox``, selected with ``--checks`` (molecule/common/testinfra_plugin.py); the
costlier checks have a group of their own too, which a scenario leaves out with ``and not``:
``sandbox_paths``, ``sandbox_shell``, ``reloads_proxy`` (molecule/default, molecule/apache) and
``switches_sandbox`` (molecule/default only: check mode and the switch). molecule/acme runs the
rating and in-force checks, molecule/cluster those and the paths; molecule/local calls the
helpers from its own tests.

Rated
    ``systemd-analyze security`` of each deployed unit within the issue's targets: nginx and
    Apache 4.0, coturn 3.0; redis-server and valkey-server 2.0 (issue 14).
In force
    the drop-in is loaded, and the running main process has no way to gain privileges
    (NoNewPrivs), a seccomp filter, and exactly the capabilities its role keeps (coturn:
    NET_BIND_SERVICE only where it listens below 1024); seen from the process, /etc, /run and
    Redis's /etc/redis (Valkey's /etc/valkey) cannot be written, the unit's own paths can, and
    its mount table has no other writable mount than those, its private /tmp and the kernel's
    API file systems; coturn and the Redis or Valkey server cannot run a shell.
Still working under it (proxies)
    ``systemctl reload`` keeps the main process and serves; Debian's logrotate configuration run
    with ``logrotate -f`` (nginx: ``invoke-rc.d nginx rotate``, USR1; Apache: ``invoke-rc.d
    apache2 reload``) leaves the proxy writing the new log, same main process, serving; a
    certificate renewed by the tls role (playbooks/tls.yml, its check-then-reload handlers) is
    served after a reload, same main process. The acme scenario renews through Pebble under the
    same drop-in, from certbot.timer's service and its deploy hook (molecule/acme/tests/test_acme.py;
    test_units.py there checks the drop-in is in force).
Switched (molecule/default)
    ``--check`` with the sandbox turned off predicts the change and makes none; turned off for
    real the proxy runs as Debian's unit has it and serves, turned on again it is sandboxed.
"""

from __future__ import annotations

import re
import secrets
import time

import pytest
from cryptography import x509
from deployment_checks import SERVICE, Site
from testinfra_helpers import ansible_playbook, inventory_host, inventory_hosts, redis_flavour, redis_flavours

pytestmark = pytest.mark.sandbox  # the group a scenario selects with --checks (testinfra_plugin.py)

DROPIN = "webrtc-edge-hardening.conf"
# The targets; Redis and Valkey: what issue 14 asks of every unit the toolkit ships.
TARGET = {"nginx.service": 4.0, "apache2.service": 4.0, "coturn.service": 3.0}
# What each main process keeps (the roles' vars/main.yml say why).
CAPABILITIES = {
    "nginx.service": {"net_bind_service", "setuid", "setgid", "dac_override"},
    "apache2.service": {"net_bind_service", "setuid", "setgid", "kill"},
    "coturn.service": set(),
}
# Where each one writes, and a path of its unit it must not write.
WRITABLE = {
    "nginx.service": ["/var/log/nginx", "/var/lib/nginx", "/run/nginx"],
    "apache2.service": ["/var/log/apache2", "/run/apache2", "/run/lock/apache2"],
    "coturn.service": ["/var/lib/turn"],
}
# What coturn and the Redis or Valkey server may execute (their drop-ins' ExecPaths=); systemd 252
# mounts these writable, which a process without capabilities, writing as its own user, cannot use.
EXEC_PATHS = {
    "coturn.service": ["/usr/bin/turnserver", "/usr/bin/kill", "/usr/lib"],
}
READ_ONLY = {
    "nginx.service": ["/etc/nginx", "/etc/webrtc-edge", "/run"],
    "apache2.service": ["/etc/apache2", "/etc/webrtc-edge", "/run"],
    "coturn.service": ["/etc", "/run"],
}
# Redis and Valkey, from the redis role's table: one drop-in, the server's own paths.
for _row in redis_flavours().values():
    TARGET[_row["unit"]] = 2.0
    CAPABILITIES[_row["unit"]] = set()
    WRITABLE[_row["unit"]] = [_row["data_dir"], _row["log_dir"], _row["run_dir"]]
    EXEC_PATHS[_row["unit"]] = [_row["server"], "/usr/lib"]
    READ_ONLY[_row["unit"]] = [_row["config_dir"], "/run"]
# Linux capability numbers (linux/capability.h), for /proc/<pid>/status.
CAP_NAMES = [
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
    "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
    "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
    "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
    "checkpoint_restore",
]
# The access log each proxy writes our site's requests to (Debian's defaults).
ACCESS_LOG = {"nginx.service": "/var/log/nginx/access.log",
              "apache2.service": "/var/log/apache2/other_vhosts_access.log"}
LOGROTATE = {"nginx.service": "/etc/logrotate.d/nginx", "apache2.service": "/etc/logrotate.d/apache2"}


def _sandboxed_units() -> list[tuple[str, str]]:
    """(host, unit) for every sandboxed unit of the scenario's inventory."""
    units = []
    for name in inventory_hosts("proxy"):
        kind = inventory_host(name).ansible.get_variables().get("proxy_server", "nginx")
        units.append((name, f"{SERVICE[kind]}.service"))
    units += [(name, "coturn.service") for name in inventory_hosts("turn")]
    units += [(name, redis_flavour(inventory_host(name))["unit"]) for name in inventory_hosts("redis")]
    return units


UNITS = _sandboxed_units()
PROXY_UNITS = [(name, unit) for name, unit in UNITS if unit in ACCESS_LOG]
unit_params = pytest.mark.parametrize(("name", "unit"), [pytest.param(*u, id=f"{u[0]}:{u[1]}") for u in UNITS])
proxy_params = pytest.mark.parametrize(("name", "unit"), [pytest.param(*u, id=f"{u[0]}:{u[1]}") for u in PROXY_UNITS])


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def exposure(host, unit: str) -> tuple[float, str]:
    """The unit's overall exposure by ``systemd-analyze security``, and its whole report."""
    out = host.check_output(f"systemd-analyze security --no-pager {unit}")
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", out)
    assert match, out
    return float(match.group(1)), out


def main_pid(host, unit: str) -> int:
    pid = int(host.check_output(f"systemctl show -p MainPID --value {unit}"))
    assert pid > 0, f"{unit} has no main process"
    return pid


def process_status(host, pid: int) -> dict[str, str]:
    lines = host.file(f"/proc/{pid}/status").content_string.splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def capabilities(mask: str) -> set[str]:
    bits = int(mask, 16)
    return {name for number, name in enumerate(CAP_NAMES) if bits >> number & 1}


def expected_capabilities(host, unit: str) -> set[str]:
    """What the role keeps; for coturn, NET_BIND_SERVICE when a port in its config is below 1024."""
    if unit == "coturn.service":
        config = host.file("/etc/turnserver.conf").content_string
        ports = [int(p) for p in re.findall(r"(?m)^(?:tls-)?listening-port=(\d+)$", config)]
        return {"net_bind_service"} if any(p < 1024 for p in ports) else set()
    return CAPABILITIES[unit]


def served_serial(site: Site) -> int:
    with site.tls_socket(site.tls_context()) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def wait_for(check, timeout: float = 20, what: str = "condition"):
    """Poll ``check()`` until it returns something true; that value, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"{what}: not within {timeout} s"
            return value
        time.sleep(0.5)


def changed_tasks(output: str) -> list[str]:
    """Names of the tasks and handlers an ansible-playbook run reports ``changed`` for."""
    names, current = [], None
    for line in re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines():
        heading = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\]", line)
        if heading:
            current = heading.group(1)
        elif line.startswith("changed:") and current:
            names.append(current)
    return names


# ---------------------------------------------------------------------------
# Rated and in force, every sandboxed unit
# ---------------------------------------------------------------------------

def assert_within_target(host, unit: str) -> None:
    level, report = exposure(host, unit)
    print(f"{host.backend.get_hostname()} {unit}: exposure {level}")
    assert level <= TARGET[unit], report


def assert_in_force(host, unit: str) -> None:
    """The drop-in is loaded and the running main process is held by it."""
    dropins = host.check_output(f"systemctl show -p DropInPaths --value {unit}").split()
    assert f"/etc/systemd/system/{unit}.d/{DROPIN}" in dropins, dropins
    status = process_status(host, main_pid(host, unit))
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # a filter, not strict mode
    assert capabilities(status["CapBnd"]) == expected_capabilities(host, unit)


@unit_params
def test_unit_exposure_within_target(name, unit):
    assert_within_target(inventory_host(name), unit)


@unit_params
def test_unit_runs_in_its_sandbox(name, unit):
    assert_in_force(inventory_host(name), unit)


@pytest.mark.sandbox_paths
@unit_params
def test_unit_writes_only_its_paths(name, unit):
    """Seen from the unit's main process (its /proc/<pid>/root): its own paths take a file, the
    system refuses it, and no mount but its own paths, its private /tmp and the kernel's API
    file systems is writable (systemd 252 leaves /run writable without the drop-in's
    ReadOnlyPaths=/run; the binaries of ExecPaths= are mounted writable, see EXEC_PATHS)."""
    host = inventory_host(name)
    pid = main_pid(host, unit)
    probe = f".sandbox-probe-{secrets.token_hex(4)}"
    for path in WRITABLE[unit]:
        result = host.run(f"touch /proc/{pid}/root{path}/{probe} && rm /proc/{pid}/root{path}/{probe}")
        assert result.rc == 0, f"{unit} cannot write {path}: {result.stderr}"
    for path in READ_ONLY[unit]:
        result = host.run(f"touch /proc/{pid}/root{path}/{probe}")
        host.run(f"rm -f /proc/{pid}/root{path}/{probe} {path}/{probe}")
        assert result.rc != 0 and "Read-only file system" in result.stderr, f"{unit} can write {path}"
    exec_paths = [host.check_output(f"readlink -f {p}") for p in EXEC_PATHS.get(unit, [])]  # as mounted
    allowed = WRITABLE[unit] + exec_paths + ["/dev", "/proc", "/sys", "/tmp", "/var/tmp"]
    writable = [mount for mount, options in _mounts(host, pid) if options.split(",")[0] == "rw"]
    stray = [m for m in writable if not any(m == a or m.startswith(a.rstrip("/") + "/") for a in allowed)]
    assert not stray, f"{unit} has writable mounts beyond its own paths: {stray}"


def _mounts(host, pid: int) -> list[tuple[str, str]]:
    """(mount point, per-mount options) of each mount the process sees, from its mountinfo."""
    lines = host.file(f"/proc/{pid}/mountinfo").content_string.splitlines()
    return [(fields[4].replace("\\040", " "), fields[5]) for fields in (line.split() for line in lines)]


@pytest.mark.sandbox_shell
@pytest.mark.parametrize(("name", "unit"), [pytest.param(*u, id=f"{u[0]}:{u[1]}") for u in UNITS if u[1] in EXEC_PATHS])
def test_unit_runs_no_shell(name, unit):
    """Where the drop-in lists what the unit may execute, a shell in its namespace is refused."""
    host = inventory_host(name)
    result = host.run(f"nsenter -t {main_pid(host, unit)} -m /bin/sh -c true")
    assert result.rc != 0 and "Permission denied" in result.stderr, result.stderr


# ---------------------------------------------------------------------------
# The proxies still reload, rotate their logs and take renewed certificates
# ---------------------------------------------------------------------------

@pytest.mark.reloads_proxy
@proxy_params
def test_proxy_reloads_in_its_sandbox(name, unit):
    """``systemctl reload``: the same main process, a new generation of workers, serving."""
    host = inventory_host(name)
    pid = main_pid(host, unit)
    workers = set(host.check_output(f"pgrep -P {pid}").split())
    host.run_expect([0], f"systemctl reload {unit}")
    wait_for(lambda: not workers & set(host.check_output(f"pgrep -P {pid} || true").split()),
             what=f"{unit}'s workers replaced")
    assert main_pid(host, unit) == pid
    assert Site(name).get("/").status == 200


@pytest.mark.reloads_proxy
@proxy_params
def test_proxy_logs_rotate_in_its_sandbox(name, unit):
    """Debian's logrotate configuration, forced: the proxy writes the new file, not the rotated one."""
    host = inventory_host(name)
    if host.run("command -v logrotate").rc != 0:  # Debian's standard installs have it; minbase does not
        host.run_expect([0], "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq logrotate")
    pid = main_pid(host, unit)
    site = Site(name)
    assert site.get("/?before-rotation").status == 200
    host.run_expect([0], f"logrotate -f {LOGROTATE[unit]}")
    log = ACCESS_LOG[unit]

    def logged() -> str | None:
        """A fresh request, if the new log has it (Apache's old children, finishing after the
        graceful reload, may still write to the rotated file for a moment)."""
        marker = f"/?after-rotation-{secrets.token_hex(4)}"
        assert site.get(marker).status == 200
        return marker if marker in host.file(log).content_string else None

    marker = wait_for(logged, what=f"a request in the new {log}")
    assert marker not in host.file(f"{log}.1").content_string
    assert main_pid(host, unit) == pid
    assert host.service(unit.removesuffix(".service")).is_running


@pytest.mark.reloads_proxy
@pytest.mark.changes_deployment  # coturn keeps its copy of the old certificate until turn.yml runs
@proxy_params
def test_proxy_serves_a_renewed_certificate_in_its_sandbox(name, unit):
    """playbooks/tls.yml with a renewal threshold beyond the certificate's lifetime: the tls role
    signs a new one, checks the proxy's configuration and reloads it; the proxy serves it."""
    host = inventory_host(name)
    variables = host.ansible.get_variables()
    if variables.get("tls_source", "self_signed") != "self_signed":
        pytest.skip("the local CA renews here; the acme scenario renews through certbot.timer and Pebble")
    site = Site(name)
    pid, before = main_pid(host, unit), served_serial(site)
    lifetime = int(variables.get("tls_self_signed_days", 365))
    ansible_playbook("playbooks/tls.yml", f"tls_renew_before_days={lifetime + 1}")
    wait_for(lambda: served_serial(site) != before, what="the renewed certificate served")
    assert main_pid(host, unit) == pid  # reloaded, not restarted


# ---------------------------------------------------------------------------
# Switched off and on (molecule/default imports these by name)
# ---------------------------------------------------------------------------

def _hardening_var(unit: str) -> str:
    return {"nginx.service": "nginx", "apache2.service": "apache"}[unit] + "_systemd_hardening"


@pytest.mark.switches_sandbox
@pytest.mark.changes_deployment
@proxy_params
def test_check_mode_predicts_and_changes_nothing(name, unit):
    host = inventory_host(name)
    pid = main_pid(host, unit)
    output = ansible_playbook("playbooks/proxy.yml", f"{_hardening_var(unit)}=false", check=True)
    changed = changed_tasks(output)
    assert "systemd_hardening : No sandbox drop-in (turned off)" in changed, output[-3000:]
    assert any(task.endswith(("Restart nginx", "Restart apache")) for task in changed), changed
    assert host.file(f"/etc/systemd/system/{unit}.d/{DROPIN}").exists
    assert main_pid(host, unit) == pid


@pytest.mark.switches_sandbox
@pytest.mark.changes_deployment
@proxy_params
def test_sandbox_switched_off_and_on(name, unit):
    host = inventory_host(name)
    site = Site(name)
    try:
        ansible_playbook("playbooks/proxy.yml", f"{_hardening_var(unit)}=false")
        assert not host.file(f"/etc/systemd/system/{unit}.d/{DROPIN}").exists
        status = process_status(host, main_pid(host, unit))
        assert status["NoNewPrivs"].strip() == "0"
        assert exposure(host, unit)[0] > TARGET[unit]  # Debian's unit, as the issue measured it
        assert site.get("/").status == 200
    finally:
        ansible_playbook("playbooks/proxy.yml")
    status = process_status(host, main_pid(host, unit))
    assert status["NoNewPrivs"].strip() == "1"
    assert capabilities(status["CapBnd"]) == CAPABILITIES[unit]
    assert site.get("/").status == 200
