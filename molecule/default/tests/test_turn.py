"""default scenario: TURN as browsers get it (molecule/turn_checks.py), coturn on the one
host that is also the proxy: TURN over TLS on 5349 with the certificate the proxy serves,
the per-session quota derived from the room size, certificates re-read in place on reload.
"""

from turn_checks import *  # noqa: F403 (collects the shared checks)
