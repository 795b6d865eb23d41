"""upgrade scenario, last: back up, lose the host and the controller's secrets, restore, redeploy.

It runs after test_upgrade.py and test_firewall.py (marker ``replaces_hosts``): it replaces the host.

Before: the run's CA, a TURN credential the app issued and an upload are recorded.
playbooks/backup.yml writes one ansible-vault file; then the host is replaced by a fresh
container of the same name (the image, nothing deployed) and the controller's credentials
directory is deleted; playbooks/restore.yml (controller secrets, site.yml, uploads) runs, then
site.yml once more. After: a client that trusts only the old CA file connects, the TURN
credential issued before gets a relay allocation from the new coturn, the upload is served with
the same bytes, and the second site.yml changes nothing.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import time

import pytest
from deployment_checks import SITE_NAME, Site, _multipart, _tiny_png
from testinfra_helpers import (
    ansible_playbook,
    changed_per_host,
    container_address,
    inventory_hosts,
    run_ca_file,
    run_credentials_dir,
)
from turn_checks import TurnClient, _turn_urls

HOST = inventory_hosts("signaling_app")[0]  # the one host: every group
SECRETS = ["redis_password", "turn_secret", "tls-ca/ca.key", "tls-ca/ca.pem"]
# The first test pays for the module's fixture: a backup, a fresh host, a restore that deploys it.
pytestmark = [pytest.mark.timeout(1800), pytest.mark.replaces_hosts]


def _playbook(playbook: str, *extra: str, env: dict[str, str]) -> tuple[str, float]:
    """ansible_playbook's output, and its seconds."""
    started = time.monotonic()
    return ansible_playbook(playbook, *extra, env=env), time.monotonic() - started


def _replace_container(name: str) -> None:
    """A fresh container of the same name, settings and network, from the same image."""
    info = json.loads(subprocess.check_output(["docker", "container", "inspect", name]))[0]
    config, host = info["Config"], info["HostConfig"]
    argv = ["docker", "run", "--detach", "--name", name, "--hostname", config["Hostname"]]
    argv += [f"--cap-add={cap}" for cap in host.get("CapAdd") or []]
    argv += [f"--sysctl={k}={v}" for k, v in (host.get("Sysctls") or {}).items()]
    argv += [f"--security-opt={opt}" for opt in host.get("SecurityOpt") or []]
    argv += [f"--volume={bind}" for bind in host.get("Binds") or []]
    argv += [f"--tmpfs={path}" + (f":{opts}" if opts else "") for path, opts in (host.get("Tmpfs") or {}).items()]
    argv += [f"--publish={b['HostIp']}::{port}" for port, binds in (host.get("PortBindings") or {}).items()
             for b in binds or []]
    argv += [f"--label={k}={v}" for k, v in (config.get("Labels") or {}).items()]
    argv += [f"--env={e}" for e in config.get("Env") or []]
    argv += [f"--cgroupns={host['CgroupnsMode']}"] if host.get("CgroupnsMode") else []
    argv += [f"--stop-signal={config['StopSignal']}"] if config.get("StopSignal") else []
    argv += [f"--network={next(iter(info['NetworkSettings']['Networks']))}"]
    argv += [config["Image"], *(config.get("Cmd") or [])]
    subprocess.run(["docker", "rm", "--force", name], check=True, capture_output=True)
    subprocess.run(argv, check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while True:
        state = subprocess.run(["docker", "exec", name, "systemctl", "is-system-running"],
                               capture_output=True, text=True).stdout.strip()
        if state in ("running", "degraded"):
            return
        assert time.monotonic() < deadline, f"{name}: systemd is {state!r} after 120 s"
        time.sleep(1)


@pytest.fixture(scope="module")
def restored(tmp_path_factory):
    """Everything the checks compare: before, the backup, after."""
    work = tmp_path_factory.mktemp("backup")
    site = Site(HOST)
    before = {name: (run_credentials_dir() / name).read_bytes() for name in SECRETS}
    old_ca = work / "old-ca.pem"
    old_ca.write_bytes(run_ca_file().read_bytes())
    ice = site.get("/api/ice-servers").json()["ice_servers"]
    turn = _turn_urls(ice, HOST)
    png = _tiny_png()
    body, ctype = _multipart("kept.png", "image/png", png)
    created = site.request("POST", "/api/uploads", body=body, headers={"Content-Type": ctype})
    assert created.status == 201, created.body[:300]
    upload_url = created.json()["url"]

    password_file = work / "vault-password"
    password_file.write_text(secrets.token_urlsafe(32) + "\n")
    password_file.chmod(0o600)
    vault = {"ANSIBLE_VAULT_PASSWORD_FILE": str(password_file)}
    backups = work / "backups"
    _, backup_seconds = _playbook("playbooks/backup.yml", f"backup_dir={backups}", env=vault)
    files = sorted(backups.glob("webrtc-edge-*.tar.gz.vault"))

    _replace_container(HOST)
    shutil.rmtree(run_credentials_dir())
    _, restore_seconds = _playbook("playbooks/restore.yml", f"backup_file={files[-1]}", env=vault)
    rerun, rerun_seconds = _playbook("site.yml", env={})
    print(f"backup {backup_seconds:.0f} s, restore (with site.yml on the fresh host) {restore_seconds:.0f} s, "
          f"site.yml again {rerun_seconds:.0f} s")
    return {"before": before, "old_ca": old_ca, "turn": turn, "upload": (upload_url, png), "files": files,
            "rerun": rerun, "site": Site(HOST)}


def test_backup_is_one_vault_file_without_clear_secrets(restored):
    assert len(restored["files"]) == 1, restored["files"]
    data = restored["files"][0].read_bytes()
    assert data.startswith(b"$ANSIBLE_VAULT;1.2;AES256;webrtc-edge\n"), data[:60]
    assert restored["files"][0].stat().st_mode & 0o077 == 0
    for name, secret in restored["before"].items():
        assert secret.strip() not in data, f"{name} in clear in the backup"


@pytest.mark.parametrize("name", SECRETS)
def test_controller_secrets_restored(restored, name):
    assert (run_credentials_dir() / name).read_bytes() == restored["before"][name]


def test_clients_trusting_the_old_ca_connect(restored):
    site = restored["site"]
    context = ssl.create_default_context(cafile=str(restored["old_ca"]))
    answer = site.get("/", context=context)
    assert answer.status == 200
    with site.tls_socket(context, SITE_NAME) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_turn_credentials_issued_before_still_work(restored):
    turn = restored["turn"]
    client = TurnClient.udp(container_address(HOST), turn.port("turn", "udp"), turn.username, turn.credential)
    try:
        address, port = client.allocate()
    finally:
        client.release()
    assert port > 0, address


def test_uploads_are_still_there(restored):
    url, png = restored["upload"]
    answer = restored["site"].get(url)
    assert answer.status == 200
    assert answer.body == png


def test_site_run_after_the_restore_keeps_everything(restored):
    recap = changed_per_host(restored["rerun"])
    assert recap and not any(recap.values()), restored["rerun"][-4000:]
