"""Debian's coturn on loopback, configured by the repository's own coturn role.

The browser tests relay calls through it. Its ``turnserver.conf`` is the role's template
(``roles/coturn/templates/turnserver.conf.j2``) rendered by Ansible with the role's
defaults and vars, so what is proven is the deployed configuration: quota, TLS profile,
denied and allowed peers, REST credentials. The test changes only what a loopback test
needs, each as a role variable where the role has one:

* role variables: ports (free ones), the relay range (above Linux's ephemeral ports),
  the secret, ``coturn_public_host: localhost`` (the certificate's name),
  ``coturn_allowed_peer_ranges: [127.0.0.1]`` (the peers are relays on this machine), the
  room size the app allows (``coturn_room_max_peers``), the copies' directory
  (``__coturn_tls_dir``) and, for the refusal checks, ``coturn_user_quota``;
* lines appended to the rendered file, test-only: listen and relay on 127.0.0.1 only,
  ``allow-loopback-peers`` (coturn refuses loopback peers whatever the allowed ranges),
  log to a file instead of syslog (``verbose``: allocations name their user), and keep the
  pid file and user database in the test's directory.

The certificate comes from a CA made for the test; Chromium trusts exactly its key
(``--ignore-certificate-errors-spki-list``, see ``signaling.testing.browser.spki_pin``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import stop_app

from signaling.testing.browser import spki_pin

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "coturn"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"

RENDER = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  tasks:
    - ansible.builtin.template:
        src: {role}/templates/turnserver.conf.j2
        dest: {out}/turnserver.conf
        mode: "0600"
"""


def require_coturn() -> None:
    """Skip (fail in CI) without Debian's coturn, Ansible or the role (a tree without roles/)."""
    missing = [what for what, ok in [("coturn (apt-get install coturn)", os.path.exists(TURNSERVER)),
                                     ("ansible-playbook", ANSIBLE_PLAYBOOK.exists()),
                                     ("roles/coturn", ROLE.is_dir())] if not ok]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the TURN browser tests need {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def credential(secret: str, username: str) -> str:
    """coturn's REST scheme: base64(HMAC-SHA1(secret, username))."""
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def _make_certificate(out: Path) -> str:
    """A CA and a certificate for localhost signed by it, in ``out``; returns the leaf's SPKI pin."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webrtc-edge test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (out / "fullchain.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (out / "privkey.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    (out / "ca.pem").write_bytes(ca.public_bytes(pem))
    return spki_pin(key.public_key())


class Coturn:
    """turnserver with the role's configuration, on free loopback ports."""

    def __init__(self, workdir: Path, room_max_peers: int, **role_vars: object) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.secret = base64.b32encode(os.urandom(20)).decode().lower()
        self.port, self.tls_port = _free_port(), _free_port()
        self.spki_pin = _make_certificate(self.dir)
        relay = random.randrange(61000, 64000, 100)
        self.vars = {
            "coturn_public_host": "localhost",
            "coturn_port": self.port,
            "coturn_tls_port": self.tls_port,
            "coturn_min_port": relay,
            "coturn_max_port": relay + 999,
            "coturn_static_auth_secret": self.secret,
            "coturn_room_max_peers": room_max_peers,
            "coturn_allowed_peer_ranges": ["127.0.0.1"],
            "__coturn_tls_dir": str(self.dir),
            **role_vars,
        }
        self.log_path = self.dir / "turnserver.log"
        self.proc: subprocess.Popen | None = None

    @property
    def urls(self) -> list[str]:
        """What the role publishes (coturn_urls) for this server."""
        return [f"turn:localhost:{self.port}?transport=udp", f"turn:localhost:{self.port}?transport=tcp",
                f"turns:localhost:{self.tls_port}?transport=tcp"]

    def render(self) -> str:
        playbook = self.dir / "render.yml"
        playbook.write_text(RENDER.format(role=ROLE, out=self.dir))
        extra = self.dir / "vars.json"
        extra.write_text(json.dumps({**self.vars, "ansible_python_interpreter": sys.executable}))
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_CACHE_PLUGIN="memory",
                   ANSIBLE_LOCAL_TEMP=str(self.dir / "ansible-tmp"))
        done = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", "-e", f"@{extra}",
                               str(playbook)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return (self.dir / "turnserver.conf").read_text()

    def start(self) -> Coturn:
        role_config = self.render()
        # Test-only lines (see the module's docstring); the rest is the role's.
        lines = [line for line in role_config.splitlines() if line != "syslog"]
        lines += ["listening-ip=127.0.0.1", "relay-ip=127.0.0.1", "allow-loopback-peers",
                  f"log-file={self.log_path}", "no-stdout-log", "verbose",
                  f"pidfile={self.dir / 'turnserver.pid'}", f"userdb={self.dir / 'turndb'}"]
        config = self.dir / "test-turnserver.conf"
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o600)
        self.proc = subprocess.Popen([TURNSERVER, "-c", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"turnserver exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.tls_port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"turnserver does not listen on {self.tls_port}:\n{self.log()[-3000:]}")
                time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_app(self)  # SIGTERM, then SIGKILL if it does not exit in time
