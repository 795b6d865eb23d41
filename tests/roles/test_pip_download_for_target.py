"""roles/signaling_app/files/pip_download_for_target.py: markers judged for the target."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pip._vendor.packaging.markers import Marker, default_environment

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "signaling_app" / "files" / "pip_download_for_target.py"
_spec = importlib.util.spec_from_file_location("pip_download_for_target", SCRIPT)
target = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(target)


@pytest.mark.parametrize(
    ("version", "marker", "expected"),
    [
        ("3.11.2", 'python_full_version < "3.11.3"', True),  # redis -> async-timeout on Debian 12
        ("3.11.9", 'python_full_version < "3.11.3"', False),
        ("3.11.2", 'python_version == "3.11"', True),
        ("3.13.5", 'python_version < "3.12"', False),
    ],
)
def test_markers_follow_the_target_version(version, marker, expected):
    env = target.target_environment(default_environment(), version, "x86_64")
    assert Marker(marker).evaluate(env) is expected


def test_machine_and_platform_are_the_targets():
    env = target.target_environment(default_environment(), "3.11.2", "aarch64")
    assert Marker('platform_machine == "aarch64" and sys_platform == "linux"').evaluate(env)


@pytest.mark.parametrize("version", ["3.11", "3", "3.11.x", ""])
def test_partial_versions_are_refused(version):
    with pytest.raises(ValueError, match="full Python version"):
        target.target_environment(default_environment(), version, "x86_64")
