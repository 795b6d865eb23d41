"""The proxies' sizing for many long-lived connections (issue 6), from the roles' own files:

* the defaults derived from host facts give the sizes the role READMEs promise: on this 2-CPU,
  24 GiB machine nginx holds 96,000 connections (48,000 WebSockets), in 6 workers where the
  hard limit on open files is 20,000 (our containers) and in 2 where it is not, and Apache
  24,000 tunnels (systemd's TasksMax raised to match), with room for a graceful reload's old
  processes; a small host gets smaller, still working, figures;
* nginx's main file as the role templates it (Debian's includes kept, worker sizing, the open
  files cap) passes the real ``nginx -t`` with our site and no warning, and really caps
  ``worker_rlimit_nofile`` at the host's hard limit;
* Apache's MPM sizing file passes the real ``apache2 -t`` inside Debian's configuration with no
  value adjusted by Apache (which it reports, as a planted ServerLimit too small shows).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"

TEST_MACHINE = {"processor_vcpus": 2, "memtotal_mb": 24000}
SMALL_HOST = {"processor_vcpus": 1, "memtotal_mb": 1024}


def resolved_defaults(role: str, facts: dict, **role_facts) -> dict:
    """The role's defaults/main.yml with every templated value rendered, in file order
    (``role_facts``: facts the role's own tasks set before the defaults are used)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    values: dict = {"ansible_facts": facts, **role_facts}
    for name, value in yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()).items():
        if isinstance(value, str) and "{{" in value:
            value = yaml.safe_load(env.from_string(value).render(values))
        values[name] = value
    return values


@pytest.mark.parametrize(("facts", "hard_limit", "workers", "connections", "rlimit"), [
    (TEST_MACHINE, 20000, 6, 18000, 19024),       # our containers: more workers than CPUs
    (TEST_MACHINE, 1048576, 2, 54000, 55024),     # a host with systemd's default hard limit
    (SMALL_HOST, 20000, 1, 4608, 5632),
])
def test_nginx_worker_sizing_follows_the_host(facts, hard_limit, workers, connections, rlimit):
    values = resolved_defaults("nginx", facts, __nginx_nofile_hard_limit=hard_limit)
    assert int(values["nginx_worker_processes"]) == workers
    assert values["nginx_worker_connections"] == connections
    assert values["nginx_worker_rlimit_nofile"] == rlimit
    # Every worker's files fit under the hard limit, and the workers hold nginx_max_connections.
    assert rlimit <= hard_limit
    assert workers * connections >= values["nginx_max_connections"]


@pytest.mark.parametrize(("facts", "workers", "server_limit", "tasks"), [
    (TEST_MACHINE, 24000, 1125, 1125 * 136),
    (SMALL_HOST, 1024, 48, 48 * 136),
])
def test_apache_mpm_sizing_follows_the_host(facts, workers, server_limit, tasks):
    values = resolved_defaults("apache", facts)
    assert values["apache_mpm_max_request_workers"] == workers
    assert values["apache_mpm_server_limit"] == server_limit
    assert workers % values["apache_mpm_threads_per_child"] == 0
    # systemd lets the unit run every thread of ServerLimit children (workers and mod_http2's).
    assert values["apache_tasks_max"] == tasks


def render(role: str, template: str, **values) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLES / role / "templates"),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(template).render(ansible_managed="test", **values)


def nginx_main_tree(tmp_path: Path, hard_limit: int, **overrides) -> Path:
    """The role's nginx.conf under tmp_path, with a one-server site in its sites-enabled/."""
    for sub in ("modules-enabled", "conf.d", "sites-enabled"):
        (tmp_path / sub).mkdir()
    shutil.copy("/etc/nginx/mime.types", tmp_path / "mime.types")
    (tmp_path / "sites-enabled" / "site").write_text(
        "server { listen 127.0.0.1:18080; location / { proxy_pass http://127.0.0.1:18081; } }\n")
    values = resolved_defaults("nginx", TEST_MACHINE, __nginx_nofile_hard_limit=hard_limit)
    main = render("nginx", "nginx.conf.j2", nginx_conf_dir=str(tmp_path), __nginx_nofile_hard_limit=hard_limit,
                  __nginx_pid_file=f"{tmp_path}/nginx.pid",  # the role's vars/main.yml: /run/nginx/ or /run/
                  **{k: v for k, v in {**values, **overrides}.items()
                     if k.startswith("nginx_") and k != "nginx_conf_dir"})
    conf = tmp_path / "nginx.conf"
    conf.write_text(main)
    return conf


def test_nginx_main_file_passes_nginx_t_and_caps_open_files(tmp_path):
    conf = nginx_main_tree(tmp_path, hard_limit=20000)
    text = conf.read_text()
    assert "worker_processes 6;" in text and "worker_connections 18000;" in text
    assert "worker_rlimit_nofile 19024;" in text  # under the hard limit of 20000
    for include in ("modules-enabled/*.conf", "conf.d/*.conf", "sites-enabled/*"):
        assert f"include {tmp_path}/{include};" in text
    done = subprocess.run(["nginx", "-t", "-c", str(conf)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "[warn]" not in done.stderr, done.stderr


def test_nginx_open_files_never_exceed_the_hard_limit(tmp_path):
    text = nginx_main_tree(tmp_path, hard_limit=20000, nginx_worker_rlimit_nofile=40000).read_text()
    assert "worker_rlimit_nofile 20000;" in text


def apache_tree(tmp_path: Path, mpm_conf: str) -> Path:
    """A copy of Debian's /etc/apache2 with the MPM sizing enabled; returns the ServerRoot."""
    root = tmp_path / "apache2"
    shutil.copytree("/etc/apache2", root, symlinks=True)
    (root / "conf-available" / "webrtc-edge-mpm.conf").write_text(mpm_conf)
    link = root / "conf-enabled" / "webrtc-edge-mpm.conf"
    link.unlink(missing_ok=True)
    link.symlink_to("../conf-available/webrtc-edge-mpm.conf")
    for part in ("load", "conf"):  # mod_http2, as the site enables it: its H2MinWorkers is read too
        (root / "mods-enabled" / f"http2.{part}").unlink(missing_ok=True)
        (root / "mods-enabled" / f"http2.{part}").symlink_to(f"../mods-available/http2.{part}")
    return root


def apache_test(root: Path) -> subprocess.CompletedProcess:
    env = {"APACHE_RUN_USER": "www-data", "APACHE_RUN_GROUP": "www-data", "APACHE_PID_FILE": str(root / "pid"),
           "APACHE_RUN_DIR": str(root), "APACHE_LOCK_DIR": str(root), "APACHE_LOG_DIR": str(root),
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(["apache2", "-d", str(root), "-t", "-D", "DUMP_RUN_CFG"], capture_output=True,
                          text=True, check=False, env=env)


def test_apache_mpm_file_passes_apache2_t(tmp_path):
    values = resolved_defaults("apache", TEST_MACHINE)
    mpm = render("apache", "mpm-event.conf.j2",
                 **{k: v for k, v in values.items() if k.startswith(("apache_mpm_", "apache_h2_"))})
    assert "MaxRequestWorkers 24000" in mpm and "ServerLimit 1125" in mpm and "H2MinWorkers 4" in mpm
    done = apache_test(apache_tree(tmp_path, mpm))
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr  # no MPM value adjusted by Apache


def test_apache_reports_workers_beyond_server_limit(tmp_path):
    """apache2 -t really reads the file: MaxRequestWorkers beyond ServerLimit x ThreadsPerChild
    is reported (and cut down), which the check above would see."""
    values = resolved_defaults("apache", TEST_MACHINE)
    mpm = render("apache", "mpm-event.conf.j2",
                 **{k: v for k, v in values.items() if k.startswith(("apache_mpm_", "apache_h2_"))})
    planted = mpm.replace("ServerLimit 1125", "ServerLimit 16", 1)
    assert planted != mpm
    done = apache_test(apache_tree(tmp_path, planted))
    assert "WARNING" in done.stderr and "MaxRequestWorkers" in done.stderr, done.stderr
