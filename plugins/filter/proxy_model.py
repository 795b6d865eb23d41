# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The proxy filters: Ansible names for the functions in plugins/plugin_utils.

The model, its validation and the nginx and Apache renderers are plain Python in
``plugin_utils`` (proxy, tls, validation, render, nginx, apache); this file maps the filters
the roles use to them and turns their ``ValueError`` into ``AnsibleFilterError``. Each
filter is documented in its own file beside this one (``<filter name>.yml``).
"""

from __future__ import annotations

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.apache import (
    render_apache_modules,
    render_apache_ports,
    render_apache_site,
)
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.nginx import render_nginx_headers, render_nginx_site
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.proxy import build_proxy_model
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.render import render_error_document
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.tls import tls_profile
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.wrap import wrap_filter

#: The proxy model's filter, callable on its own (tests, other plugins).
proxy_model = wrap_filter("proxy_model", build_proxy_model)


class FilterModule:
    """webrtc-edge proxy model filters."""

    def filters(self):
        return {
            # model
            "proxy_model": proxy_model,
            "proxy_error_document": wrap_filter("proxy_error_document", render_error_document),
            # TLS servers beside the proxy (coturn)
            "tls_profile": wrap_filter("tls_profile", tls_profile),
            # nginx
            "nginx_site": wrap_filter("nginx_site", render_nginx_site),
            "nginx_headers": wrap_filter("nginx_headers", render_nginx_headers),
            # apache
            "apache_site": wrap_filter("apache_site", render_apache_site),
            "apache_ports": wrap_filter("apache_ports", render_apache_ports),
            "apache_modules": wrap_filter("apache_modules", render_apache_modules),
        }
