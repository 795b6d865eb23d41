"""apache scenario (Apache on the app host): the RFC 6455 conformance suite through the proxy.

Every case of app/tests/rfc6455.py, as molecule/ws_conformance_checks.py runs them;
what Apache answers differently from the app is written in the cases.
"""

from __future__ import annotations

from ws_conformance_checks import *  # noqa: F403 (collects the RFC 6455 cases)
