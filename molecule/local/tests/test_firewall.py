"""local scenario: the host firewall (molecule/firewall_checks.py) after `make deploy`, which ran
inside the host with ansible_connection local, as an operator logged in over SSH from the
controller would (tasks/make_deploy.yml passes SSH_CONNECTION): SSH stays open to the controller,
the app instances and Redis do not."""

import pytest
from firewall_checks import *  # noqa: F403 (collects the firewall checks)


@pytest.fixture(scope="module")
def controller_reaches() -> frozenset[str]:
    """The operator's SSH session came from the controller: the firewall keeps SSH open to it."""
    return frozenset({"ssh"})
