"""apache scenario: hardening judged by outside tools (molecule/hardening_checks.py).

testssl.sh grades the Apache deployment, HSTS preload on here (A+ required); Redis on
loopback with its password; coturn with REST credentials only; no secret in any log.
The fixtures find their hosts by inventory group; no test takes testinfra's ``host``.
"""

from hardening_checks import *  # noqa: F403 (collects the shared checks)
