"""signaling_app's wheelhouse: built from the locks, the same bytes every time.

playbooks/wheelhouse.yml builds, on this machine, the wheelhouses a deploy copies to hosts
with Debian 12's Python 3.11.2 on x86_64 and on aarch64 (two made-up hosts run with
ansible_connection=local). It builds twice, into two empty caches with two empty pip
caches; the second time from a copy of app/ whose files have other modes and times, under
umask 002. A deploy of the same release must install the same wheels, byte for byte, so the
two builds must agree to the byte. Once more for Debian 13's Python 3.13.5: this controller's
Python fetches the wheels of another Python. Needs PyPI, as a deploy's controller does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from lock_helpers import LOCKS, read_lock
from packaging import tags
from packaging.utils import parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
PYTHON = "3.11.2"  # Debian 12's
TRIXIE_PYTHON = "3.13.5"  # Debian 13's
LOCK_OF = {PYTHON: "py3.11.txt", TRIXIE_PYTHON: "py3.13.txt"}
HOSTS = {"amd": "x86_64", "arm": "aarch64"}


def _run(tmp: Path, cache: Path, hosts: dict[str, str], *extra: str, python: str = PYTHON,
         source: Path | None = None, umask: int = 0o022) -> subprocess.CompletedProcess:
    """playbooks/wheelhouse.yml for ``hosts`` ({name: machine}) with ``python`` into ``cache``,
    with a pip cache of its own."""
    tmp.mkdir(parents=True, exist_ok=True)
    inventory = tmp / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
                 "signaling_app_wheel_python_version": python},
        "children": {"signaling_app": {"hosts": {h: {"signaling_app_wheel_arch": a} for h, a in hosts.items()}}},
    }}))
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), "playbooks/wheelhouse.yml",
            "-e", f"signaling_app_wheelhouse_cache={cache}"]
    if source:
        argv += ["-e", f"signaling_app_source_dir={source}"]
    for var in extra:
        argv += ["-e", var]
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               PIP_CACHE_DIR=str(tmp / "pip-cache"))
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, umask=umask)


def _build(tmp: Path, python: str = PYTHON, **kwargs) -> dict[str, Path]:
    """Build for HOSTS with ``python`` into tmp/cache; return {machine: its wheelhouse directory}."""
    proc = _run(tmp, tmp / "cache", HOSTS, python=python, **kwargs)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    (version_dir,) = (tmp / "cache").iterdir()
    return {arch: version_dir / f"py{python}-{arch}" for arch in HOSTS.values()}


def _loadable(python: str, arch: str) -> set[tags.Tag]:
    """The wheel tags CPython ``python`` loads on a Debian host of ``arch`` (glibc 2.17 to 2.41)."""
    version = tuple(int(part) for part in python.split(".")[:2])
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(41, 16, -1)] + [f"manylinux2014_{arch}"]
    return {*tags.cpython_tags(version, platforms=platforms),
            *tags.compatible_tags(version, f"cp{version[0]}{version[1]}", platforms)}


def _sums(wheelhouse: Path) -> dict[str, str]:
    """SHA256SUMS as {file name: sha256}."""
    return {name: digest for digest, name in
            (line.split("  ") for line in (wheelhouse / "SHA256SUMS").read_text().splitlines())}


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> tuple[dict[str, Path], dict[str, Path]]:
    base = tmp_path_factory.mktemp("wheelhouse")
    copy = base / "app"
    shutil.copytree(ROOT / "app", copy, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"))
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o775 if path.is_dir() else 0o664)
        os.utime(path, (1_000_000_000, 1_000_000_000))
    return _build(base / "first"), _build(base / "second", source=copy, umask=0o002)


@pytest.fixture(scope="module")
def wheelhouses(builds, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """{python: {machine: wheelhouse}}: Debian 12's (the first build) and Debian 13's."""
    return {PYTHON: builds[0], TRIXIE_PYTHON: _build(tmp_path_factory.mktemp("wheelhouse-3.13"), TRIXIE_PYTHON)}


def test_two_builds_are_byte_for_byte_the_same(builds):
    first, second = builds
    for arch in HOSTS.values():
        assert (first[arch] / "SHA256SUMS").read_text() == (second[arch] / "SHA256SUMS").read_text(), arch


@pytest.mark.parametrize("arch", HOSTS.values())
def test_checksums_list_exactly_the_wheels(builds, arch):
    wheelhouse = builds[0][arch]
    assert {p.name for p in wheelhouse.iterdir()} == {*_sums(wheelhouse), "SHA256SUMS"}
    for name, digest in _sums(wheelhouse).items():
        assert hashlib.sha256((wheelhouse / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("arch", HOSTS.values())
@pytest.mark.parametrize("python", LOCK_OF)
def test_dependencies_are_the_files_the_lock_pins(wheelhouses, python, arch):
    """Each host's wheels are those its Python's lock pins, and that Python loads them."""
    lock = read_lock(LOCKS / LOCK_OF[python])
    deps = {}
    for name, digest in _sums(wheelhouses[python][arch]).items():
        dist, version, _, wheel_tags = parse_wheel_filename(name)
        if dist != "signaling":
            deps[dist] = (str(version), digest, wheel_tags)
    assert deps.keys() == lock.keys()
    for dist, (version, digest, wheel_tags) in deps.items():
        assert version == lock[dist][0], dist
        assert digest in lock[dist][1], f"{dist}: {digest} is not one of the lock's files"
        platforms = {t.platform for t in wheel_tags}
        assert platforms == {"any"} or all(p.endswith(arch) for p in platforms), (dist, platforms)
        assert wheel_tags & _loadable(python, arch), (dist, sorted(map(str, wheel_tags)))


def test_both_machines_get_the_same_app_wheel(builds):
    amd, arm = (_sums(builds[0][a]) for a in ("x86_64", "aarch64"))
    (app,) = [n for n in amd if n.startswith("signaling-")]
    assert app in arm and amd[app] == arm[app]
    assert amd.keys() != arm.keys()  # the native ones differ


def test_app_wheel_holds_the_source_with_fixed_modes_and_times(builds):
    (wheel,) = builds[0]["x86_64"].glob("signaling-*.whl")
    source = {str(p.relative_to(ROOT / "app" / "src")) for p in (ROOT / "app" / "src" / "signaling").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    with zipfile.ZipFile(wheel) as zf:
        members = zf.infolist()
    assert {m.filename for m in members if not m.filename.startswith("signaling-")} == source
    assert {m.date_time for m in members} == {(1980, 1, 1, 0, 0, 0)}
    assert {m.external_attr >> 16 for m in members if not m.filename.endswith("/RECORD")} == {0o100644}


def test_cache_key_follows_the_lock(builds, tmp_path):
    """A changed lock under the same version and source is a new build, not the cached one."""
    first = builds[0]["x86_64"].parent
    copy = tmp_path / "app"
    shutil.copytree(ROOT / "app", copy, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"))
    with (copy / "locks" / "py3.11.txt").open("a") as f:
        f.write("# changed\n")
    proc = _run(tmp_path, first.parent, {"amd": "x86_64"}, source=copy)
    assert proc.returncode == 0, proc.stdout[-6000:]
    (new,) = {p.name for p in first.parent.iterdir()} - {first.name}
    assert new.split("-")[0] == first.name.split("-")[0]  # the same version, another fingerprint
    assert (first.parent / new / f"py{PYTHON}-x86_64" / "SHA256SUMS").is_file()


@pytest.mark.parametrize(
    ("extra", "hosts", "message"),
    [
        (["signaling_app_wheel_python_version=3.12.3"], {"amd": "x86_64"},
         "amd runs Python 3.12.3 on x86_64, which no dependency lock covers: py3.12.txt does not exist"),
        ([], {"rv": "riscv64"}, "rv runs Python 3.11.2 on riscv64, which no dependency lock covers: "
                                "py3.11.txt covers only x86_64, aarch64"),
    ],
    ids=["python-3.12", "riscv64"],
)
def test_preflight_refuses_a_target_no_lock_covers(tmp_path, extra, hosts, message):
    proc = _run(tmp_path, tmp_path / "cache", hosts, *extra)
    assert proc.returncode != 0
    assert message in proc.stdout
    assert ("Locks in " in proc.stdout and "py3.11.txt (Python 3.11.2 on x86_64, aarch64), "
            "py3.13.txt (Python 3.13.5 on x86_64, aarch64)." in proc.stdout)
    assert not (tmp_path / "cache").exists()
