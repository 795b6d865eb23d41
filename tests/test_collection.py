"""The repository as the Ansible collection webrtc_edge.edge (galaxy.yml).

One version (galaxy.yml, the app, the newest CHANGELOG release) and one licence (LICENSE,
galaxy.yml, every role's meta, the app). `ansible-galaxy collection build` makes a tarball
that `ansible-galaxy collection install` accepts, and the installed copy works on its own: its
roles find their filters by full name, with neither this clone's ansible.cfg nor its paths. The
repository installs from git too (`git+file://<clone>`, as from its URL).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import proxy

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
LICENSE_ID = "GPL-3.0-or-later"


def _app_project() -> dict:
    return tomllib.loads((ROOT / "app" / "pyproject.toml").read_text())["project"]


def _role_meta(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "meta" / "main.yml").read_text())["galaxy_info"]


def test_one_version_in_galaxy_app_and_changelog():
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert releases, "CHANGELOG.md has no release heading '## [X.Y.Z] - date'"
    assert GALAXY["version"] == _app_project()["version"] == releases[0]


def test_one_licence_everywhere():
    assert "GNU GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_text()[:200]
    assert "Version 3" in (ROOT / "LICENSE").read_text()[:200]
    assert GALAXY["license"] == [LICENSE_ID]
    assert _app_project()["license"] == LICENSE_ID
    assert {role: _role_meta(role)["license"] for role in ROLES} == dict.fromkeys(ROLES, LICENSE_ID)


@pytest.mark.parametrize("role", ROLES)
def test_role_is_named_in_the_collection_namespace(role):
    meta = _role_meta(role)
    assert (meta["namespace"], meta["role_name"]) == (GALAXY["namespace"], role)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The collection built from this tree and installed into a directory of its own."""
    tmp = tmp_path_factory.mktemp("collection")
    # Only the destination counts: a webrtc_edge.edge found elsewhere would make `install` skip.
    env = dict(os.environ, ANSIBLE_CONFIG=str(tmp / "none.cfg"), ANSIBLE_COLLECTIONS_PATH=str(tmp / "installed"),
               ANSIBLE_NOCOLOR="1")
    build = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp / "dist"), str(ROOT)],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = (tmp / "dist").glob("*.tar.gz")
    assert tarball.name == f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    tops = {name.split("/")[0] for name in names}
    assert {"roles", "plugins", "playbooks", "app", "meta", "LICENSE", "MANIFEST.json"} <= tops
    assert not tops & {"tests", "molecule", "bench", ".venv", ".git"}, tops
    assert {"app/pyproject.toml", "app/src/signaling/app.py"} <= set(names)
    assert not any(n.startswith("app/tests") for n in names)
    install = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(tmp / "installed"), str(tarball)],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return tmp / "installed"


def _isolated_env(installed: Path, tmp: Path) -> dict:
    """Only the installed collection: no ansible.cfg of this clone, no roles_path into it."""
    return dict(os.environ, ANSIBLE_CONFIG=str(tmp / "none.cfg"), ANSIBLE_COLLECTIONS_PATH=str(installed),
                ANSIBLE_ROLES_PATH=str(tmp / "no-roles"), ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
                ANSIBLE_NOCOLOR="1")


def test_installed_filters_are_listed_by_ansible_doc(installed, tmp_path):
    done = subprocess.run(
        [str(BIN / "ansible-doc"), "-t", "filter", "-l", "--json", f"{GALAXY['namespace']}.{GALAXY['name']}"],
        capture_output=True, text=True, env=_isolated_env(installed, tmp_path), check=False, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = set(json.loads(done.stdout))
    prefix = f"{GALAXY['namespace']}.{GALAXY['name']}."
    assert {prefix + name for name in ("proxy_model", "nginx_site", "apache_site", "tls_profile",
                                       "firewall_model", "firewall_ruleset")} <= listed


PLAYBOOK = """
- name: The installed collection's roles, alone
  hosts: localhost
  gather_facts: false
  vars:
    proxy_server_names: [signal.example.org]
    proxy_upstream_group: all
    proxy_upstreams: [{address: 127.0.0.1, port: 8081}]
    __proxy_openssl_version: OpenSSL 3.0.11 19 Sep 2023
    __nginx_version: 1.22.1
    nginx_headers_include: /etc/nginx/snippets/webrtc-edge-headers.conf
  tasks:
    - name: The proxy model, built by the installed role's own task file
      ansible.builtin.include_role:
        name: webrtc_edge.edge.proxy
        tasks_from: model.yml
        public: true
    - name: The installed nginx role's site template
      ansible.builtin.template:
        src: "{{ collection }}/roles/nginx/templates/site.conf.j2"
        dest: "{{ out }}/site.conf"
        mode: "0644"
"""


def test_installed_roles_use_their_filters_by_full_name(installed, tmp_path):
    playbook = tmp_path / "use.yml"
    playbook.write_text(PLAYBOOK)
    collection = installed / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"collection={collection}",
         "-e", f"out={tmp_path}", str(playbook)],
        capture_output=True, text=True, env=_isolated_env(installed, tmp_path), cwd=tmp_path, check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    site = (tmp_path / "site.conf").read_text()
    assert "server_name signal.example.org;" in site
    assert "server 127.0.0.1:8081" in site


DEFAULTS_SCRIPT = """
import json
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import proxy, role_defaults
print(json.dumps({"role": str(role_defaults.ROLE), "defaults": proxy.DEFAULTS}))
"""


def test_installed_model_reads_its_defaults_from_its_own_role(installed, tmp_path):
    """The filter's defaults come from the proxy role of the collection it is installed with, and
    are this clone's."""
    done = subprocess.run(
        [sys.executable, "-c", DEFAULTS_SCRIPT], capture_output=True, text=True, check=False, timeout=120,
        env=dict(_isolated_env(installed, tmp_path), PYTHONPATH=str(installed)), cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout)
    collection = installed / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    assert found["role"] == str(collection / "roles" / "proxy")
    assert found["defaults"] == json.loads(json.dumps(proxy.DEFAULTS))


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout: nothing to install from git")
def test_installs_from_git(tmp_path):
    """`ansible-galaxy collection install git+file://<clone>` (what a user does with the repository's
    URL): the committed tree installs as webrtc_edge.edge, and ansible-doc reads its filter docs."""
    target = tmp_path / "from-git"
    env = dict(_isolated_env(target, tmp_path), ANSIBLE_COLLECTIONS_PATH=str(target))
    install = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(target), f"git+file://{ROOT}"],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    collection = target / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    manifest = json.loads((collection / "MANIFEST.json").read_text())["collection_info"]
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == (
        GALAXY["namespace"], GALAXY["name"], GALAXY["version"])
    assert (collection / "roles" / "proxy" / "defaults" / "main.yml").is_file()
    doc = subprocess.run(
        [str(BIN / "ansible-doc"), "-t", "filter", "--json", f"{GALAXY['namespace']}.{GALAXY['name']}.proxy_model"],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )
    assert doc.returncode == 0, doc.stdout + doc.stderr
    assert json.loads(doc.stdout)[f"{GALAXY['namespace']}.{GALAXY['name']}.proxy_model"]["doc"]["name"] == "proxy_model"
