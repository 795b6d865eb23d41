"""default scenario: the sandboxes of nginx, coturn and redis-server (molecule/sandbox_checks.py).

Rated within the issue's targets and in force; nginx reloads, rotates its logs and serves a renewed
certificate under its drop-in; here only (nginx moves its PID file under the sandbox, the riskiest
switch), check mode with the sandbox turned off changes nothing, and turning it off and on again
works. Runs last of the scenario's suites: the switch restarts nginx.
"""

from sandbox_checks import *  # noqa: F403 (collects the shared checks)
from sandbox_checks import test_check_mode_predicts_and_changes_nothing, test_sandbox_switched_off_and_on  # noqa: F401
