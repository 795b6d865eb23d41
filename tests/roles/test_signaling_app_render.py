"""signaling_app's templates, rendered by Ansible itself, checked by the real consumers:

* signaling.toml is parsed and validated by the app's own config loader (app/src), so a
  setting the role writes but the app does not know, or a TOML quoting bug, fails here;
* signaling@.service is rated by ``systemd-analyze security --offline`` and must stay at an
  exposure of 2.0 or less.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from local_playbook import ROOT, render_templates, role_vars_files

ROLE = ROOT / "roles" / "signaling_app"

# Values that exercise the TOML writer: quotes, backslashes, non-ASCII, nested tables.
OVERRIDES = {
    "signaling_app_bind_address": "10.0.0.11",
    "signaling_app_redis_url": 'redis://:p"a\\ss@10.0.0.5:6379/0',
    "signaling_app_turn_secret": "s3cr\u00e9t",
    "signaling_app_turn_urls": ["turn:turn.example.org:3478?transport=udp"],
    "signaling_app_ice_servers": [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": ["turn:t.example.org:3478"], "username": "u", "credential": "c\"d"},
    ],
    "signaling_app_allowed_origins": ["https://app.example.org"],
    "signaling_app_trusted_proxies": ["127.0.0.1/32", "10.0.0.21"],
    "signaling_app_shutdown_grace": 10,
}

@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("render")
    render_templates(out, [ROLE / "templates" / f"{name}.j2" for name in ("signaling.toml", "signaling@.service")],
                     role_vars_files(ROLE), extra_vars=OVERRIDES)
    return out


def test_config_is_valid_toml_with_the_values_given(rendered):
    data = tomllib.loads((rendered / "signaling.toml").read_text())
    assert data["redis_url"] == OVERRIDES["signaling_app_redis_url"]
    assert data["turn_secret"] == OVERRIDES["signaling_app_turn_secret"]
    assert data["ice_servers"] == OVERRIDES["signaling_app_ice_servers"]
    assert data["public_mode"] is True and data["discovery"] is False
    assert data["heartbeat"] == 30 and data["upload_max_size"] == 10485760


def test_config_is_accepted_by_the_app(rendered, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "app" / "src"))
    config = pytest.importorskip("signaling.config")
    settings, _ = config.load(["--config", str(rendered / "signaling.toml")], {})
    assert settings.trusted_proxies == ("127.0.0.1/32", "10.0.0.21")
    assert settings.turn_urls == ("turn:turn.example.org:3478?transport=udp",)


def test_config_sets_every_app_setting_but_the_per_instance_ones(rendered, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "app" / "src"))
    config = pytest.importorskip("signaling.config")
    written = set(tomllib.loads((rendered / "signaling.toml").read_text()))
    per_instance = {"host", "port", "instance_id", "static_dir"}
    assert written == set(config.FIELDS) - per_instance


def test_unit_starts_the_instance_from_the_current_release(rendered):
    unit = (rendered / "signaling@.service").read_text()
    assert (
        "ExecStart=/opt/signaling/current/bin/signaling --config /etc/signaling/signaling.toml"
        " --host 10.0.0.11 --port %i" in unit
    )
    assert "User=signaling" in unit
    assert "TimeoutStopSec=20" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian package systemd)")
def test_unit_exposure_is_at_most_2(rendered, tmp_path):
    # --offline rates the file as written; the unit's name must keep its template form.
    unit = tmp_path / "signaling@.service"
    shutil.copy(rendered / "signaling@.service", unit)
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60,
    )
    summary = [line for line in proc.stdout.splitlines() if "Overall exposure" in line]
    assert proc.returncode == 0, "\n".join(summary) or proc.stdout + proc.stderr
