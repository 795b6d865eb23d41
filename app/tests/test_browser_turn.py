"""Calls relayed through real coturn, in Debian's Chromium (issue 11, "TURN that works on
restrictive networks and in rooms").

coturn runs on loopback with the coturn role's own configuration (tests/coturn.py): the
role's quota, TLS profile and peer ranges, TURN over UDP, TCP and TLS. The signaling server
hands out the role's three URLs with credentials signed by the role's secret, as deployed.
Every page asks for relay candidates only (``?relay=1``, ``iceTransportPolicy: "relay"``),
so a call connects through coturn or not at all.

* A relay-only room of 10 (a host and 9 participants) connects with video, every selected
  path a relay, and no allocation refused (``486 Allocation Quota Reached``, which the
  page records in ``webrtcEdge.iceErrors``). The role's former fixed quota of 12 would
  refuse the host's fifth peer connection at the latest (each allocates once per URL).
* That the page does see a 486: with a quota below one peer connection's allocations, a
  call's refusals show up in ``webrtcEdge.iceErrors`` (so the check above can fail).
* With the shortest TURN credential lifetime the app accepts (``turn_ttl`` 60 s), the page
  fetches fresh credentials when half of it has passed, applies them with
  ``setConfiguration`` and restarts ICE; coturn then allocates for the new user name while
  the call goes on over relays.

How many allocations a full room's host needs, and that the deployed quota admits exactly
that many per session, is proven against the deployed coturn in Molecule
(molecule/common/turn_checks.py): Chromium allocates once per TURN URL *and local network*, and
how many networks a test machine has (Docker bridges count) is not the test's to choose.

Why here and not in a Molecule scenario: relaying between peers on one machine needs
loopback peers, which the deployed role refuses (as it should); here the role's rendered
configuration runs with only that changed, and a room of 10 costs seconds instead of a
converge. Chromium trusts exactly coturn's test certificate (its SPKI pin).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from coturn import Coturn, require_coturn
from test_browser import Server, clients  # noqa: F401 (fixture)

from signaling.config import FIELDS, Settings
from signaling.testing.browser import Page, launch

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

ROOM_MAX_PEERS = Settings().room_max_peers
TTL_FLOOR = FIELDS["turn_ttl"].metadata["min"]  # the shortest credential lifetime the app accepts
ROOM_SIZE = 10
REFRESH_SHARE = 0.5  # call.js ICE_REFRESH_SHARE


def start_coturn(tmp_path_factory: pytest.TempPathFactory, name: str, **role_vars: object) -> Coturn:
    require_coturn()
    return Coturn(tmp_path_factory.mktemp(name), ROOM_MAX_PEERS, **role_vars).start()


def start_signaling(tmp_path_factory: pytest.TempPathFactory, coturn: Coturn, **settings: object) -> Server:
    """The app with coturn's URLs and secret (by environment, as secrets never go on a command line)."""
    env = {"SIGNALING_TURN_URLS": ",".join(coturn.urls), "SIGNALING_TURN_SECRET": coturn.secret}
    env |= {f"SIGNALING_{k.upper()}": str(v) for k, v in settings.items()}
    server = Server(tmp_path_factory.mktemp("signaling") / "signaling.log", env)
    server.start()
    return server


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    server = start_coturn(tmp_path_factory, "coturn")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, coturn: Coturn) -> Iterator[str]:
    """The app with coturn's URLs and secret; test_browser's ``clients`` open pages on it."""
    signaling = start_signaling(tmp_path_factory, coturn)
    try:
        yield signaling.base
    finally:
        signaling.stop()


@pytest.fixture(scope="module")
def browser(coturn: Coturn) -> Iterator[object]:
    """Chromium trusting the test CA's certificate of coturn (and only that one)."""
    with launch(spki_pins=[coturn.spki_pin]) as b:
        yield b


EVERY_PATH_RELAYED = "[...webrtcEdge.peers.values()].every(p => p.candidateType === 'relay')"


def refusals(client: Page, code: int = 486) -> list[dict]:
    return [e for e in client.js("webrtcEdge.iceErrors") if e["code"] == code]


def allocations(coturn: Coturn, username: str) -> int:
    """Allocations coturn granted to this user name so far (its log, ``verbose``)."""
    return coturn.log().count(f"user <{username}>: incoming packet ALLOCATE processed, success")


def held(coturn: Coturn, username: str) -> int:
    """Allocations of this user name coturn holds now: granted, less those deleted since."""
    log = coturn.log()
    return allocations(coturn, username) - log.count(f"delete: realm=<localhost>, username=<{username}>")


def test_relay_only_room_of_ten(clients, coturn, capsys) -> None:
    started = time.monotonic()
    host = clients("host").open(room="turn10", role="host", name="Host", relay=True)
    participants = [clients(f"p{i}").open(room="turn10", role="participant", name=f"P{i}", relay=True)
                    for i in range(1, ROOM_SIZE)]
    host.wait_media(ROOM_SIZE - 1, frames=5, timeout=180)
    for p in participants:
        p.wait_media(1, frames=5, timeout=60)
    elapsed = time.monotonic() - started
    for page in [host, *participants]:
        page.wait(EVERY_PATH_RELAYED, what="relay candidates selected on every path")
    host_user = host.js("webrtcEdge.ice.username")
    with capsys.disabled():
        print(f"\nrelay-only room of {ROOM_SIZE}: every peer connected with video in {elapsed:.1f} s;"
              f" the host's session holds {held(coturn, host_user)} allocations"
              f" for {ROOM_SIZE - 1} peer connections")
    for page in [host, *participants]:
        assert refusals(page) == [], page.state()
    # One credential per session, shared by its peer connections: coturn counts per session.
    assert len({page.js("webrtcEdge.ice.username") for page in [host, *participants]}) == ROOM_SIZE
    # More than the role's former fixed quota (12), which refused the seventh peer of a room.
    assert held(coturn, host_user) > 12
    host.assert_clean()


def test_a_refused_allocation_is_seen_by_the_page(clients, tmp_path_factory) -> None:
    """coturn with a quota below the 3 allocations of one peer connection: the page records the
    486 of its call (the relay of the other allocations still carries it)."""
    small = start_coturn(tmp_path_factory, "coturn-small-quota", coturn_user_quota=3 - 1)
    signaling = start_signaling(tmp_path_factory, small)
    try:
        a = clients("a", signaling.base).open(autoanswer=True, relay=True, media=False)
        b = clients("b", signaling.base).open(call=a.id, relay=True, media=False)
        b.wait("webrtcEdge.iceErrors.some(e => e.code === 486)", timeout=60, what="a 486 from coturn")
        assert {e["peerId"] for e in refusals(b)} == {a.id}
        assert "Allocation Quota Reached" in small.log()
    finally:
        signaling.stop()
        small.stop()


def test_credentials_are_refreshed_before_they_expire(clients, tmp_path_factory, coturn) -> None:
    """turn_ttl at the app's floor (60 s): the refresh is due after half of it; the new
    credential is set on the peer connection and an ICE restart allocates with it."""
    signaling = start_signaling(tmp_path_factory, coturn, turn_ttl=TTL_FLOOR)
    try:
        a = clients("a", signaling.base).open(autoanswer=True, relay=True)
        b = clients("b", signaling.base).open(call=a.id, relay=True)
        a.wait_media()
        b.wait_media()
        first = b.js("webrtcEdge.ice")
        assert first["ttl"] == TTL_FLOOR
        assert first["refreshAt"] - first["fetchedAt"] == TTL_FLOOR * 1000 * REFRESH_SHARE
        old_user = first["username"]
        assert int(old_user.split(":")[0]) - first["fetchedAt"] / 1000 == pytest.approx(TTL_FLOOR, abs=2)
        old_ufrag = b.js(f"webrtcEdge.calls.get('{a.id}').localUfrag()")
        old_allocations = allocations(coturn, old_user)
        assert old_allocations > 0

        due = (first["refreshAt"] - b.js("Date.now()")) / 1000
        assert 0 < due <= TTL_FLOOR * REFRESH_SHARE
        b.wait("webrtcEdge.ice && webrtcEdge.ice.refreshes >= 1", timeout=due + 15, what="the credential refresh")
        fresh = b.js("webrtcEdge.ice")
        assert fresh["username"] != old_user
        assert fresh["fetchedAt"] - first["fetchedAt"] == pytest.approx(TTL_FLOOR * 1000 * REFRESH_SHARE, abs=2000)
        # The peer connection has the new credential, and restarted ICE to use it...
        b.wait(f"webrtcEdge.calls.get('{a.id}').credentialRestarts >= 1 && "
               f"webrtcEdge.calls.get('{a.id}').localUfrag() !== '{old_ufrag}'", timeout=20, what="the ICE restart")
        config = b.js(f"webrtcEdge.calls.get('{a.id}').pc.getConfiguration().iceServers")
        assert [s["username"] for s in config if s.get("username")] == [fresh["username"]]
        # ...whose allocations are made with it, before the old one expires.
        deadline = time.monotonic() + 20
        while allocations(coturn, fresh["username"]) == 0:
            assert time.monotonic() < deadline, coturn.log()[-3000:]
            time.sleep(0.5)
        assert time.time() < int(old_user.split(":")[0])
        # The call goes on over relays.
        frames = b.peers()[a.id]["framesDecoded"]
        b.wait(f"webrtcEdge.peers.get('{a.id}').framesDecoded > {frames + 10}", what="video after the refresh")
        b.wait(EVERY_PATH_RELAYED, what="a relayed path after the refresh")
        assert b.peers()[a.id]["connectionState"] == "connected"
        assert refusals(b) == [] and refusals(a) == []
        b.assert_clean()
    finally:
        signaling.stop()
