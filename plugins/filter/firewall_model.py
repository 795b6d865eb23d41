# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host firewall filters: Ansible names for the functions in plugins/plugin_utils/firewall.py,
each documented in its own file beside this one (``<filter name>.yml``)."""

from __future__ import annotations

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.firewall import (
    build_firewall_model,
    firewall_dropped,
    firewall_union,
    render_firewall_ruleset,
)
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.wrap import wrap_filter


class FilterModule:
    """webrtc-edge host firewall filters."""

    def filters(self):
        return {
            "firewall_model": wrap_filter("firewall_model", build_firewall_model),
            "firewall_union": wrap_filter("firewall_union", firewall_union),
            "firewall_dropped": wrap_filter("firewall_dropped", firewall_dropped),
            "firewall_ruleset": wrap_filter("firewall_ruleset", render_firewall_ruleset),
        }
