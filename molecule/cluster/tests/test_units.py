"""cluster scenario: the proxy host's nginx or Apache and the Redis host's redis-server run in their
sandboxes, rated within the issue's targets (molecule/sandbox_checks.py; the role-level scenarios
prove reloads, log rotation and renewals under them).
"""

from sandbox_checks import (  # noqa: F401 (collected here)
    test_unit_exposure_within_target,
    test_unit_runs_in_its_sandbox,
    test_unit_writes_only_its_paths,
)
