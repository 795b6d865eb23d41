"""The rendered Apache configuration passes `apache2 -t` inside a copy of Debian's /etc/apache2.

The copy gets exactly the modules apache_modules lists (linked like a2enmod does), our
ports.conf and site, and none of Debian's default sites; apache2 runs with -d/-f on the
copy and APACHE_* variables pointing into the tmp dir, so /etc is never touched.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from validator_helpers import EXTENSIONS

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import apache

DEBIAN_TREE = Path("/etc/apache2")
MODS_AVAILABLE = DEBIAN_TREE / "mods-available"


def apache_tree(tmp_path, model, apache_version, extensions=None):
    """Copy /etc/apache2, enable the model's modules, install ports.conf and the site."""
    root = tmp_path / "apache2"
    shutil.copytree(DEBIAN_TREE, root, symlinks=True)
    for link in (root / "sites-enabled").iterdir():
        link.unlink()
    for module in apache.render_apache_modules(model, apache_version=apache_version):
        load = MODS_AVAILABLE / f"{module}.load"
        assert load.exists(), f"module {module} is not installed ({load} missing; libapache2-mod-evasive?)"
        for suffix in (".load", ".conf"):
            available = MODS_AVAILABLE / f"{module}{suffix}"
            enabled = root / "mods-enabled" / f"{module}{suffix}"
            if available.exists() and not enabled.exists():
                enabled.symlink_to(f"../mods-available/{module}{suffix}")
    (root / "ports.conf").write_text(apache.render_apache_ports(model))
    (root / "sites-available" / "webrtc-edge.conf").write_text(
        apache.render_apache_site(model, apache_version=apache_version, extensions=extensions))
    (root / "sites-enabled" / "webrtc-edge.conf").symlink_to("../sites-available/webrtc-edge.conf")
    return root


def apache2(root, *args):
    run = root.parent / "run"
    for name in ("run", "lock", "log"):
        (root.parent / name).mkdir(exist_ok=True)
    env = dict(os.environ, APACHE_RUN_USER="www-data", APACHE_RUN_GROUP="www-data",
               APACHE_PID_FILE=str(run / "apache2.pid"), APACHE_RUN_DIR=str(run),
               APACHE_LOCK_DIR=str(root.parent / "lock"), APACHE_LOG_DIR=str(root.parent / "log"), LANG="C")
    return subprocess.run(["apache2", "-d", str(root), "-f", str(root / "apache2.conf"), *args],
                          capture_output=True, text=True, env=env, check=False)


def test_apache_accepts_the_site(tmp_path, model, apache_version):
    done = apache2(apache_tree(tmp_path, model, apache_version), "-t")
    assert done.returncode == 0, done.stderr
    assert "Syntax OK" in done.stderr + done.stdout
    assert "Warning" not in done.stderr, done.stderr


def test_apache_rejects_a_broken_site(tmp_path, model, apache_version):
    """The validator really validates: a bad directive in the rendered site fails."""
    root = apache_tree(tmp_path, model, apache_version)
    site = root / "sites-available" / "webrtc-edge.conf"
    site.write_text(site.read_text().replace("ProxyTimeout", "ProxyTimeOutt", 1))
    done = apache2(root, "-t")
    assert done.returncode != 0
    assert "ProxyTimeOutt" in done.stderr


def test_apache_needs_every_listed_module(tmp_path, model, apache_version):
    """apache_modules is complete and needed: without mod_headers the site is refused."""
    root = apache_tree(tmp_path, model, apache_version)
    (root / "mods-enabled" / "headers.load").unlink()
    done = apache2(root, "-t")
    assert done.returncode != 0
    assert "Invalid command 'Header'" in done.stderr


def test_apache_catch_all_is_the_default_vhost(tmp_path, model, apache_version):
    done = apache2(apache_tree(tmp_path, model, apache_version), "-S")
    assert done.returncode == 0, done.stderr
    defaults = dict(re.findall(r"^\*:(\d+)\s+is a NameVirtualHost\s*\n\s+default server (\S+)", done.stdout, re.M))
    https = str(model["ports"]["https"])
    http = str(model["ports"]["http"])
    assert defaults == {http: "default.invalid", https: "default.invalid"}, done.stdout
    for name in model["server_names"]:
        assert re.search(rf"port {https} namevhost {re.escape(name)} |alias {re.escape(name)}$", done.stdout, re.M), \
            done.stdout


@pytest.mark.parametrize("version", ["2.4.46"])
def test_apache_wstunnel_variant_is_accepted(tmp_path, model, version):
    """The mod_proxy_wstunnel rendering for Apache before 2.4.47 is valid too (checked by this Apache)."""
    done = apache2(apache_tree(tmp_path, model, version), "-t")
    assert done.returncode == 0, done.stderr


def test_apache_accepts_every_extension_point(tmp_path, model, apache_version):
    """The golden apache-extended.conf's override points, on each deployment: apache2 -t."""
    done = apache2(apache_tree(tmp_path, model, apache_version, extensions=EXTENSIONS["apache"]), "-t")
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
