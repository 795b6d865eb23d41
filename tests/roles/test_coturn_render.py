"""coturn's templates rendered by Ansible itself (issue 11, TURN over TLS and quota vs rooms):

* turnserver.conf offers TURN over TLS with the tls role's certificate as coturn's own copy,
  the proxy's TLS profile (the same cipher list the proxy model renders for nginx and
  Apache; TLS 1.0 and 1.1 off, TLS 1.2 off too for the modern profile) and a user quota
  derived from the room size and the URLs offered; ``coturn_tls: false`` turns TLS off;
* the systemd drop-in gives coturn its reload (SIGUSR2) and, only for a port below 1024,
  the capability to bind it.

The configuration is run by real coturn in the browser tests (app/tests/coturn.py) and in
Molecule; here each variant's text is checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from local_playbook import ROOT, render_templates, role_vars_files

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import tls

ROLE = ROOT / "roles" / "coturn"

COMMON = {"coturn_public_host": "turn.example.org", "coturn_static_auth_secret": "0123456789abcdef0123",
          "coturn_room_max_peers": 50}
VARIANTS = {
    "default": {},
    "tls-443": {"coturn_tls_port": 443},
    "modern": {"coturn_tls_profile": "modern"},
    "no-tls": {"coturn_tls": False},
    "small-rooms": {"coturn_room_max_peers": 10},
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("render")
    render_templates(out, [ROLE / "templates" / f"{name}.j2" for name in ("turnserver.conf", "coturn-tls.conf")],
                     role_vars_files(ROLE),
                     variants={name: {**COMMON, **variant} for name, variant in VARIANTS.items()})
    return out


def config(rendered: Path, name: str) -> list[str]:
    return [line for line in (rendered / f"{name}-turnserver.conf").read_text().splitlines()
            if line and not line.startswith("#")]


def dropin(rendered: Path, name: str) -> list[str]:
    return [line for line in (rendered / f"{name}-coturn-tls.conf").read_text().splitlines()
            if line and not line.startswith("#")]


def test_tls_with_coturns_copy_of_the_certificate_and_the_proxy_profile(rendered):
    lines = config(rendered, "default")
    intermediate = tls.tls_profile("intermediate")
    assert lines[lines.index("tls-listening-port=5349"):lines.index("no-dtls") + 1] == [
        "tls-listening-port=5349",
        "cert=/etc/coturn/tls/fullchain.pem",
        "pkey=/etc/coturn/tls/privkey.pem",
        f'cipher-list="{":".join(intermediate["ciphers"])}"',
        "no-tlsv1",
        "no-tlsv1_1",
        "no-dtls",
    ]
    assert "no-tls" not in lines
    assert "no-rfc5780" in lines  # no alternate ports (listening-port + 1, tls-listening-port + 1)


def test_modern_profile_offers_tls13_only(rendered):
    lines = config(rendered, "modern")
    assert {"no-tlsv1", "no-tlsv1_1", "no-tlsv1_2"} <= set(lines)
    assert not [line for line in lines if line.startswith("cipher-list=")]


def test_tls_off(rendered):
    lines = config(rendered, "no-tls")
    assert "no-tls" in lines and "no-dtls" in lines
    assert not [line for line in lines if line.startswith(("tls-listening-port=", "cert=", "pkey="))]


@pytest.mark.parametrize(("variant", "quota"), [
    ("default", 50 * 3 * 2),     # 50 peers, URLs: turn udp, turn tcp, turns
    ("no-tls", 50 * 2 * 2),      # no turns: URL
    ("small-rooms", 10 * 3 * 2),
])
def test_user_quota_follows_room_size_and_urls(rendered, variant, quota):
    assert f"user-quota={quota}" in config(rendered, variant)


def test_dropin_reloads_with_sigusr2(rendered):
    assert dropin(rendered, "default") == ["[Service]", "ExecReload=/bin/kill -USR2 $MAINPID"]


def test_dropin_binds_443_as_turnserver_only_when_needed(rendered):
    assert dropin(rendered, "tls-443") == ["[Service]", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                                           "ExecReload=/bin/kill -USR2 $MAINPID"]
    assert "tls-listening-port=443" in config(rendered, "tls-443")
