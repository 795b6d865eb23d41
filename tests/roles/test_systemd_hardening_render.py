"""The sandbox drop-ins of nginx, Apache, coturn and Redis or Valkey (issues 11 and 14), rendered by
Ansible itself from what each role passes to roles/systemd_hardening, and rated by the real
``systemd-analyze security --offline`` on top of Debian's own unit:

* each role's import of systemd_hardening is read from its tasks/main.yml (the values it really
  passes), rendered with the role's defaults and vars, and put beside Debian's unit in a scratch
  root; the exposure must stay within the issue's targets (nginx and Apache 4.0, coturn 3.0) and
  Redis and Valkey at 2.0 (issue 14: the same drop-in for either server);
* the drop-in is what takes effect whatever Debian's unit says: every list it sets starts empty,
  Redis and Valkey lose the writable /etc/redis or /etc/valkey Debian's unit gives them, and
  coturn keeps NET_BIND_SERVICE (and leaves the user namespace) only for a port below 1024;
* the inventory's extra lines come last, after everything the role sets.

Debian's units come from the controller's packages (tests/setup-host.sh installs nginx, apache2
and redis-server; coturn and valkey-server where they are installed); a unit that is missing
skips its test. Molecule rates the deployed units again (molecule/common/sandbox_checks.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from local_playbook import ROOT, render_templates, role_vars_files

ROLES = ROOT / "roles"
HELPER = ROLES / "systemd_hardening"
DEBIAN_UNITS = Path("/lib/systemd/system")
DROPIN = "webrtc-edge-hardening.conf"

# role -> (unit, the ceiling on its exposure)
UNITS = {
    "nginx": ("nginx.service", 4.0),
    "apache": ("apache2.service", 4.0),
    "coturn": ("coturn.service", 3.0),
    "redis": ("redis-server.service", 2.0),
    "valkey": ("valkey-server.service", 2.0),
}
# What a name of UNITS renders: its role, with these values (the redis role serves both servers).
RENDERS = {"redis": ("redis", {"redis_server": "redis"}), "valkey": ("redis", {"redis_server": "valkey"})}

def imported_vars(role: str) -> dict:
    """The vars of the role's ``import_role: systemd_hardening`` task, as its tasks/main.yml has them."""
    tasks = yaml.safe_load((ROLES / role / "tasks" / "main.yml").read_text())
    found = [t["vars"] for t in tasks
             if (t.get("ansible.builtin.import_role") or {}).get("name") == "systemd_hardening"]
    assert len(found) == 1, f"roles/{role}/tasks/main.yml imports systemd_hardening {len(found)} times"
    return found[0]


def render(role: str, tmp: Path, **overrides) -> str:
    """The role's drop-in as Ansible renders it, with ``overrides`` as extra vars."""
    imported = tmp / f"{role}-imported.yml"
    imported.write_text(yaml.safe_dump(imported_vars(role)))
    render_templates(tmp, [HELPER / "templates" / f"{DROPIN}.j2"],
                     [*role_vars_files(HELPER), *role_vars_files(ROLES / role), imported],
                     variants={role: {}}, extra_vars=overrides)
    return (tmp / f"{role}-{DROPIN}").read_text()


def directives(text: str) -> list[tuple[str, str]]:
    """The drop-in's ``Key=value`` lines in order, comments and the section header left out."""
    return [tuple(line.split("=", 1)) for line in text.splitlines() if re.match(r"^[A-Z][A-Za-z]*=", line)]


def effective(text: str, key: str) -> list[str]:
    """What a list directive ends up as: the values after its last empty assignment."""
    values: list[str] = []
    for k, v in directives(text):
        if k == key:
            values = [] if v == "" else values + v.split()
    return values


def exposure(unit: str, dropin: str, tmp: Path) -> tuple[float, str]:
    """``systemd-analyze security --offline`` of Debian's unit with the drop-in, in a scratch root."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze (Debian package systemd)")
    stock = DEBIAN_UNITS / unit
    if not stock.is_file():
        pytest.skip(f"Debian's {unit} is not installed here")
    root = tmp / f"root-{unit}"
    (root / "lib/systemd/system").mkdir(parents=True)
    shutil.copy(stock, root / "lib/systemd/system" / unit)
    (root / f"etc/systemd/system/{unit}.d").mkdir(parents=True)
    (root / f"etc/systemd/system/{unit}.d" / DROPIN).write_text(dropin)
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager", unit],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1)), proc.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Each role's drop-in with its defaults (a name of UNITS), rendered once for the module."""
    cache: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in cache:
            role, values = RENDERS.get(name, (name, {}))
            cache[name] = render(role, tmp_path_factory.mktemp(name), **values)
        return cache[name]

    return get


@pytest.mark.parametrize("role", sorted(UNITS))
def test_exposure_within_target(role, rendered, tmp_path):
    unit, target = UNITS[role]
    level, report = exposure(unit, rendered(role), tmp_path)
    assert level <= target, report


@pytest.mark.parametrize("role", sorted(UNITS))
def test_every_list_starts_empty(role, rendered):
    """Each list directive is reset before the role's values, so Debian's unit adds nothing."""
    lines = directives(rendered(role))
    for key in ("CapabilityBoundingSet", "AmbientCapabilities", "ReadWritePaths", "RestrictAddressFamilies",
                "SystemCallFilter"):
        first = next(value for k, value in lines if k == key)
        assert first == "", f"{role}: the first {key}= is {first!r}, not a reset"


def test_nginx_keeps_what_its_master_needs(rendered):
    text = rendered("nginx")
    assert set(effective(text, "CapabilityBoundingSet")) == {
        "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_DAC_OVERRIDE"}
    assert effective(text, "RestrictAddressFamilies") == ["AF_INET", "AF_INET6"]
    assert "PIDFile=/run/nginx/nginx.pid" in text.splitlines()
    assert effective(text, "ExecStop")[-1] == "/run/nginx/nginx.pid"


@pytest.mark.parametrize(("name", "config_dir"), [("redis", "/etc/redis"), ("valkey", "/etc/valkey")])
def test_redis_config_directory_read_only(rendered, name, config_dir):
    """Debian's unit lets the server write its config directory (ReadWriteDirectories=); the drop-in does not."""
    writable = effective(rendered(name), "ReadWritePaths")
    assert writable and not any(p.lstrip("-").startswith("/etc") for p in writable), writable
    unit = UNITS[name][0]
    if (DEBIAN_UNITS / unit).is_file():
        assert config_dir in (DEBIAN_UNITS / unit).read_text()


def test_valkey_sandbox_is_redis_sandbox_for_its_paths(rendered):
    """One drop-in for either server: only the server's own paths differ."""
    def paths(text: str) -> str:
        return text.replace("valkey", "redis")
    assert paths(rendered("valkey")) == rendered("redis")


@pytest.mark.parametrize(("overrides", "bind_cap"), [
    ({"coturn_port": 3478}, False),                            # the default: no capability, its own user namespace
    ({"coturn_port": 443}, True),                              # below 1024
    ({"coturn_tls": True, "coturn_tls_port": 443}, True),      # TURN over TLS on 443 (the turn role's option)
    ({"coturn_tls": True, "coturn_tls_port": 5349}, False),
])
def test_coturn_binds_low_ports_only_with_the_capability(overrides, bind_cap, tmp_path):
    text = render("coturn", tmp_path, **overrides)
    expected = ["CAP_NET_BIND_SERVICE"] if bind_cap else []
    assert effective(text, "CapabilityBoundingSet") == expected
    assert effective(text, "AmbientCapabilities") == expected
    # A capability held inside a user namespace of its own does not count for the host's ports.
    assert ("PrivateUsers=yes" in text.splitlines()) is not bind_cap
    level, report = exposure("coturn.service", text, tmp_path)
    assert level <= UNITS["coturn"][1], report


def test_inventory_lines_come_last(tmp_path):
    text = render("nginx", tmp_path, nginx_systemd_hardening_extra=["RestrictAddressFamilies=AF_UNIX",
                                                                    "MemoryDenyWriteExecute=no"])
    assert directives(text)[-2:] == [("RestrictAddressFamilies", "AF_UNIX"), ("MemoryDenyWriteExecute", "no")]
    assert effective(text, "RestrictAddressFamilies") == ["AF_INET", "AF_INET6", "AF_UNIX"]


def test_inventory_paths_added(tmp_path):
    text = render("apache", tmp_path, apache_systemd_read_write_paths=["/var/cache/apache2"])
    assert effective(text, "ReadWritePaths")[-1] == "/var/cache/apache2"
