"""The browser driver's parts that need no browser (signaling.testing.browser): the URL it
opens and the key pins it hands Chromium. Its pages are exercised by test_browser*.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from signaling.testing.browser import URL_PARAMETERS, query, spki_pin

APP_JS = Path(__file__).resolve().parents[1] / "src" / "signaling" / "static" / "js" / "app.js"


def test_query_encodes_the_parameters_and_flags() -> None:
    assert query() == ""
    assert query(autoanswer=True, media=False) == "?autoanswer=1&media=0"
    assert query(room="stand up", role="host", name="Bo & Cy", secret="s3/cr=t") == \
        "?room=stand+up&role=host&name=Bo+%26+Cy&secret=s3%2Fcr%3Dt"


def test_query_refuses_what_the_client_does_not_read() -> None:
    with pytest.raises(TypeError, match="autoAnswer"):
        query(autoAnswer=True)


def test_the_driver_knows_every_url_parameter_of_the_client() -> None:
    read = set(re.findall(r"""params\.(?:get|has)\(["'](\w+)["']\)""", APP_JS.read_text()))
    assert read == set(URL_PARAMETERS)


def test_spki_pin_is_what_chromium_documents(tmp_path: Path) -> None:
    """The pin of ``--ignore-certificate-errors-spki-list``: openssl's base64(SHA-256(SPKI))."""
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not shutil.which("openssl"):
        pytest.skip("no openssl binary")
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    openssl = subprocess.run(
        "openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | openssl enc -base64",
        shell=True, input=pem, capture_output=True, check=True)
    assert spki_pin(key) == openssl.stdout.decode().strip()
