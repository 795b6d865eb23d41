"""The exporters and the app's process metrics (molecule/exporter_checks.py): each exporter runs
where the inventory says, listens where it should, and exports what it reads from the real thing."""

from exporter_checks import *  # noqa: F403 (collects the shared checks)
