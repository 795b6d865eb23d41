"""Run ``pip download`` as if on the target, for the signaling_app wheelhouse.

``pip download --python-version X --platform Y`` picks wheels for the target but still
evaluates environment markers (``async-timeout; python_full_version < "3.11.3"``) against
the controller's own interpreter, so a wheelhouse built on a newer controller Python can
miss a dependency the target needs. This wrapper makes pip's marker environment describe
the target, then runs pip unchanged:

    python pip_download_for_target.py PYTHON_FULL_VERSION MACHINE -- pip-download-args...
"""

from __future__ import annotations

import runpy
import sys


def target_environment(base: dict[str, str], full_version: str, machine: str) -> dict[str, str]:
    """Return ``base`` (a PEP 508 marker environment) rewritten for the target."""
    parts = full_version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"need a full Python version like 3.11.2, got {full_version!r}")
    env = dict(base)
    env.update(
        python_version=".".join(parts[:2]),
        python_full_version=full_version,
        implementation_name="cpython",
        implementation_version=full_version,
        platform_python_implementation="CPython",
        platform_machine=machine,
        platform_system="Linux",
        sys_platform="linux",
        os_name="posix",
    )
    return env


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.exit(__doc__)
    full_version, machine, pip_args = argv[0], argv[1], argv[3:]
    from pip._vendor.packaging import markers  # pip's own copy is the one its resolver uses

    env = target_environment(markers.default_environment(), full_version, machine)
    markers.default_environment = lambda: dict(env)
    sys.argv = ["pip", "download", *pip_args]
    runpy.run_module("pip", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
