# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the nginx and Apache renderers share: the model check, the error documents, and the
helpers that indent blocks and quote values."""

from __future__ import annotations

import json

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.validation import _mapping

MANAGED = "# Managed by Ansible (webrtc-edge): rendered from the proxy model, do not edit."


def _check_model(model):
    """Cheap structural check for renderers: refuse anything not built by ``build_proxy_model``."""
    model = _mapping(model, "model")
    missing = {"name", "server_names", "upstream", "tls", "headers", "locations"} - set(model)
    if missing:
        raise ValueError(
            f"input is not a proxy model (missing {', '.join(sorted(missing))}); pipe it through proxy_model first")
    return model


def render_error_document(model, kind="html"):
    """Body of the page answered when every upstream is down or overloaded."""
    _check_model(model)
    if kind == "json":
        return json.dumps({"type": "error", "code": "unavailable",
                           "message": "the signaling service is temporarily unavailable, retry shortly"}) + "\n"
    if kind != "html":
        raise ValueError(f"kind must be html or json, got {kind!r}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">"
        "<title>Service unavailable</title></head>\n<body>\n"
        "<h1>Service unavailable</h1>\n"
        "<p>The signaling service is temporarily unavailable. Please retry in a moment.</p>\n"
        "</body>\n</html>\n"
    )


def _block(lines, indent=1):
    pad = "    " * indent
    return [pad + line if line else "" for line in lines]

def _q(value):
    """Quote a validated value for nginx or Apache (validation refused quotes)."""
    return f'"{value}"'

