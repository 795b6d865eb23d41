"""One source of defaults (issue 13): the proxy model falls back to the proxy role's.

The filter derives its defaults from roles/proxy (plugins/plugin_utils/role_defaults.py) with
plain Jinja; here Ansible itself renders the role's ``__proxy_spec`` (its filters, native types)
on an app host without facts and without the other roles' variables, and every key must agree
with the model's default, both ways: a key neither side has, or a value that differs, fails.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import proxy, role_defaults

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "proxy"
ENDPOINTS = [{"address": "127.0.0.1", "port": 8081}, {"address": "127.0.0.1", "port": 8082}]
#: An app host of its own, as the single-host layout has it: the role's inventory reads resolve.
INVENTORY = {
    "inventory_hostname": "app1",
    "groups": {"all": ["app1"], "signaling_app": ["app1"]},
    "hostvars": {"app1": {"signaling_app_endpoints": ENDPOINTS}},
}
#: Keys the role reads from the inventory: the model requires them or has no default for them.
FROM_INVENTORY = {"server_names", "upstreams", "uploads_upstreams"}
#: The model's defaults that are no role variable: the defaults of proxy_upstreams' options in
#: the role's meta/argument_specs.yml.
MODEL_ONLY = {"upstream_defaults.weight", "upstream_defaults.backup", "upstream_defaults.max_fails",
              "upstream_defaults.fail_timeout"}


def _trusted(value):
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: _trusted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_trusted(item) for item in value]
    return value


def _flat(value, prefix=""):
    """Dotted key -> JSON of each leaf (a section is a dict; lists are leaves); JSON keeps 1 from True."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix[:-1]: json.dumps(value, sort_keys=True)}


def ansible_spec(facts: dict | None = None) -> dict:
    """``__proxy_spec`` as Ansible renders it with the role's defaults and vars in scope."""
    variables = {}
    for path in (ROLE / "defaults" / "main.yml", ROLE / "vars" / "main.yml"):
        variables.update(_trusted(yaml.safe_load(path.read_text())))
    templar = Templar(loader=DataLoader(), variables={**variables, **INVENTORY, "ansible_facts": facts or {}})
    return json.loads(json.dumps(templar.template(variables["__proxy_spec"])))


def test_every_model_default_is_the_roles():
    role, model = _flat(ansible_spec()), _flat(proxy.DEFAULTS)
    assert sorted(set(role) - set(model)) == sorted(FROM_INVENTORY)
    assert sorted(set(model) - set(role)) == sorted(MODEL_ONLY)
    differ = {key: (model[key], role[key]) for key in set(model) & set(role) if model[key] != role[key]}
    assert not differ, f"the model's default (left) is not the role's (right): {differ}"


def test_the_filter_alone_builds_what_the_role_builds():
    """Only the required keys given, the filter builds the model the role's whole spec builds."""
    spec = ansible_spec()
    assert spec["files_from_disk"] is True and spec["tls"]["crl"] == ""
    alone = proxy.build_proxy_model({key: spec[key] for key in ("server_names", "upstreams")})
    assert alone == proxy.build_proxy_model(spec)


def test_facts_change_only_the_keepalive():
    """Plain Jinja renders the role without facts; with them only proxy_keepalive depends on them."""
    role, with_facts = _flat(ansible_spec()), _flat(ansible_spec({"processor_vcpus": 8}))
    assert {key for key in role if role[key] != with_facts[key]} == {"keepalive"}
    assert json.loads(with_facts["keepalive"]) == 128 != proxy.DEFAULTS["keepalive"]


def test_upstream_defaults_are_the_argument_specs():
    options = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = options["argument_specs"]["main"]["options"]["proxy_upstreams"]["options"]
    assert proxy.DEFAULTS["upstream_defaults"] == {"weight": 1, "backup": False, "max_fails": 3, "fail_timeout": 10}
    assert {key: option["default"] for key, option in options.items() if "default" in option} == \
        proxy.DEFAULTS["upstream_defaults"]


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.mark.parametrize("source", sorted((ROOT / "plugins").rglob("*.py")), ids=lambda p: p.name)
def test_no_default_is_written_again_in_the_plugins(source):
    """No string literal of the plugins (implicit concatenation joined) is one of the role's string
    defaults of more than one word (paths, policies, MIME types): they are read from the role, not
    repeated. One word may be a choice the model checks (least_conn, intermediate, DENY)."""
    literals = {node.value for node in ast.walk(ast.parse(source.read_text()))
                if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    written = sorted({s for s in _strings(proxy.DEFAULTS) if re.search(r"[/ ]", s)} & literals)
    assert not written, f"{source.relative_to(ROOT)} repeats the role's defaults {written}"


def test_an_entry_that_needs_the_inventory_has_no_default():
    """What plain Jinja cannot render (server names from facts or the inventory) stays required."""
    scope = role_defaults.role_scope()
    assert "proxy_server_names" not in scope and scope["proxy_uploads_host"] == ""
    assert scope["proxy_keepalive"] == 32 and scope["proxy_tls_crl"] == ""
    with pytest.raises(ValueError, match="missing required key 'server_names'"):
        proxy.build_proxy_model({"upstreams": ENDPOINTS})
