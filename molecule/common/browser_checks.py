"""A real browser call through the deployed proxy (issue 4, "A real browser call").

Two or three headless Chromium pages (Debian's /usr/bin/chromium, driven by
Python playwright with fake camera and microphone) open the deployed client at
``https://localhost:<published 443>/`` and place a 1:1 call, then a room call
with a host and two participants. Each page's ``RTCPeerConnection`` must reach
``connected`` and decode remote video frames, and the client must run without
a Content-Security-Policy violation under the headers the proxy sends.

Chromium trusts exactly the certificate the proxy serves, after Python has
checked that it chains to the run's CA (``--ignore-certificate-errors-spki-list``
pins its public key), rather than ignoring certificate errors wholesale.

The pages are driven by signaling.testing.browser (the app package's browser
driver, which app/tests/test_browser.py uses against a bare server): Chromium's
launch, the URL parameters ``call``, ``room``, ``role``, ``name`` and
``autoanswer``, and the hooks of ``window.webrtcEdge`` (id, signaling, mode,
peers: Map(id -> {connectionState, framesDecoded}), cspViolations;
app/src/signaling/static/README.md). Screenshots of the connected calls go to
``molecule/<scenario>/.artifacts/`` (gitignored).

Group ``browser`` (a scenario selects it with ``--checks``: molecule/common/testinfra_plugin.py);
it takes the ``site`` fixture of deployment_checks.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from deployment_checks import proxy_host, site  # noqa: F401 (fixtures)

from signaling.testing.browser import Page, launch, open_pages, spki_pin, unavailable

pytestmark = pytest.mark.browser  # the group a scenario selects with --checks (testinfra_plugin.py)


def _served_spki_pin(site) -> str:
    """base64(SHA-256(SPKI)) of the certificate the proxy serves, verified against the run's CA."""
    with site.tls_socket(site.tls_context()) as tls:
        der = tls.getpeercert(binary_form=True)
    return spki_pin(x509.load_der_x509_certificate(der).public_key())


@pytest.fixture(scope="module")
def chromium(site) -> Iterator[object]:
    """Headless Chromium that trusts the deployed certificate's key."""
    if reason := unavailable():
        pytest.fail(reason)
    with launch(spki_pins=[_served_spki_pin(site)]) as browser:
        yield browser


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """molecule/<scenario>/.artifacts/: screenshots of the connected calls."""
    out = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / ".artifacts"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def browser_page(chromium, site) -> Iterator[Callable[[str], Page]]:
    """Return ``open(name)``: a new client page on the deployed site; all closed after."""
    with open_pages(chromium, site.base) as factory:
        yield factory


def test_browser_one_to_one_call(browser_page, artifacts):
    callee = browser_page("callee").open(autoanswer=True)
    caller = browser_page("caller").open(call=callee.id)
    caller.wait_media(1, timeout=45)
    callee.wait_media(1, timeout=45)
    assert set(caller.peers()) == {callee.id} and set(callee.peers()) == {caller.id}
    caller.screenshot(artifacts / "call-1to1-caller.png")
    callee.screenshot(artifacts / "call-1to1-callee.png")
    for page in (caller, callee):
        page.assert_clean()


def test_browser_room_call(browser_page, artifacts):
    room = f"browser-{secrets.token_hex(4)}"
    host = browser_page("host").open(room=room, role="host", name="Bo")
    host.wait("webrtcEdge.mode === 'room'", what="joined the room")
    ana = browser_page("ana").open(room=room, role="participant", name="Ana")
    cy = browser_page("cy").open(room=room, role="participant", name="Cy")
    for participant in (ana, cy):
        participant.wait_media(1, timeout=45)
        assert list(participant.peers()) == [host.id]  # participants talk to the host only
    host.wait_media(2, timeout=45)
    assert set(host.peers()) == {ana.id, cy.id}
    host.screenshot(artifacts / "room-host.png")
    ana.screenshot(artifacts / "room-participant.png")
    for page in (host, ana, cy):
        page.assert_clean()
