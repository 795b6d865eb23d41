"""acme scenario: nginx, coturn and redis-server run in their sandboxes (molecule/sandbox_checks.py),
so the renewal through Pebble that test_acme.py proves (HTTP-01 answered through nginx, the new
certificate served after a reload) happened under nginx's drop-in. Runs after test_acme.py.
"""

from sandbox_checks import (  # noqa: F401 (collected here)
    test_unit_exposure_within_target,
    test_unit_runs_in_its_sandbox,
)
