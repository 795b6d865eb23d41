"""cluster scenario: TURN as browsers get it (molecule/turn_checks.py), coturn on a host
without a proxy (the redis host): its own certificate from the run's CA, made by the tls
role there, TURN over TLS on 443 (``coturn_tls_port: 443``, bound by turnserver's user with
the role drop-in's capability), the per-session quota, certificates re-read on reload.
"""

from turn_checks import *  # noqa: F403 (collects the shared checks)
