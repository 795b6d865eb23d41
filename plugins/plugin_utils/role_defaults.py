# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The proxy model's defaults, read from the proxy role that ships in the same collection.

``roles/proxy/defaults/main.yml`` is the one place a default is written. The role hands the
``proxy_model`` filter every key through ``__proxy_spec`` (``roles/proxy/vars/main.yml``), which
maps each key of the model's input to its variable (``name: "{{ proxy_site_name }}"``); a key
the caller leaves out defaults to what its ``__proxy_spec`` entry renders to on a host without
facts and without the other roles' variables: plain Jinja (no Ansible filters), the role's
defaults and vars in scope, ``ansible_facts`` empty (``gather_facts: false``) and everything
else undefined. So the templated defaults take their fallbacks (``proxy_keepalive`` 32,
``proxy_body_max`` the app's 10 MiB upload limit plus 64 KiB, ``proxy_tls_crl`` the local
CA's CRL of the tls role's default ``tls_source: self_signed``, ...), and an entry that cannot
render so, reading the inventory (``server_names``, ``upstreams``, ``files_from_disk``,
``uploads_upstreams``), gives no default: the model requires it or has its own.

``upstream_defaults`` is no role variable: its values are the defaults of ``proxy_upstreams``'
options in the role's ``meta/argument_specs.yml``.

The role's files are found beside this one (``<collection>/plugins/plugin_utils/`` and
``<collection>/roles/proxy/``), in a clone as in an installed collection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.nativetypes import NativeEnvironment

ROLE = Path(__file__).parents[2] / "roles" / "proxy"


class _Environment(NativeEnvironment):
    """Native types as Ansible renders them: a template of one expression gives its value as it is
    (``"{{ proxy_http_port }}"`` the int 80, a string stays a string), one of several parts the
    string they join into. An undefined name is an error, not an empty string (``default`` still
    replaces it)."""

    @staticmethod
    def concat(values: Iterable[Any]) -> Any:
        parts = list(values)
        return parts[0] if len(parts) == 1 else "".join(str(part) for part in parts)


_ENV = _Environment(undefined=jinja2.StrictUndefined)


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _resolved(value: Any) -> Any:
    """A native result made concrete: lists for a filter's generators (``unique``), and an error
    for an undefined value, which a template of one expression returns as it is."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, dict):
        return {key: _resolved(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, Iterator)):
        return [_resolved(item) for item in value]
    return value


def _render(value: Any, scope: dict[str, Any]) -> Any:
    """``value`` with every template in it rendered; raises ``jinja2.TemplateError`` when one
    reads what is not in ``scope`` or uses a filter plain Jinja does not have."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        return _resolved(_ENV.from_string(value).render(scope))
    if isinstance(value, dict):
        return {key: _render(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, scope) for item in value]
    return value


def role_scope(role: Path = ROLE) -> dict[str, Any]:
    """The role's defaults, then its vars, rendered in file order (each may read those before
    it) on a host without facts; a variable that cannot render is left out, and so is every
    one that reads it."""
    scope: dict[str, Any] = {"ansible_facts": {}}
    for path in (role / "defaults" / "main.yml", role / "vars" / "main.yml"):
        for name, value in _load(path).items():
            if name == "__proxy_spec":
                continue
            try:
                scope[name] = _render(value, scope)
            except jinja2.TemplateError:
                continue
    return scope


def _entries(spec: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
    """Each entry of ``spec`` that renders, sections (dicts) entry by entry."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            out[key] = _entries(value, scope)
            continue
        try:
            out[key] = _render(value, scope)
        except jinja2.TemplateError:
            continue
    return out


def upstream_defaults(role: Path = ROLE) -> dict[str, Any]:
    """The defaults of an upstream server's optional keys, from the spec of ``proxy_upstreams``."""
    specs = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    options = specs["proxy_upstreams"]["options"]
    return {key: option["default"] for key, option in options.items() if "default" in option}


def proxy_defaults(role: Path = ROLE) -> dict[str, Any]:
    """The model's input as the role passes it on a host without facts, less what needs the inventory."""
    spec = _load(role / "vars" / "main.yml")["__proxy_spec"]
    return {**_entries(spec, role_scope(role)), "upstream_defaults": upstream_defaults(role)}
