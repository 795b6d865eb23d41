"""signaling_app after an OS upgrade that changed python3's X.Y (Debian 12's 3.11 to 13's 3.13).

A release's venv runs the python3 that made it; once that is another X.Y, the release cannot run.
The role's own tasks run here on the controller, as root, under a temporary /opt/signaling:
preflight.yml (which reads /usr/bin/python3's version and the release's pyvenv.cfg), release.yml
(which installs the release, or removes and installs again one made by another Python), then
run.yml's link switch and restart decision, taken from the file as they are. A stand-in wheelhouse
(one pure-Python ``signaling`` wheel with no dependencies) replaces the controller's build, so no
package index is needed; the venv and pip are the host's real ones.

* a release whose pyvenv.cfg names another X.Y is reinstalled at the same path for /usr/bin/python3
  and flags a restart, though the ``current`` link does not move; the run after it changes nothing;
* check mode reports that reinstall and its restart and changes nothing;
* a release made by this python3, or by another micro version of it, is left alone: changed=0, no
  restart; a new release restarts once, by the link, and not by the reinstall;
* a rollback to a release made by another Python is refused before any change.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml
from local_playbook import ROOT, run_local_playbook

ROLE = ROOT / "roles" / "signaling_app"
VERSION = "7.1.0"
# What the Ansible run ran, read by the tests (written with changed_when: false).
RESULT_FACTS = [
    "__signaling_app_python3", "__signaling_app_venv_python", "__signaling_app_stale",
    "__signaling_app_needs_install", "__signaling_app_restart_needed",
]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the role's files are root's (owner: root)"),
    pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="the role makes venvs with /usr/bin/python3"),
]


def _host_python() -> str:
    return subprocess.run(["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()


HOST_PYTHON = _host_python() if Path("/usr/bin/python3").exists() else "3.11.2"
HOST_XY = ".".join(HOST_PYTHON.split(".")[:2])
# The Python of the OS release before (or after) the host's: Debian 12's 3.11 or Debian 13's 3.13.
OTHER_PYTHON = "3.11.2" if HOST_XY == "3.13" else "3.13.5"
OTHER_XY = ".".join(OTHER_PYTHON.split(".")[:2])


def _run_tasks(*names: str) -> list[dict]:
    """The tasks of run.yml with these names, as the file has them."""
    tasks = {t["name"]: t for t in yaml.safe_load((ROLE / "tasks" / "run.yml").read_text())}
    return [tasks[name] for name in names]


def _stand_in_wheel(wheelhouse: Path) -> None:
    """``signaling-VERSION-py3-none-any.whl``: the package, its static directory and a console script."""
    dist = f"signaling-{VERSION}.dist-info"
    files = {
        "signaling/__init__.py": "def main():\n    print('stand-in')\n",
        "signaling/static/index.html": "<!doctype html>\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: signaling\nVersion: {VERSION}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[console_scripts]\nsignaling = signaling:main\n",
    }
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(text.encode())}" for name, text in files.items()]
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheelhouse.mkdir(parents=True)
    with zipfile.ZipFile(wheelhouse / f"signaling-{VERSION}-py3-none-any.whl", "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)


def _stale_release(release: Path, python: str = OTHER_PYTHON) -> None:
    """A release as Debian 12's python3 left it, seen after the upgrade: its pyvenv.cfg names
    ``python``, its packages sit under lib/python<X.Y>/, its wheelhouse holds that Python's wheels."""
    xy = ".".join(python.split(".")[:2])
    (release / "bin").mkdir(parents=True)
    (release / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {python}\n")
    (release / "bin" / "python3").symlink_to("/usr/bin/python3")
    (release / "bin" / "python").symlink_to("python3")
    (release / "bin" / f"python{xy}").symlink_to("python3")
    (release / "bin" / "signaling").write_text(f"#!{release}/bin/python\nfrom signaling import main\nmain()\n")
    (release / "bin" / "signaling").chmod(0o755)
    package = release / "lib" / f"python{xy}" / "site-packages" / "signaling"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (release / "wheelhouse").mkdir()
    (release / "wheelhouse" / f"aiohttp-3.14.5-cp{xy.replace('.', '')}-manylinux.whl").write_text("")
    (release / "static").symlink_to(package / "static")


class Deployment:
    """A temporary /opt/signaling, and runs of the role's tasks on it."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "opt" / "signaling"
        self.release = self.root / "releases" / VERSION
        self.current = self.root / "current"
        self.wheelhouse = tmp / "wheelhouse"
        _stand_in_wheel(self.wheelhouse)
        self.runs = 0

    def run(self, *args: str, must_succeed: bool = True, **extra) -> tuple[dict, int, subprocess.CompletedProcess]:
        """preflight.yml, release.yml and run.yml's link and decision; return the facts of
        RESULT_FACTS (with the stale-venv removal's result as ``removed``), the recap's changed
        count and the run."""
        self.runs += 1
        out = self.tmp / f"result-{self.runs}.json"
        play = [{
            "name": "The role's release and restart decision, on the controller",
            "hosts": "localhost",
            "gather_facts": False,
            "vars_files": [str(ROLE / "vars" / "main.yml")],
            "tasks": [
                *({"name": name, "ansible.builtin.include_role": {"name": "signaling_app", "tasks_from": tasks_from}}
                  for name, tasks_from in [("Preflight", "preflight.yml"), ("Release", "release.yml")]),
                *_run_tasks("Switch the current link to the chosen release",
                            "Decide whether running instances need a restart"),
                {
                    "name": "Write what the run decided",
                    "ansible.builtin.copy": {
                        "dest": str(out),
                        "mode": "0600",
                        "content": "{{ {" + ", ".join(f"'{f}': {f}" for f in RESULT_FACTS)
                                   + ", 'removed': __signaling_app_stale_venv} | to_json }}",
                    },
                    "changed_when": False,
                    "check_mode": False,
                },
            ],
        }]
        playbook = self.tmp / f"play-{self.runs}.yml"
        playbook.write_text(json.dumps(play))
        proc = run_local_playbook(playbook, {
            "__signaling_app_root": str(self.root),
            "__signaling_app_wheelhouse": str(self.wheelhouse),
            "signaling_app_version": VERSION,
            # The lock preflight checks for; the wheelhouse is the stand-in above.
            "signaling_app_wheel_python_version": "3.11.2",
            "signaling_app_wheel_arch": "x86_64",
            # configure.yml's results, which run.yml's decision reads: unchanged.
            "__signaling_app_config": {"changed": False},
            "__signaling_app_unit_file": {"changed": False},
            **extra,
        }, *args, must_succeed=must_succeed)
        if proc.returncode:
            return {}, -1, proc
        (changed,) = re.findall(r"^localhost\s+:.*\bchanged=(\d+)", proc.stdout, re.MULTILINE)
        return json.loads(out.read_text()), int(changed), proc

    def venv_python(self) -> str:
        return re.search(r"^version\s*=\s*(\S+)", (self.release / "pyvenv.cfg").read_text(), re.MULTILINE).group(1)

    def snapshot(self) -> dict[str, tuple]:
        """Every path under the temporary /opt/signaling: a link's target, or the size, mode and mtime."""
        return {str(p.relative_to(self.root)): (os.readlink(p),) if p.is_symlink() else
                (p.lstat().st_size, p.lstat().st_mode, p.lstat().st_mtime_ns)
                for p in [self.root, *self.root.rglob("*")]}


@pytest.fixture(scope="module", autouse=True)
def _no_pythonpath():
    """The venv's python must import the installed stand-in, not a source tree the tests were given."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PYTHONPATH", raising=False)
        yield


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Deployment, dict, int]:
    """A first deploy: no release on the host yet; the deployment, what the run decided, its changed count."""
    deployment = Deployment(tmp_path_factory.mktemp("installed"))
    return deployment, *deployment.run()[:2]


def _stale(tmp: Path) -> Deployment:
    """The running release, its venv made by OTHER_PYTHON: `current` points at it."""
    deployment = Deployment(tmp)
    _stale_release(deployment.release)
    deployment.current.symlink_to(deployment.release)
    return deployment


@pytest.fixture
def stale(tmp_path) -> Deployment:
    return _stale(tmp_path)


@pytest.fixture(scope="module")
def reinstalled(tmp_path_factory) -> tuple[Deployment, dict, int]:
    """The stale release after a run: the deployment, what the run decided, its changed count."""
    deployment = _stale(tmp_path_factory.mktemp("reinstalled"))
    return deployment, *deployment.run()[:2]


def test_stale_release_is_reinstalled_in_place_and_restarts(reinstalled):
    deployment, result, changed = reinstalled
    assert result["__signaling_app_python3"] == HOST_PYTHON
    assert result["__signaling_app_venv_python"] == OTHER_PYTHON
    assert result["__signaling_app_stale"] is True
    assert result["removed"]["changed"] is True
    assert result["__signaling_app_restart_needed"] is True
    assert changed > 0
    # The same path, now a venv of /usr/bin/python3 with the release installed from the wheelhouse.
    release = deployment.release
    assert os.readlink(deployment.current) == str(release)
    assert deployment.venv_python() == HOST_PYTHON
    assert not (release / "lib" / f"python{OTHER_XY}").exists()
    assert sorted(p.name for p in (release / "wheelhouse").iterdir()) == [f"signaling-{VERSION}-py3-none-any.whl"]
    ran = subprocess.run([str(release / "bin" / "signaling")], capture_output=True, text=True, check=True)
    assert ran.stdout == "stand-in\n"
    static = release / "lib" / f"python{HOST_XY}" / "site-packages" / "signaling" / "static"
    assert os.readlink(release / "static") == str(static)


def test_run_after_the_reinstall_changes_nothing(reinstalled):
    deployment = reinstalled[0]
    before = deployment.snapshot()
    result, changed, _ = deployment.run()
    assert result["__signaling_app_stale"] is False
    assert result["removed"].get("skipped") is True
    assert result["__signaling_app_restart_needed"] is False
    assert changed == 0
    assert deployment.snapshot() == before


def test_check_mode_reports_the_reinstall_and_changes_nothing(stale):
    before = stale.snapshot()
    result, changed, _ = stale.run("--check")
    assert result["__signaling_app_stale"] is True
    assert result["removed"]["changed"] is True
    assert result["__signaling_app_restart_needed"] is True
    assert changed > 0
    assert stale.snapshot() == before


def test_new_release_restarts_by_the_link_alone(installed):
    deployment, result, _ = installed
    assert result["__signaling_app_needs_install"] is True
    assert result["__signaling_app_stale"] is False
    assert result["removed"].get("skipped") is True
    assert result["__signaling_app_restart_needed"] is True
    assert deployment.venv_python() == HOST_PYTHON


@pytest.mark.parametrize("micro", [0, 1], ids=["same-python", "other-micro-version"])
def test_release_of_this_python_is_left_alone(installed, micro):
    deployment = installed[0]
    cfg = deployment.release / "pyvenv.cfg"
    made = cfg.read_text()
    x, y, z = (int(n) for n in HOST_PYTHON.split("."))
    cfg.write_text(made.replace(HOST_PYTHON, f"{x}.{y}.{z + micro}"))
    try:
        before = deployment.snapshot()
        result, changed, _ = deployment.run()
        after = deployment.snapshot()
    finally:
        cfg.write_text(made)
    assert result["__signaling_app_stale"] is False
    assert result["__signaling_app_needs_install"] is False
    assert result["__signaling_app_restart_needed"] is False
    assert changed == 0
    assert after == before


def test_rollback_to_a_release_of_another_python_is_refused(stale):
    _stale_release(stale.root / "releases" / "7.0.0")
    before = stale.snapshot()
    _, _, proc = stale.run(must_succeed=False, signaling_app_rollback=True)
    assert proc.returncode != 0
    assert (f"Release 7.0.0 on localhost was installed by Python {OTHER_PYTHON} and /usr/bin/python3 is now "
            f"{HOST_PYTHON}: it cannot run") in " ".join(proc.stdout.split())
    assert stale.snapshot() == before
