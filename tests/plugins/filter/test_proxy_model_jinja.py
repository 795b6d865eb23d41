"""The filters once through Jinja: a tiny playbook renders the real role templates."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import apache, nginx, proxy

HERE = Path(__file__).parent
REPO = HERE.parents[2]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    # The templates name the filters webrtc_edge.edge.*: this clone is that collection.
    collection = out / "collections" / "ansible_collections" / "webrtc_edge" / "edge"
    collection.parent.mkdir(parents=True)
    collection.symlink_to(REPO)
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(out / "none.cfg"),  # do not read the repository's ansible.cfg (fact cache, callbacks)
        ANSIBLE_COLLECTIONS_PATH=str(out / "collections"),
        ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        ANSIBLE_LOCAL_TEMP=str(out / "tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"out_dir={out}",
         str(HERE / "playbooks" / "render.yml")],
        capture_output=True, text=True, env=env, cwd=out, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_model_through_jinja_matches_python(rendered):
    data = json.loads((rendered / "model.json").read_text())
    spec = {
        "server_names": ["signal.example.org", "localhost"],
        "upstreams": [{"address": "127.0.0.1", "port": 8081}, {"address": "127.0.0.1", "port": 8082, "weight": 2}],
        # Every other key left to the filter's defaults: the role's without facts, the CRL among them.
        "tls": {"openssl_version": "3.0.11"},
    }
    assert data["model"] == json.loads(json.dumps(proxy.build_proxy_model(spec)))
    assert data["modules"] == apache.render_apache_modules(proxy.build_proxy_model(spec), apache_version="2.4.62")


@pytest.mark.parametrize(
    ("name", "render"),
    [
        ("nginx-site.conf", lambda m: nginx.render_nginx_site(m, nginx_version="1.22.1")),
        ("nginx-headers.conf", nginx.render_nginx_headers),
        ("apache-site.conf", lambda m: apache.render_apache_site(m, apache_version="2.4.62")),
        ("apache-ports.conf", apache.render_apache_ports),
    ],
)
def test_role_templates_are_the_filters_output(rendered, name, render):
    model = json.loads((rendered / "model.json").read_text())["model"]
    assert (rendered / name).read_text() == render(model)


@pytest.mark.parametrize(
    ("name", "render"),
    [
        ("nginx-site-extended.conf",
         lambda m, ext: nginx.render_nginx_site(m, nginx_version="1.22.1", extensions=ext["nginx"])),
        ("apache-site-extended.conf",
         lambda m, ext: apache.render_apache_site(m, apache_version="2.4.62", extensions=ext["apache"])),
    ],
)
def test_override_points_set_as_role_variables(rendered, name, render):
    """nginx_extra_* / apache_extra_* reach the filter through the role's vars, unchanged."""
    model = json.loads((rendered / "model.json").read_text())["model"]
    extensions = yaml.safe_load((HERE / "extensions.yml").read_text())
    text = (rendered / name).read_text()
    assert text == render(model, extensions)
    assert "# Extra" in text


def test_bad_input_error_names_the_filter(rendered):
    message = (rendered / "error.txt").read_text()
    assert "proxy_model: tls.profile must be one of intermediate, modern, got 'old'" in message
