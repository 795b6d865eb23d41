# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host firewall filters: Ansible names for the functions in plugins/plugin_utils/firewall.py."""

from __future__ import annotations

DOCUMENTATION = r"""
name: firewall_model
short_description: Build the host firewall's validated model and render it as an nftables table
description:
  - C(firewall_model) turns the firewall role's inputs (the SSH rule, each tier's ports and who may
    reach them, the operator's C(firewall_allow) and C(firewall_extra_rules)) into one normalised
    dictionary, refusing bad input with an error that names the variable.
  - C(firewall_union) merges two models (the rules of both), C(firewall_admits) says whether a model
    lets a connection in, C(firewall_dropped) lists the connections it would not let in,
    C(firewall_ruleset) renders a model as an C(nft -f) file.
options:
  _input:
    description:
      - For C(firewall_model) a dictionary with keys ssh, rules, allow, extra_rules, log_dropped.
      - For every other filter the model returned by C(firewall_model).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Build the model
  ansible.builtin.set_fact:
    __firewall_model: >-
      {{ {'ssh': {'port': 22, 'from': ['192.0.2.10']},
          'rules': [{'comment': 'http, https', 'proto': 'tcp', 'port': [80, 443], 'from': 'any'}]}
         | firewall_model }}

- name: Would it drop this SSH connection
  ansible.builtin.assert:
    that: __firewall_model | firewall_admits('192.0.2.10', 22)

- name: Render the table
  ansible.builtin.copy:
    content: "{{ __firewall_model | firewall_ruleset }}"
    dest: /etc/webrtc-edge/firewall.nft
    mode: "0644"
    validate: nft -c -f %s
"""

RETURN = r"""
_value:
  description:
    - C(firewall_model) and C(firewall_union) return a model (a dict with keys ssh, extra_rules, rules,
      log_dropped); each rule (in ssh and rules) has comment, proto, ports (strings, C(N) or C(A-B)),
      any (from anywhere) and ipv4, ipv6 (source networks).
    - C(firewall_admits) returns a boolean, C(firewall_dropped) a list of strings, C(firewall_ruleset)
      the file's text ending in a newline.
  type: raw
"""

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.firewall import (
    build_firewall_model,
    firewall_admits,
    firewall_dropped,
    firewall_union,
    render_firewall_ruleset,
)
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.wrap import wrap_filter as _wrap


class FilterModule:
    """webrtc-edge host firewall filters."""

    def filters(self):
        return {
            "firewall_model": _wrap("firewall_model", build_firewall_model),
            "firewall_union": _wrap("firewall_union", firewall_union),
            "firewall_admits": _wrap("firewall_admits", firewall_admits),
            "firewall_dropped": _wrap("firewall_dropped", firewall_dropped),
            "firewall_ruleset": _wrap("firewall_ruleset", render_firewall_ruleset),
        }
