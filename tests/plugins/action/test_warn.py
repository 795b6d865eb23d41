"""The action plugin webrtc_edge.edge.warn (plugins/action/warn.py) and its documentation
(plugins/modules/warn.py): the plugin called directly, then in a playbook, where Ansible prints
the warning as its own, in check mode too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml
from ansible.errors import AnsibleActionFail

from ansible_collections.webrtc_edge.edge.plugins.action import warn
from ansible_collections.webrtc_edge.edge.plugins.modules import warn as warn_doc

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
ENV = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_CACHE_PLUGIN="memory", ANSIBLE_NOCOLOR="1")


def _action(args: dict, *, check_mode: bool = False) -> warn.ActionModule:
    task = mock.Mock(args=args, check_mode=check_mode, async_val=0, action="webrtc_edge.edge.warn")
    plugin = warn.ActionModule(task, mock.Mock(), mock.Mock(), loader=None, templar=None)
    plugin._load_name = "webrtc_edge.edge.warn"  # the plugin loader sets it
    return plugin


@pytest.mark.parametrize("check_mode", [False, True])
def test_warns_and_changes_nothing(check_mode):
    with mock.patch.object(warn, "display") as display:
        result = _action({"msg": "  one runs Ubuntu 24.04 (noble)\n"}, check_mode=check_mode).run(task_vars={})
    display.warning.assert_called_once_with("one runs Ubuntu 24.04 (noble)")
    assert result == {"changed": False, "msg": "one runs Ubuntu 24.04 (noble)"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param({}, "missing required arguments: msg", id="no-msg"),
        pytest.param({"msg": " \n"}, "msg is empty", id="empty-msg"),
        pytest.param({"msg": "a", "var": "b"}, "Unsupported parameters", id="unknown-option"),
    ],
)
def test_refuses_bad_arguments(args, message):
    with mock.patch.object(warn, "display") as display, pytest.raises(AnsibleActionFail, match=message):
        _action(args).run(task_vars={})
    display.warning.assert_not_called()


def test_documents_the_options_it_takes():
    doc = yaml.safe_load(warn_doc.DOCUMENTATION)
    options = {name: {"type": o["type"], "required": o.get("required", False)} for name, o in doc["options"].items()}
    assert options == warn.ActionModule.ARGUMENT_SPEC
    assert "webrtc_edge.edge.warn:" in warn_doc.EXAMPLES
    assert set(yaml.safe_load(warn_doc.RETURN)) == {"msg"}


def test_ansible_doc_shows_it():
    proc = subprocess.run([str(BIN / "ansible-doc"), "--json", "webrtc_edge.edge.warn"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)["webrtc_edge.edge.warn"]
    assert doc["doc"]["short_description"] == "Print a warning and change nothing"
    assert doc["doc"]["has_action"] is True


@pytest.mark.parametrize("check_mode", [False, True])
def test_ansible_prints_a_warning(tmp_path, check_mode):
    playbook = tmp_path / "warn.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Warn", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "Warn", "webrtc_edge.edge.warn": {"msg": "{{ inventory_hostname }} is untested"}}],
    }]))
    argv = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)]
    proc = subprocess.run(argv + (["--check"] if check_mode else []), cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]: localhost is untested" in proc.stderr
    assert "ok=1    changed=0" in proc.stdout
