"""roles/tls/files/webrtc-edge-tls, the tls role's helper on the host, run as the host runs it:

* ``metrics`` writes the node-exporter textfile with the names issue 12 fixes: the expiry of the
  certificate at the fixed path for every source; with acme the renewal runs' results as
  certbot.service's ExecStopPost= reports them ($SERVICE_RESULT), keeping them between runs;
  it rewrites the file only when its content changes, by a rename;
* ``deploy`` (certbot's deploy hook) puts certbot's lineage at the fixed paths with their modes,
  and does nothing when the host's source is no longer acme.

Real certificates (cryptography), a real process; systemd, nginx and certbot itself run in
the acme Molecule scenario (molecule/acme/tests/test_acme.py).
"""

from __future__ import annotations

import datetime
import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HELPER = Path(__file__).resolve().parents[2] / "roles" / "tls" / "files" / "webrtc-edge-tls"
NAME = "signal.example.org"


def make_certificate(days: int) -> tuple[bytes, bytes, datetime.datetime]:
    """A self-signed ECDSA certificate for NAME valid ``days`` from now: (cert PEM, key PEM, notAfter)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, now + datetime.timedelta(days=days)


@pytest.fixture
def site(tmp_path) -> dict:
    """A host's layout under tmp_path and the helper's settings for it (source acme)."""
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    cert, key, not_after = make_certificate(7)
    (tls_dir / "fullchain.pem").write_bytes(cert)
    (tls_dir / "privkey.pem").write_bytes(key)
    config = {"name": NAME, "source": "acme", "tls_dir": str(tls_dir),
              "textfile": str(tmp_path / "node-exporter" / "webrtc_edge_tls.prom"),
              "lineage": str(tmp_path / "live" / NAME), "consumers": [],
              "coturn": {"dir": str(tmp_path / "no-coturn"), "group": "root", "service": "coturn.service"}}
    return {"tmp": tmp_path, "config": config, "not_after": not_after}


def helper(site: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    config_file = site["tmp"] / "helper.json"
    config_file.write_text(json.dumps(site["config"]))
    return subprocess.run([sys.executable, str(HELPER), "--config", str(config_file), *args],
                          capture_output=True, text=True, check=False, env=env, timeout=60)


def samples(site: dict) -> dict[str, str]:
    text = Path(site["config"]["textfile"]).read_text()
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


@pytest.mark.parametrize("source", ["self_signed", "files", "acme"])
def test_expiry_for_every_source(site, source):
    site["config"]["source"] = source
    run = helper(site, "metrics")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "changed"
    values = samples(site)
    expiry = f'webrtc_edge_tls_certificate_expiry_timestamp_seconds{{name="{NAME}"}}'
    assert values[expiry] == str(int(site["not_after"].timestamp()))
    renewal = {k for k in values if k.startswith("webrtc_edge_tls_renewal_")}
    assert renewal == ({"webrtc_edge_tls_renewal_failed"} if source == "acme" else set())


def test_unchanged_content_is_not_rewritten(site):
    assert helper(site, "metrics").stdout.strip() == "changed"
    textfile = Path(site["config"]["textfile"])
    inode = textfile.stat().st_ino
    assert helper(site, "metrics").stdout.strip() == "unchanged"
    assert textfile.stat().st_ino == inode
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert [p.name for p in textfile.parent.iterdir()] == [textfile.name]  # no temporary file left


def test_renewal_runs_are_recorded_and_kept(site):
    assert helper(site, "metrics", "--renewal-result", "success").returncode == 0
    first = samples(site)
    assert first["webrtc_edge_tls_renewal_failed"] == "0"
    success = first["webrtc_edge_tls_renewal_last_success_timestamp_seconds"]
    assert first["webrtc_edge_tls_renewal_last_run_timestamp_seconds"] == success
    assert abs(int(success) - datetime.datetime.now(datetime.UTC).timestamp()) < 60

    assert helper(site, "metrics", "--renewal-result", "exit-code").returncode == 0
    failed = samples(site)
    assert failed["webrtc_edge_tls_renewal_failed"] == "1"
    assert failed["webrtc_edge_tls_renewal_last_success_timestamp_seconds"] == success

    # A later run without a result (the playbook's, or the deploy hook's) keeps the values.
    assert helper(site, "metrics").stdout.strip() == "unchanged"
    assert samples(site) == failed


def test_a_renewal_not_installed_makes_the_run_failed(site):
    """certbot renewed (its lineage holds another certificate) but the deploy hook did not install
    it: the run failed, whatever certbot's exit; once installed, the next run succeeds."""
    live = lineage(site)
    assert helper(site, "metrics", "--renewal-result", "success").returncode == 0
    assert samples(site)["webrtc_edge_tls_renewal_failed"] == "1"
    assert helper(site, "deploy", "--lineage", str(live)).returncode == 0
    assert helper(site, "metrics", "--renewal-result", "success").returncode == 0
    assert samples(site)["webrtc_edge_tls_renewal_failed"] == "0"


def test_textfile_parses_as_prometheus_text(site):
    assert helper(site, "metrics", "--renewal-result", "success").returncode == 0
    text = Path(site["config"]["textfile"]).read_text()
    for name in re.findall(r"^# TYPE (\S+) gauge$", text, re.MULTILINE):
        assert re.search(rf"^# HELP {name} \S", text, re.MULTILINE)
        assert re.search(rf"^{name}(\{{[^}}]*\}})? \d+$", text, re.MULTILINE)
    assert len(re.findall(r"^# TYPE", text, re.MULTILINE)) == 4


def lineage(site: dict) -> Path:
    live = Path(site["config"]["lineage"])
    live.mkdir(parents=True)
    cert, key, _ = make_certificate(90)
    (live / "cert.pem").write_bytes(cert)
    chain, _, _ = make_certificate(365)
    (live / "privkey.pem").write_bytes(key)
    (live / "fullchain.pem").write_bytes(cert + chain)
    (live / "chain.pem").write_bytes(chain)
    return live


def test_deploy_puts_the_lineage_at_the_fixed_paths(site):
    live = lineage(site)
    tls_dir = Path(site["config"]["tls_dir"])
    run = helper(site, "deploy", "--lineage", str(live))
    assert run.returncode == 0, run.stderr
    for src, dest, mode in [("privkey.pem", "privkey.pem", 0o600), ("fullchain.pem", "fullchain.pem", 0o644),
                            ("chain.pem", "ca.pem", 0o644)]:
        assert (tls_dir / dest).read_bytes() == (live / src).read_bytes()
        assert stat.S_IMODE((tls_dir / dest).stat().st_mode) == mode
    cert = x509.load_pem_x509_certificate((live / "fullchain.pem").read_bytes())
    expiry = samples(site)[f'webrtc_edge_tls_certificate_expiry_timestamp_seconds{{name="{NAME}"}}']
    assert expiry == str(int(cert.not_valid_after_utc.timestamp()))


def test_deploy_from_the_environment_certbot_sets(site):
    live = lineage(site)
    run = helper(site, "deploy", env={"RENEWED_LINEAGE": str(live), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert (Path(site["config"]["tls_dir"]) / "ca.pem").read_bytes() == (live / "chain.pem").read_bytes()


def test_deploy_leaves_other_sources_alone(site):
    site["config"]["source"] = "self_signed"
    before = (Path(site["config"]["tls_dir"]) / "fullchain.pem").read_bytes()
    run = helper(site, "deploy", "--lineage", str(lineage(site)))
    assert run.returncode == 0
    assert "not acme" in run.stderr
    assert (Path(site["config"]["tls_dir"]) / "fullchain.pem").read_bytes() == before
