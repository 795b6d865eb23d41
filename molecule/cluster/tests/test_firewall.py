"""cluster verify: the host firewall (molecule/common/firewall_checks.py) on the proxy, both app hosts
and Redis, proven from every side, the `outside` container (on the same network, in no group of
the deployment) included: Redis answers the app hosts and nobody else (not the proxy, not
outside), the app instances answer the proxy and nobody else (not the other app host, not Redis,
not outside), the proxy answers 80 and 443 to all, and everything else is dropped everywhere.

The controller is let in to the app instances by a test-only firewall_allow entry (molecule.yml,
which tells the shared checks so with FIREWALL_CONTROLLER_REACHES): cluster_peers.py talks to
them directly. Below, what only this scenario has."""

from testinfra_helpers import inventory_hosts


def test_outside_is_in_no_group_of_the_deployment():
    assert inventory_hosts("outside") == ["webrtc-edge-cluster-outside"]
    assert not {g for g in ("signaling_app", "proxy", "redis", "turn")
                if "webrtc-edge-cluster-outside" in inventory_hosts(g)}
