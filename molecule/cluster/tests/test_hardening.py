"""cluster scenario: hardening judged by outside tools (molecule/hardening_checks.py),
with Redis on a host of its own.

testssl.sh grades the proxy's TLS; Redis listens on loopback and its private address
only, refuses commands without the right password, and keeps what it holds across a
restart and a crash (after which every app instance is back on it); coturn (on the redis
host) takes REST credentials only; no secret in any host's logs or command lines. The
fixtures find their hosts by inventory group; no test takes testinfra's ``host``.
"""

from hardening_checks import *  # noqa: F403 (collects the shared checks)
from hardening_checks import test_redis_keeps_data_across_restart_and_crash  # noqa: F401
