"""`site.yml --check --diff` on the deployed hosts reports changed=0 (molecule/check_mode_checks.py)."""

from check_mode_checks import *  # noqa: F403 (collects the shared check)
