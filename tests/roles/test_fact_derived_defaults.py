"""Tunables derived from the host's facts (issue 6): proxy_keepalive, signaling_app_limit_nofile
and redis_maxmemory.

* ``proxy_keepalive`` (nginx ``keepalive`` per worker) is 16 per CPU, at least 32 (the value it
  had before, and the proxy model's default: this rule without facts) and at most 1024, and the
  proxy model takes it and renders it into the upstream block;
* ``signaling_app_limit_nofile`` (systemd LimitNOFILE per instance) is 4 per MiB of memory and
  1024 more, at least 65536 (the value it had before) and at most 1048576 (the kernel's default
  fs.nr_open);
* ``redis_maxmemory`` is a quarter of the host's memory, at least 256mb;
* rendered by Ansible itself both are integers that the role's argument spec accepts, whether it
  checks the value from defaults/main.yml or falls back on the spec's own default.
"""

from __future__ import annotations

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from test_proxy_sizing import ROLES, SMALL_HOST, TEST_MACHINE, resolved_defaults

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import nginx, proxy

TWO_GIB = {"processor_vcpus": 2, "memtotal_mb": 2048}
MID_HOST = {"processor_vcpus": 8, "memtotal_mb": 32768}
BIG_HOST = {"processor_vcpus": 64, "memtotal_mb": 524288}
NO_FACTS: dict = {}  # gather_facts: false, as in tests/roles/test_signaling_app_render.py

# The proxy defaults that read other hosts or roles, as a lone proxy host without an app group.
PROXY_CONTEXT = {"groups": {}, "inventory_hostname": "proxy1"}


def ansible_default(role: str, name: str, facts: dict):
    """One variable of the role's defaults/main.yml as Ansible renders it (native types, Ansible's
    filters), with the role's other defaults in scope: ``resolved_defaults`` renders every default
    with plain Jinja, which signaling_app's lookups and Ansible-only filters do not allow."""
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    trusted = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in defaults.items()}
    templar = Templar(loader=DataLoader(), variables={**trusted, "ansible_facts": facts})
    return templar.template(trusted[name])


def spec_option(role: str, name: str) -> dict:
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"][name]


@pytest.mark.parametrize(("facts", "keepalive"), [
    (SMALL_HOST, 32),     # 1 CPU: the floor
    (TWO_GIB, 32),        # 2 CPUs: the value it had before, 16 per CPU
    (TEST_MACHINE, 32),   # 2 CPUs, 24 GiB: memory does not matter
    (MID_HOST, 128),
    (BIG_HOST, 1024),     # 64 CPUs: the ceiling (the proxy model's limit)
    ({"processor_vcpus": 256, "memtotal_mb": 2097152}, 1024),
    (NO_FACTS, 32),       # the proxy model's own default
])
def test_proxy_keepalive_follows_the_cpus(facts, keepalive):
    assert resolved_defaults("proxy", facts, **PROXY_CONTEXT)["proxy_keepalive"] == keepalive
    assert ansible_default("proxy", "proxy_keepalive", facts) == keepalive


def test_proxy_keepalive_without_facts_is_the_models_default():
    """gather_facts: false (tests/plugins/filter/playbooks/render.yml) gives what the filter gives alone:
    the model renders this default with plain Jinja and no facts, Ansible with its own Jinja."""
    assert ansible_default("proxy", "proxy_keepalive", NO_FACTS) == proxy.DEFAULTS["keepalive"] == 32


@pytest.mark.parametrize("facts", [SMALL_HOST, TWO_GIB, TEST_MACHINE, BIG_HOST])
def test_proxy_model_renders_the_derived_keepalive(facts):
    keepalive = resolved_defaults("proxy", facts, **PROXY_CONTEXT)["proxy_keepalive"]
    spec = {"server_names": ["signal.example.org"], "upstreams": [{"address": "127.0.0.1", "port": 8081}],
            "keepalive": keepalive}
    model = proxy.build_proxy_model(spec)
    assert model["upstream"]["keepalive"] == keepalive
    assert f"    keepalive {keepalive};\n" in nginx.render_nginx_upstream(model)
    # vars/main.yml passes it as "{{ proxy_keepalive }}": a string of digits is taken too.
    assert proxy.build_proxy_model({**spec, "keepalive": str(keepalive)})["upstream"]["keepalive"] == keepalive


@pytest.mark.parametrize(("facts", "nofile"), [
    (SMALL_HOST, 65536),       # the floor: the value it had before
    (TWO_GIB, 65536),
    (TEST_MACHINE, 97024),     # 24000 MiB * 4 + 1024
    (MID_HOST, 132096),        # 32 GiB
    (BIG_HOST, 1048576),       # 512 GiB: the ceiling, the kernel's default fs.nr_open
    (NO_FACTS, 65536),
])
def test_signaling_app_limit_nofile_follows_the_memory(facts, nofile):
    assert ansible_default("signaling_app", "signaling_app_limit_nofile", facts) == nofile


@pytest.mark.parametrize("facts", [TWO_GIB, TEST_MACHINE, BIG_HOST])
def test_open_files_cover_the_websockets_nginx_holds(facts):
    """One instance may take every WebSocket an nginx on a host of the same size admits (a proxied
    WebSocket is two nginx connections), plus every worker's idle keepalive pool."""
    nofile = ansible_default("signaling_app", "signaling_app_limit_nofile", facts)
    nginx = resolved_defaults("nginx", facts, __nginx_nofile_hard_limit=1048576)
    keepalive = resolved_defaults("proxy", facts, **PROXY_CONTEXT)["proxy_keepalive"]
    pools = int(nginx["nginx_worker_processes"]) * keepalive
    assert nofile >= min(nginx["nginx_max_connections"] // 2 + pools, 1048576)


@pytest.mark.parametrize(("role", "name"), [
    ("proxy", "proxy_keepalive"),
    ("signaling_app", "signaling_app_limit_nofile"),
])
@pytest.mark.parametrize("facts", [TWO_GIB, TEST_MACHINE, BIG_HOST, NO_FACTS])
def test_argument_spec_accepts_the_derived_default(role, name, facts):
    value = ansible_default(role, name, facts)
    assert type(value) is int  # not a string: the spec says int and the unit file wants a number
    option = spec_option(role, name)
    assert option["type"] == "int"
    checks = [{name: value}]
    if "default" in option:
        # A templated spec default states the rule of defaults/main.yml, word for word.
        defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
        assert option["default"] == defaults[name]
        # Ansible templates the validation task's arguments, the spec's default with them.
        option = {**option, "default": ansible_default(role, name, facts)}
        checks.append({})
    for parameters in checks:
        result = ArgumentSpecValidator({name: option}).validate(parameters)
        assert not result.error_messages, result.error_messages
        assert result.validated_parameters[name] == value


@pytest.mark.parametrize(("facts", "maxmemory"), [
    (SMALL_HOST, "256mb"),    # the floor: 1 GiB or less
    (TWO_GIB, "512mb"),
    (TEST_MACHINE, f"{TEST_MACHINE['memtotal_mb'] // 4}mb"),
    (BIG_HOST, "131072mb"),
    (NO_FACTS, "256mb"),
])
def test_redis_maxmemory_is_a_quarter_of_memory(facts, maxmemory):
    """redis_maxmemory: a quarter of the host's memory in Redis's own unit syntax, at least 256mb."""
    assert ansible_default("redis", "redis_maxmemory", facts) == maxmemory
