"""acme scenario: nginx, coturn and redis-server run in their sandboxes (molecule/sandbox_checks.py),
so the renewal through Pebble that test_acme.py proves (certbot.timer's service on the host,
HTTP-01 answered through nginx, the deploy hook's `nginx -t` then reload, the new certificate
served by the same master) happened under nginx's drop-in. Runs after test_acme.py.
"""

from sandbox_checks import (  # noqa: F401 (collected here)
    test_unit_exposure_within_target,
    test_unit_runs_in_its_sandbox,
)
