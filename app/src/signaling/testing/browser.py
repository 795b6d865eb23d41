"""The browser client (static/) in Debian's Chromium, driven through Playwright.

The one driver of every test that opens the client in a browser: the app's browser tests
against a bare server (app/tests/test_browser.py, test_browser_turn.py, ``cd app && pytest -m
browser``) and Molecule's call through a deployed proxy (molecule/common/browser_checks.py, run with
``-c molecule/pytest.ini``). It knows the page: how Chromium is started for it, its URL
parameters and its ``window.webrtcEdge`` test hooks (static/README.md, "Test hooks").

Why a module of the app package: both suites already import the installed ``signaling``
package (``pip install -e './app[test]'``, as ``make venv`` does), so both import this from
their own rootdir without a ``pythonpath`` entry or ``sys.path`` edits, and the driver ships
and changes with the page whose hooks it reads, as aiohttp ships ``aiohttp.test_utils``.
The service never imports ``signaling.testing``, and this module imports Playwright and
cryptography only when a browser is launched or a key pinned, so a deployed instance needs
neither.

Chromium is always Debian's ``/usr/bin/chromium`` (``executable_path``): Playwright never
downloads a browser. Fake camera and microphone, headless, no sandbox (containers, root).

Use::

    with launch(spki_pins=[pin]) as browser, open_pages(browser, "https://localhost:8443") as new:
        callee = new("callee").open(autoanswer=True)
        caller = new("caller").open(call=callee.id)
        caller.wait_media(1)
        caller.screenshot(out / "call.png")
        caller.assert_clean()

Failures (a timeout, a CSP violation, a page error) raise ``AssertionError`` with the page's
state and its last console lines.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
    from playwright.sync_api import Browser

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "URL_PARAMETERS", "Page", "launch", "open_pages", "query", "spki_pin",
           "unavailable"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
)
# What static/js/app.js reads from the address (static/README.md, "URL parameters").
URL_PARAMETERS = ("call", "room", "role", "name", "secret", "transport", "autoanswer", "media", "relay")

# Everything a failure report shows of a page; null before app.js has run.
_STATE = """JSON.stringify(window.webrtcEdge ? {
    id: webrtcEdge.id, transport: webrtcEdge.transport, signaling: webrtcEdge.signaling,
    mode: webrtcEdge.mode, room: webrtcEdge.room, role: webrtcEdge.role,
    peers: Object.fromEntries(webrtcEdge.peers), stats: webrtcEdge.stats,
    errors: webrtcEdge.errors, csp: webrtcEdge.cspViolations, log: webrtcEdge.log.slice(-15)} : null)"""


def unavailable() -> str | None:
    """Why no browser can be driven here (Chromium or the playwright package missing), else None."""
    if not os.path.exists(CHROMIUM):
        return f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401 (only whether it imports)
    except ImportError:
        return "the playwright Python package is not installed (requirements.txt)"
    return None


@contextmanager
def launch(spki_pins: Iterable[str] = ()) -> Iterator[Browser]:
    """Headless Chromium with fake media; it trusts certificates with these public keys
    (``--ignore-certificate-errors-spki-list``, see ``spki_pin``) beyond the system's."""
    from playwright.sync_api import sync_playwright

    args = list(CHROMIUM_ARGS)
    if pins := ",".join(spki_pins):
        args.append(f"--ignore-certificate-errors-spki-list={pins}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser
        finally:
            browser.close()


def spki_pin(public_key: PublicKeyTypes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): how Chromium's SPKI list names a key."""
    from cryptography.hazmat.primitives import serialization

    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def query(**params: str | int | bool) -> str:
    """``?room=standup&role=host``: the client's URL parameters; True/False are 1/0."""
    unknown = set(params) - set(URL_PARAMETERS)
    if unknown:
        raise TypeError(f"not a URL parameter of the client: {sorted(unknown)} (known: {URL_PARAMETERS})")
    values = {k: int(v) if isinstance(v, bool) else v for k, v in params.items()}
    return f"?{urlencode(values)}" if values else ""


class Page:
    """One client page, in a browser context of its own (its own storage and network)."""

    def __init__(self, browser: Browser, base: str, name: str) -> None:
        self.name = name
        self.base = base
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def open(self, **params: str | int | bool) -> Page:
        """Load the client with these URL parameters and wait for its signaling session."""
        self.page.goto(f"{self.base}/{query(**params)}")
        self.wait("!!(window.webrtcEdge && webrtcEdge.id && webrtcEdge.signaling === 'open')",
                  what="a signaling session")
        return self

    def js(self, expr: str) -> Any:
        # evaluate() runs through the DevTools protocol, outside the page's CSP
        # (wait_for_function would need 'unsafe-eval').
        return self.page.evaluate(expr)

    def wait(self, expr: str, timeout: float = 30, what: str = "") -> None:
        """Until the JavaScript ``expr`` is truthy, polled every 0.2 s."""
        deadline = time.monotonic() + timeout
        while not self.js(expr):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out waiting for {what or expr}\nstate: {self.state()}\n"
                                     "console:\n" + "\n".join(self.console[-40:]))
            time.sleep(0.2)

    @property
    def id(self) -> str:
        return self.js("webrtcEdge.id")

    def peers(self) -> dict[str, dict[str, Any]]:
        """``webrtcEdge.peers``: peer id -> {connectionState, framesDecoded, name, role, ...}."""
        return json.loads(self.js("JSON.stringify(Object.fromEntries(webrtcEdge.peers))"))

    def state(self) -> dict[str, Any] | None:
        return json.loads(self.js(_STATE))

    def wait_media(self, count: int = 1, frames: int = 5, timeout: float = 40) -> None:
        """``count`` peers, each ``connected`` with more than ``frames`` decoded video frames."""
        self.wait(f"""(() => {{
            const ps = [...webrtcEdge.peers.values()];
            return ps.length === {count} &&
                   ps.every(p => p.connectionState === 'connected' && p.framesDecoded > {frames});
        }})()""", timeout, what=f"{count} connected peer(s) with video")

    def tile_states(self) -> list[str]:
        """``data-state`` of each remote tile (its RTCPeerConnection.connectionState)."""
        return self.page.eval_on_selector_all("#tiles figure.tile.remote", "els => els.map(e => e.dataset.state)")

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))
        return path

    def assert_clean(self) -> None:
        """No CSP violation (``webrtcEdge.cspViolations``, console) and no uncaught page error."""
        assert self.js("webrtcEdge.cspViolations") == [], self.state()
        bad = [line for line in self.console
               if line.startswith("pageerror") or "Content Security Policy" in line]
        assert not bad, bad

    def close(self) -> None:
        self.context.close()


@contextmanager
def open_pages(browser: Browser, base: str) -> Iterator[Callable[..., Page]]:
    """Yield ``new(name, base=base)``, which makes a ``Page`` (not yet opened) on the site at
    ``base``; every page made is closed on the way out."""
    made: list[Page] = []

    def new(name: str, base: str = base) -> Page:
        made.append(Page(browser, base, name))
        return made[-1]

    try:
        yield new
    finally:
        for page in made:
            page.close()
