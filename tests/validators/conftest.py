"""Fixtures for checking rendered configurations with the real nginx, Apache and gixy.

Everything lives in pytest's tmp dirs: self-made certificates, document roots, a copy of
Debian's /etc/apache2 and nginx main configurations pointing at the rendered site.
Nothing under /etc is touched and no daemon is started.
"""

import pytest
from validator_helpers import installed_version, model_spec

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils import proxy


@pytest.fixture(params=["single", "multi", "split"])
def model(request, tmp_path):
    """The validated model of a single-host, a multi-host and a split deployment (the proxy
    on a host of its own: no client files or uploads on its disk)."""
    return proxy.build_proxy_model(model_spec(tmp_path, request.param))


@pytest.fixture(scope="session")
def nginx_version():
    return installed_version(["nginx", "-v"], "nginx")


@pytest.fixture(scope="session")
def apache_version():
    return installed_version(["apache2", "-v"], "apache2")
