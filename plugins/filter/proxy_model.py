# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The proxy model filters: Ansible names for the functions in plugins/plugin_utils.

The model, its validation and the nginx and Apache renderers are plain Python in
``plugin_utils`` (proxy, tls, validation, render, nginx, apache); this file maps filter names to
them and turns their ``ValueError`` into ``AnsibleFilterError``.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: proxy_model
short_description: Build one validated reverse-proxy model and render it for nginx or Apache
description:
  - C(proxy_model) turns the proxy role variables (server names, upstream endpoints,
    balancing, TLS profile, headers, limits, CORS, allowlists, document roots) into one
    normalised dictionary, refusing bad input with an error that names the filter.
  - The C(nginx_*) and C(apache_*) filters render configuration text from that model.
  - C(proxy_error_document) renders the small HTML/JSON pages answered for 502/503/504.
  - C(tls_profile) gives a Mozilla profile's protocols and TLS 1.2 ciphers by name, for TLS
    servers beside the proxy (coturn) that must offer what the proxy offers.
options:
  _input:
    description:
      - For C(proxy_model) a dictionary of role variables (see the nginx/apache role READMEs).
      - For C(tls_profile) a profile name, intermediate or modern.
      - For every other filter the model returned by C(proxy_model).
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Build the model
  ansible.builtin.set_fact:
    __proxy_model: >-
      {{ {'server_names': ['signal.example.org'],
          'upstreams': [{'address': '10.0.0.5', 'port': 8080}],
          'tls': {'profile': 'intermediate', 'openssl_version': '3.0.11'}} | proxy_model }}

- name: Render the nginx site
  ansible.builtin.copy:
    content: "{{ __proxy_model | nginx_site(nginx_version='1.22.1') }}"
    dest: /etc/nginx/sites-available/webrtc-edge.conf
    mode: "0644"

- name: Apache modules the site needs
  ansible.builtin.debug:
    msg: "{{ __proxy_model | apache_modules(apache_version='2.4.62') }}"
"""

RETURN = r"""
_value:
  description:
    - C(proxy_model) returns the model (a dict with keys name, server_names, ports, listen_ipv6,
      status, upstream, uploads_upstream, files_from_disk, tls, hsts, headers, uploads_headers, cache, limits,
      timeouts, cors, allowlist, roots, gzip_types, error_pages, locations).
    - C(apache_modules) returns a list of Debian module names for a2enmod.
    - C(tls_profile) returns a dict with keys protocols and ciphers.
    - Every other filter returns configuration text ending in a newline.
  type: raw
"""

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.apache import (
    render_apache_balancers,
    render_apache_headers,
    render_apache_modules,
    render_apache_ports,
    render_apache_site,
    render_apache_tls,
)
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.nginx import (
    render_nginx_headers,
    render_nginx_maps,
    render_nginx_site,
    render_nginx_tls,
    render_nginx_upstream,
)
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.proxy import build_proxy_model
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.render import render_error_document
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.tls import tls_profile
from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.wrap import wrap_filter as _wrap


def proxy_model(spec):
    """Role variables -> validated proxy model (see ``build_proxy_model``)."""
    return _wrap("proxy_model", build_proxy_model)(spec)


class FilterModule:
    """webrtc-edge proxy model filters."""

    def filters(self):
        return {
            # model
            "proxy_model": proxy_model,
            "proxy_error_document": _wrap("proxy_error_document", render_error_document),
            # TLS servers beside the proxy (coturn)
            "tls_profile": _wrap("tls_profile", tls_profile),
            # nginx
            "nginx_site": _wrap("nginx_site", render_nginx_site),
            "nginx_headers": _wrap("nginx_headers", render_nginx_headers),
            "nginx_upstream": _wrap("nginx_upstream", render_nginx_upstream),
            "nginx_maps": _wrap("nginx_maps", render_nginx_maps),
            "nginx_tls": _wrap("nginx_tls", render_nginx_tls),
            # apache
            "apache_site": _wrap("apache_site", render_apache_site),
            "apache_ports": _wrap("apache_ports", render_apache_ports),
            "apache_modules": _wrap("apache_modules", render_apache_modules),
            "apache_balancers": _wrap("apache_balancers", render_apache_balancers),
            "apache_headers": _wrap("apache_headers", render_apache_headers),
            "apache_tls": _wrap("apache_tls", render_apache_tls),
        }
