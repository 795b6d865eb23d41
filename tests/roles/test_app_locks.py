"""app/locks/: the app's pinned, hashed dependencies agree with app/pyproject.toml.

Offline checks of what `make lock` (app/locks/update.sh) wrote, so a change to the
app's dependencies without a new lock fails here, before a deploy would.
"""

from __future__ import annotations

import re
import tomllib

import pytest
from lock_helpers import LOCKS, lock_header, read_lock
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = tomllib.loads((LOCKS.parent / "pyproject.toml").read_text())
TARGET_LOCKS = sorted(LOCKS.glob("py*.txt"))
# "<python> <glibc>" of each target in update.sh; a lock per line.
SCRIPT_TARGETS = re.findall(r'(?m)^\s*"([0-9.]+) ([0-9.]+)"', (LOCKS / "update.sh").read_text())


def test_every_target_of_the_script_has_its_lock():
    assert SCRIPT_TARGETS, "no targets found in app/locks/update.sh"
    assert {f"py{python.rsplit('.', 1)[0]}.txt" for python, _ in SCRIPT_TARGETS} == {p.name for p in TARGET_LOCKS}
    for python, glibc in SCRIPT_TARGETS:
        header = lock_header(LOCKS / f"py{python.rsplit('.', 1)[0]}.txt")
        assert (header["python"], header["glibc"]) == (python, glibc)


@pytest.mark.parametrize(("lock", "python", "glibc"),
                         [("py3.11.txt", "3.11.2", "2.36"), ("py3.13.txt", "3.13.5", "2.41")],
                         ids=["debian-12", "debian-13"])
def test_each_debian_release_on_both_machines_is_covered(lock, python, glibc):
    header = lock_header(LOCKS / lock)
    assert (header["python"], header["glibc"]) == (python, glibc)
    assert set(header["arches"].split()) == {"x86_64", "aarch64"}


def test_every_lock_pins_the_versions_the_app_is_tested_with():
    """The app's tests run on the controller's Python 3.11 with py3.11.txt's versions (Makefile
    APP_LOCK): a package every lock has is at the same version in all of them."""
    tested = read_lock(LOCKS / "py3.11.txt")
    for lock in TARGET_LOCKS:
        for name, (version, _) in read_lock(lock).items():
            if name in tested:
                assert version == tested[name][0], f"{lock.name} pins {name}=={version}, py3.11.txt {tested[name][0]}"


@pytest.mark.parametrize("lock", TARGET_LOCKS, ids=lambda p: p.name)
def test_lock_pins_every_dependency_pyproject_asks_for(lock):
    """Each dependency whose markers hold on a target is pinned within its range, and nothing else is direct."""
    header = lock_header(lock)
    pins = read_lock(lock)
    for arch in header["arches"].split():
        env = default_environment() | {
            "python_version": header["python"].rsplit(".", 1)[0], "python_full_version": header["python"],
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": arch,
        }
        for spec in PYPROJECT["project"]["dependencies"]:
            requirement = Requirement(spec)
            if requirement.marker and not requirement.marker.evaluate(env):
                continue
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{lock.name} lacks {name} ({spec}): run `make lock`"
            assert requirement.specifier.contains(pins[name][0], prereleases=True), (
                f"{lock.name} pins {name}=={pins[name][0]}, outside {spec}: run `make lock`")


def test_build_backend_is_pinned_within_build_system_requires():
    pins = read_lock(LOCKS / "build.txt")
    for spec in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins and requirement.specifier.contains(pins[name][0]), f"build.txt vs {spec}: run `make lock`"


def test_aiohttp_has_an_upper_bound():
    """wsconn.py uses private aiohttp internals: only minor releases CI has tested may install."""
    (aiohttp,) = [Requirement(s) for s in PYPROJECT["project"]["dependencies"] if Requirement(s).name == "aiohttp"]
    assert any(s.operator == "<" for s in aiohttp.specifier), str(aiohttp)
