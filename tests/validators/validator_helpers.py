"""Helpers shared by the validator tests: self-made certificates and model inputs."""

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import validation

#: Every override point in use (the input of the golden nginx-extended.conf and apache-extended.conf).
EXTENSIONS = yaml.safe_load(
    (Path(__file__).parents[1] / "plugins" / "filter" / "extensions.yml").read_text())


def installed_version(argv, pattern_source):
    """Version of an installed server binary (fails the test when the binary is missing)."""
    binary = shutil.which(argv[0]) or f"/usr/sbin/{argv[0]}"
    if not Path(binary).exists():
        pytest.fail(f"{argv[0]} is not installed: the validator tests need Debian's {pattern_source} package")
    done = subprocess.run([binary, *argv[1:]], capture_output=True, text=True, check=False)
    return ".".join(str(p) for p in validation.parse_version(done.stdout + done.stderr))


def write_cert(directory, key_type, names):
    """A self-signed certificate for names, with an RSA-2048 or ECDSA P-256 key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if key_type == "rsa" \
        else ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    chain = directory / "fullchain.pem"
    privkey = directory / "privkey.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    privkey.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    privkey.chmod(0o600)
    return chain, privkey


def model_spec(tmp_path, kind, key_type="ecdsa"):
    """Input of the proxy_model filter for a single-host, a multi-host or a split (proxy host of its own) deployment."""
    roots = {name: tmp_path / "roots" / name for name in ("static", "uploads", "acme", "errors")}
    for root in roots.values():
        root.mkdir(parents=True, exist_ok=True)
    (roots["acme"] / ".well-known" / "acme-challenge").mkdir(parents=True, exist_ok=True)
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(exist_ok=True)
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=True).stdout
    if kind == "single":
        names = ["localhost"]
        spec = {
            "server_names": names,
            "upstreams": [{"address": "127.0.0.1", "port": 8081}, {"address": "127.0.0.1", "port": 8082}],
        }
    elif kind == "split":
        # A proxy host of its own: client files come from the app, uploads from app host 1.
        names = ["localhost"]
        app1 = [{"address": "10.0.1.11", "port": 8081}, {"address": "10.0.1.11", "port": 8082}]
        spec = {
            "server_names": names,
            "upstreams": [*app1, {"address": "10.0.1.12", "port": 8081}, {"address": "10.0.1.12", "port": 8082}],
            "files_from_disk": False,
            "uploads_upstreams": app1,
        }
    else:
        names = ["signal.example.org", "signal-b.example.org", "localhost"]
        spec = {
            "server_names": names,
            "balance": "room_hash",
            "upstreams": [
                {"address": "10.0.1.11", "port": 8081, "weight": 3, "max_fails": 2, "fail_timeout": 20},
                {"address": "10.0.1.11", "port": 8082, "weight": 3},
                {"address": "10.0.1.12", "port": 8081},
                {"address": "fd00::13", "port": 8081, "weight": 1},
            ],
            "cors": {"origins": ["https://app.example.org", "https://admin.example.org:8443"], "credentials": True},
            "allowlist": ["127.0.0.1", "::1", "10.0.0.0/8"],
            "hsts": {"preload": True},
            "tls": {"profile": "modern"},
            "headers": {"extra": [{"name": "Cross-Origin-Opener-Policy", "value": "same-origin"}]},
            "limits": {"body_max": "20m", "api_rate": 5},
        }
    chain, privkey = write_cert(tls_dir, key_type, names)
    spec.setdefault("tls", {}).update(certificate=str(chain), certificate_key=str(privkey), openssl_version=openssl)
    spec["roots"] = {name: str(path) for name, path in roots.items()}
    return spec
