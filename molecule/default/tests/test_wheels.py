"""default scenario: the host runs the lock's wheels and a reproducible build of the app.

A deploy of the same release must install the same wheels, byte for byte. The release's
wheelhouse on the app host (``/opt/signaling/current/wheelhouse``, which the deploy copied
from the controller's cache) is measured there and compared with:

- the SHA256SUMS the controller's build recorded beside it;
- the lock (``app/locks/py<X.Y>.txt`` for the host's Python): every dependency wheel is a
  file the lock pins, by its sha256, and every pin has its wheel;
- a fresh build on the controller (``playbooks/wheelhouse.yml`` into an empty cache, as
  another deploy of the same release would make): the same files, the app's wheel included;

and the release's virtualenv holds exactly those wheels, every file as the wheel has it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name, parse_wheel_filename
from releases import PROJECT, run_playbook
from testinfra_helpers import inventory_hosts

testinfra_hosts = inventory_hosts("signaling_app")

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
# Put in every venv by Debian's `python3 -m venv` (ensurepip), not from the wheelhouse.
VENV_SEED = {"pip", "setuptools"}

# Run by the release's Python on the host: every file each wheel's RECORD lists, hashed as
# installed, against the hash the wheel's RECORD gives it.
INSTALLED_FILES = r"""
import base64, csv, hashlib, io, json, sys, zipfile
from importlib import metadata
from pathlib import Path

checked, wrong = 0, []
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(wheel) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1)
        rows = list(csv.reader(io.StringIO(zf.read(record).decode())))
    dist = metadata.distribution(record.split("/")[0].removesuffix(".dist-info").rsplit("-", 1)[0])
    for path, digest, _size in rows:
        head, _, rest = path.partition("/")
        if head.endswith(".data"):  # only purelib/platlib land in site-packages
            kind, _, path = rest.partition("/")
            if kind not in ("purelib", "platlib"):
                continue
        if not digest:  # RECORD itself
            continue
        algorithm, expected = digest.split("=", 1)
        try:
            data = Path(dist.locate_file(path)).read_bytes()
        except OSError:
            wrong.append(f"{wheel.name}: {path} missing")
            continue
        checked += 1
        if base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=").decode() != expected:
            wrong.append(f"{wheel.name}: {path} differs")
print(json.dumps({"checked": checked, "wrong": wrong}))
"""


def _sums(text: str) -> dict[str, str]:
    """``sha256sum`` output as {file name: sha256}."""
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in text.splitlines())}


def _lock(path: Path) -> dict[str, tuple[str, set[str]]]:
    """{name: (version, sha256s)} of a lock's pins (one `name==version` line, its hashes continued)."""
    pins = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if not (words := line.split("#", 1)[0].split()):
            continue
        requirement, *hashes = words
        name, version = requirement.split("==")
        pins[canonicalize_name(name)] = (version, {h.removeprefix("--hash=sha256:") for h in hashes})
    return pins


@pytest.fixture(scope="module")
def release(host) -> str:
    return host.check_output("readlink -f /opt/signaling/current")


@pytest.fixture(scope="module")
def target(host) -> tuple[str, str]:
    """The host's Python (full version) and machine, what its wheelhouse was built for."""
    python = host.check_output("/usr/bin/python3 -c 'import platform; print(platform.python_version())'")
    return python, host.check_output("uname -m")


@pytest.fixture(scope="module")
def wheelhouse(host, release) -> dict[str, str]:
    """{wheel: sha256} of the release's wheelhouse, measured on the host."""
    return _sums(host.check_output(f"cd {release}/wheelhouse && sha256sum -- *.whl"))


@pytest.fixture(scope="module")
def rebuilt(target) -> dict[str, str]:
    """{wheel: sha256} of a wheelhouse built afresh on the controller for the host."""
    cache = EPHEMERAL / "wheelhouse-rebuilt"
    shutil.rmtree(cache, ignore_errors=True)
    asyncio.run(run_playbook("playbooks/wheelhouse.yml", EPHEMERAL / "wheelhouse-rebuilt.log",
                             f"signaling_app_wheelhouse_cache={cache}"))
    (sums,) = cache.glob(f"*/py{target[0]}-{target[1]}/SHA256SUMS")
    return _sums(sums.read_text())


def test_wheelhouse_is_what_the_controller_recorded(host, release, wheelhouse):
    assert _sums(host.file(f"{release}/wheelhouse/SHA256SUMS").content_string) == wheelhouse


def test_dependencies_are_the_files_the_lock_pins(wheelhouse, target):
    lock = _lock(PROJECT / "app" / "locks" / f"py{target[0].rsplit('.', 1)[0]}.txt")
    deps = {}
    for name, digest in wheelhouse.items():
        dist, version, _, _ = parse_wheel_filename(name)
        if dist != "signaling":
            deps[dist] = (str(version), digest)
    assert deps.keys() == lock.keys()
    for dist, (version, digest) in deps.items():
        assert version == lock[dist][0] and digest in lock[dist][1], f"{dist} {version} {digest} is not the lock's"


def test_a_fresh_build_on_the_controller_is_byte_for_byte_the_same(wheelhouse, rebuilt):
    assert rebuilt == wheelhouse


def test_the_venv_holds_exactly_the_wheelhouse(host, release, wheelhouse):
    installed = json.loads(host.check_output(
        f"{release}/bin/python -c 'import json; from importlib import metadata; "
        "print(json.dumps([[d.name, d.version] for d in metadata.distributions()]))'"))
    shipped = {(str(dist), str(version)) for dist, version, _, _ in map(parse_wheel_filename, wheelhouse)}
    assert {(canonicalize_name(n), v) for n, v in installed if canonicalize_name(n) not in VENV_SEED} == shipped


def test_every_installed_file_is_the_wheels(host, release):
    result = json.loads(host.check_output(f"{release}/bin/python -c %s %s", INSTALLED_FILES, f"{release}/wheelhouse"))
    assert result["wrong"] == []
    assert result["checked"] > 100, result
