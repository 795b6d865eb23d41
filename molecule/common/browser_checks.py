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

Hooks the client exposes (app/src/signaling/static/README.md, and
app/tests/test_browser.py which drives the same page against a bare server):
``window.webrtcEdge`` (id, signaling, mode, peers: Map(id -> {connectionState,
framesDecoded}), cspViolations) and the URL parameters ``call``, ``room``,
``role``, ``name`` and ``autoanswer``. Screenshots of the connected calls go to
``molecule/<scenario>/.artifacts/`` (gitignored).

Group ``browser`` (a scenario selects it with ``--checks``: molecule/common/testinfra_plugin.py);
it takes the ``site`` fixture of deployment_checks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from deployment_checks import proxy_host, site  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser  # the group a scenario selects with --checks (testinfra_plugin.py)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def _served_spki_pin(site) -> str:
    """base64(SHA-256(SPKI)) of the certificate the proxy serves, verified against the run's CA."""
    with site.tls_socket(site.tls_context()) as tls:
        der = tls.getpeercert(binary_form=True)
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def chromium(site) -> Iterator[object]:
    """Headless Chromium that trusts the deployed certificate's key."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Debian's Chromium is missing at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    pin = _served_spki_pin(site)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pin}"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """molecule/<scenario>/.artifacts/: screenshots of the connected calls."""
    out = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / ".artifacts"
    out.mkdir(parents=True, exist_ok=True)
    return out


class Page:
    """One client page in a browser context of its own."""

    def __init__(self, browser, base: str, name: str) -> None:
        self.name = name
        self.base = base
        self.context = browser.new_context(viewport={"width": 960, "height": 640})
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def open(self, query: str = "") -> Page:
        self.page.goto(f"{self.base}/{query}")
        self.wait("!!(window.webrtcEdge && webrtcEdge.id && webrtcEdge.signaling === 'open')",
                  what="a signaling session")
        return self

    def js(self, expr: str):
        # evaluate() runs outside the page's CSP (wait_for_function would need 'unsafe-eval').
        return self.page.evaluate(expr)

    @property
    def id(self) -> str:
        return self.js("webrtcEdge.id")

    def peers(self) -> dict[str, dict]:
        return json.loads(self.js("JSON.stringify(Object.fromEntries(webrtcEdge.peers))"))

    def wait(self, expr: str, timeout: float = 30, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not self.js(expr):
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: timed out waiting for {what or expr}\n"
                            f"peers: {self.peers()}\nconsole:\n" + "\n".join(self.console[-30:]))
            time.sleep(0.25)

    def wait_media(self, count: int, timeout: float = 45) -> None:
        """``count`` peers, each ``connected`` with decoded remote video frames."""
        self.wait(f"""(() => {{
            const ps = [...webrtcEdge.peers.values()];
            return ps.length === {count} &&
                   ps.every(p => p.connectionState === 'connected' && p.framesDecoded > 5);
        }})()""", timeout, what=f"{count} connected peer(s) with video")

    def assert_clean(self) -> None:
        assert self.js("webrtcEdge.cspViolations") == [], self.console
        assert not [c for c in self.console if c.startswith("pageerror")], self.console


@pytest.fixture
def browser_page(chromium, site) -> Iterator[Callable[[str], Page]]:
    """Return ``open(name)``: a new client page on the deployed site; all closed after."""
    made: list[Page] = []

    def factory(name: str) -> Page:
        made.append(Page(chromium, site.base, name))
        return made[-1]

    yield factory
    for page in made:
        page.context.close()


def test_browser_one_to_one_call(browser_page, artifacts):
    callee = browser_page("callee").open("?autoanswer=1")
    caller = browser_page("caller").open(f"?call={callee.id}")
    caller.wait_media(1)
    callee.wait_media(1)
    assert set(caller.peers()) == {callee.id} and set(callee.peers()) == {caller.id}
    caller.page.screenshot(path=str(artifacts / "call-1to1-caller.png"))
    callee.page.screenshot(path=str(artifacts / "call-1to1-callee.png"))
    for page in (caller, callee):
        page.assert_clean()


def test_browser_room_call(browser_page, artifacts):
    room = f"browser-{secrets.token_hex(4)}"
    host = browser_page("host").open(f"?room={room}&role=host&name=Bo")
    host.wait("webrtcEdge.mode === 'room'", what="joined the room")
    ana = browser_page("ana").open(f"?room={room}&role=participant&name=Ana")
    cy = browser_page("cy").open(f"?room={room}&role=participant&name=Cy")
    for participant in (ana, cy):
        participant.wait_media(1)
        assert list(participant.peers()) == [host.id]  # participants talk to the host only
    host.wait_media(2)
    assert set(host.peers()) == {ana.id, cy.id}
    host.page.screenshot(path=str(artifacts / "room-host.png"))
    ana.page.screenshot(path=str(artifacts / "room-participant.png"))
    for page in (host, ana, cy):
        page.assert_clean()
