"""upgrade scenario, very last: the host's OS from Debian 12 to Debian 13 under a deployment.

It runs after test_backup.py (both marked ``replaces_hosts``, then file order), on the host the
restore deployed, and only when that host runs Debian 12 (``MOLECULE_DISTRO=bookworm``): on a
Debian 13 host there is nothing to upgrade to, so the module is skipped.

The path is the one docs/operations.md ("Upgrading the OS") gives an operator, which is Debian's
release notes' path: point apt's sources from bookworm to trixie, ``apt-get update``,
``apt-get upgrade --without-new-pkgs``, ``apt-get full-upgrade`` (non-interactive, keeping the
configuration files the toolkit wrote: ``--force-confold``), then site.yml again. A room talks
through the proxy all along (peers.py: a WebSocket host, two WebSocket participants and a
long-polling participant, each sending numbered messages).

Proven afterwards:

* the host runs Debian 13, its python3 is 3.13, and the release (the same version) runs from a
  virtualenv made by that Python: site.yml saw the stale one and reinstalled it;
* the same certificate is served, and the controller's secrets and the host's key are the same;
* every WebSocket peer kept its id, room and role through every reconnection (``lost`` 0), no
  message was lost, none was delivered twice by the server, and the long-polling participant
  kept its session: the sessions live in Redis, which apt restarts on its new version, and each
  outage stays within the 60 s resume window;
* Redis is still Redis: an upgraded host keeps its data store (redis_server's default);
* a second site.yml changes nothing.

The figures (apt's time, site.yml's, messages, resumes, outages) are printed; ``pytest -s``
shows them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from deployment_checks import SITE_NAME, Site
from peers import Room
from releases import release_n, run_playbook
from testinfra_helpers import (
    ansible_playbook,
    changed_per_host,
    inventory_hosts,
    published_port,
    run_ca_file,
    run_credentials_dir,
)

testinfra_hosts = inventory_hosts("all")

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
HOST = inventory_hosts("signaling_app")[0]  # the one host: every group
SECRETS = ["redis_password", "turn_secret", "tls-ca/ca.key", "tls-ca/ca.pem"]
CURRENT = "/opt/signaling/current"  # the release: a virtualenv
TLS_DIR = "/etc/webrtc-edge/tls"
RESUME_WINDOW = 60.0  # seconds: the app's session_ttl default, docs/protocol.md
TALK_AFTER = 3
# Debian's release notes, "Upgrading your system": the minimal upgrade first, then the full one.
# --force-confold keeps the configuration files the toolkit wrote (site.yml rewrites what it owns).
APT_UPGRADE = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none
sed -i -E 's/\bbookworm(-[a-z]+)?\b/trixie\1/g' \
  $(find /etc/apt/sources.list /etc/apt/sources.list.d -type f \( -name '*.list' -o -name '*.sources' \))
apt-get update -q
opts='-y -q -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef'
apt-get $opts upgrade --without-new-pkgs
apt-get $opts full-upgrade
"""
pytestmark = [pytest.mark.timeout(2400), pytest.mark.replaces_hosts]


def _apt_upgrade(log: Path) -> float:
    started = time.monotonic()
    proc = subprocess.run(["docker", "exec", HOST, "bash", "-c", APT_UPGRADE],
                          capture_output=True, text=True, timeout=1800, check=False)
    log.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"the OS upgrade failed (whole output: {log}):\n{(proc.stdout + proc.stderr)[-4000:]}"
    return time.monotonic() - started


def _served_certificate(site: Site) -> str:
    with site.tls_socket(site.tls_context(), SITE_NAME) as tls:
        return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def _host_keys(host) -> dict[str, str]:
    """sha256 of the files in the tls role's directory on the host: certificates and keys."""
    out = host.check_output(f"find {TLS_DIR} -type f -exec sha256sum {{}} +")
    keys = {path: digest for digest, path in (line.split() for line in out.splitlines())}
    assert keys, f"nothing in {TLS_DIR}"
    return keys


async def _upgrade_under_load(port: int) -> tuple[Room, float, float]:
    async with Room(f"https://localhost:{port}", str(run_ca_file())) as room:
        await room.flowing()
        apt_seconds = await asyncio.to_thread(_apt_upgrade, EPHEMERAL / "os-upgrade-apt.log")
        started = time.monotonic()
        await run_playbook("site.yml", EPHEMERAL / "os-upgrade-site.log")
        site_seconds = time.monotonic() - started
        await asyncio.sleep(TALK_AFTER)
        await room.settle()
    return room, apt_seconds, site_seconds


@pytest.fixture(scope="module")
def os_upgraded(host):
    codename = host.system_info.codename
    if codename != "bookworm":
        pytest.skip(f"the host runs {codename}: the OS upgrade starts from Debian 12 (MOLECULE_DISTRO=bookworm)")
    site = Site(HOST)
    before = {
        "certificate": _served_certificate(site),
        "keys": _host_keys(host),
        "secrets": {name: (run_credentials_dir() / name).read_bytes() for name in SECRETS},
        "python": host.check_output("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"),
    }
    port = published_port(HOST, 443)
    room, apt_seconds, site_seconds = asyncio.run(_upgrade_under_load(port))
    rerun = ansible_playbook("site.yml", log=EPHEMERAL / "os-upgrade-rerun.log")
    print(f"\nOS upgrade: apt {apt_seconds:.0f} s, site.yml {site_seconds:.0f} s; room: {room.summary()}")
    return {"before": before, "room": room, "rerun": rerun, "site": Site(HOST)}


def test_host_runs_debian_13_and_its_python(os_upgraded, host):
    debian = host.file("/etc/debian_version").content_string.strip()
    assert debian.startswith("13"), debian
    assert os_upgraded["before"]["python"] == "3.11"
    assert host.check_output("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'") == "3.13"


def test_release_reinstalled_for_the_new_python(os_upgraded, host):
    cfg = host.file(f"{CURRENT}/pyvenv.cfg")
    assert cfg.exists, f"{CURRENT}/pyvenv.cfg"
    assert re.search(r"^version(_info)?\s*=\s*3\.13\.", cfg.content_string, re.M), cfg.content_string
    assert host.file(CURRENT).linked_to.endswith(f"/{release_n()}")
    health = os_upgraded["site"].get("/health")
    assert health.status == 200 and health.json()["version"] == release_n(), health.body[:300]


def test_same_certificate_and_secrets(os_upgraded, host):
    before = os_upgraded["before"]
    assert _served_certificate(os_upgraded["site"]) == before["certificate"]
    assert _host_keys(host) == before["keys"]
    for name, secret in before["secrets"].items():
        assert (run_credentials_dir() / name).read_bytes() == secret, f"{name} changed"


def test_redis_stays_redis(os_upgraded, host):
    assert host.service("redis-server").is_running
    assert host.service("redis-server").is_enabled
    assert not host.package("valkey-server").is_installed


def test_peers_kept_their_sessions(os_upgraded):
    room = os_upgraded["room"]
    for peer in room.peers:
        if peer.transport == "websocket":
            first, *resumed = peer.welcomes
            for welcome in resumed:
                assert welcome.get("type") == "welcome", f"{peer.name}'s resume was refused: {welcome}"
                assert (welcome["id"], welcome["resumed"], welcome["room"], welcome["role"], welcome["lost"]) == (
                    first["id"], True, peer.room, peer.role, 0)
        else:
            assert peer.received, f"{peer.name} got nothing"
            assert not peer.anomalies, peer.anomalies
    outages = [o for p in room.peers for o in p.outages]
    assert all(o.resumed_at is not None for o in outages), room.summary()
    assert max((o.seconds for o in outages), default=0.0) < RESUME_WINDOW, room.summary()


def test_no_message_lost_or_repeated(os_upgraded):
    room = os_upgraded["room"]
    for stream in room.streams():
        missing = sorted(set(range(1, stream.sent + 1)) - set(stream.numbers))
        assert not missing, f"{stream.sender} -> {stream.receiver}: {len(missing)} of {stream.sent} lost: {missing}"
        unexplained = [n for n in stream.duplicates if n not in stream.resent]
        assert not unexplained, f"{stream.sender} -> {stream.receiver} got {unexplained} twice, never resent"
    assert [a for peer in room.peers for a in peer.anomalies] == []
    assert {p.name: p.server_errors for p in room.peers if p.server_errors} == {}


def test_site_run_after_the_upgrade_changes_nothing(os_upgraded):
    recap = changed_per_host(os_upgraded["rerun"])
    assert recap and not any(recap.values()), os_upgraded["rerun"][-4000:]
