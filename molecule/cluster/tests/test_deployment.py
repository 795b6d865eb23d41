"""cluster verify: the checks every deployment must pass whatever its topology
(molecule/deployment_checks.py), here with the proxy, the app instances and
Redis on hosts of their own.

All of them apply as they are: instances are read at the address they listen
on (the app hosts' private addresses here), the proxy host is asked over
python3 rather than curl, and controller secrets are those of the groups the
inventory has (no `turn` host here). Uploads round-trip because the proxy, not
being an app host, sends ``POST /api/uploads`` and ``GET /uploads/`` to the
instances of one app host (``proxy_uploads_host``).
"""

from deployment_checks import *  # noqa: F403
