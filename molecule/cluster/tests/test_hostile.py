"""cluster scenario: hostile clients through the proxy on a host of its own (nginx, or
Apache with MOLECULE_PROXY=apache), in front of four instances on two app hosts.

Oversized and conflicting requests, path traversal, slow clients, foreign WebSocket
origins, floods, connection loops and authorisation, as molecule/hostile_checks.py
describes them; nothing here is specific to this scenario.
"""

from __future__ import annotations

from hostile_checks import *  # noqa: F403 (collects the hostile-input checks)
