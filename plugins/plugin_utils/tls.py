# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mozilla's server-side TLS profiles (guideline 6.0): the proxy's TLS, and coturn's, which
must offer what the proxy offers."""

from __future__ import annotations

#: Mozilla server-side TLS guideline 6.0 (ssl-config-generator guidelines/6.0.json).
TLS_PROFILES = {
    "intermediate": {
        "protocols": ["TLSv1.2", "TLSv1.3"],
        "ciphers": [
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-RSA-CHACHA20-POLY1305",
        ],
    },
    "modern": {
        "protocols": ["TLSv1.3"],
        "ciphers": [],
    },
}
TLS_CURVES = ["X25519", "prime256v1", "secp384r1"]
TLS_PQ_CURVE = "X25519MLKEM768"
TLS_PQ_MIN_OPENSSL = (3, 5)


def tls_profile(name):
    """The protocols and TLS 1.2 cipher suites of a Mozilla profile, for TLS servers other than
    the proxy (coturn's TURN over TLS) that must offer the same."""
    if name not in TLS_PROFILES:
        raise ValueError(f"profile must be one of {', '.join(sorted(TLS_PROFILES))}, got {name!r}")
    return {"protocols": list(TLS_PROFILES[name]["protocols"]), "ciphers": list(TLS_PROFILES[name]["ciphers"])}
