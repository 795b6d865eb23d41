"""default scenario (nginx on the app host): hostile clients through the proxy.

Oversized and conflicting requests, path traversal, slow clients, foreign WebSocket
origins, floods, connection loops and authorisation, as molecule/hostile_checks.py
describes them; nothing here is specific to this scenario.
"""

from __future__ import annotations

from hostile_checks import *  # noqa: F403 (collects the hostile-input checks)
