"""apache scenario: the sandboxes of Apache, coturn and redis-server (molecule/sandbox_checks.py).

Rated within the issue's targets and in force; Apache reloads gracefully, rotates its logs (Debian's
postrotate reloads it) and serves a renewed certificate under its drop-in.
"""

from sandbox_checks import *  # noqa: F403 (collects the shared checks)
