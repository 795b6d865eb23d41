"""End-to-end tests of the browser client (static/) in Debian's Chromium.

The real server runs as ``python -m signaling`` on a free loopback port;
signaling.testing.browser, the driver molecule/common/browser_checks.py uses too, opens
the pages in Debian's Chromium with fake camera and microphone. index.html
carries the strict Content-Security-Policy the proxy sets in production (as a
<meta> tag), and the tests assert that the client never violates it.

Test hooks used (see static/README.md): ``window.webrtcEdge`` (id, transport,
signaling, mode, peers: Map(peerId -> {connectionState, framesDecoded}),
stats, errors, cspViolations, drop(), signalingClient), ``data-state`` on each
remote tile and the URL parameters ``call``, ``room``, ``role``, ``name``,
``secret``, ``transport``, ``autoanswer`` and ``media``.

The reliable-sending tests (docs/protocol.md, "Reliable sending") put
Playwright between the page and the real server to break the link the way
networks do: WebSocket frames the page writes that never arrive, answers that
never come back, polling POSTs whose answer is lost after the server handled
them. The receiving page counts numbered ``candidate`` messages: each must
arrive exactly once, in order.

Screenshots go to $SIGNALING_BROWSER_ARTIFACTS when set, else to a pytest
temporary directory.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from signaling.testing.browser import Page, launch, open_pages, unavailable

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

if reason := unavailable():
    pytest.skip(reason, allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")

needs_route_web_socket = pytest.mark.skipif(
    not hasattr(sync_api.Page, "route_web_socket"), reason="needs playwright >= 1.48 (Page.route_web_socket)")


# ---- fixtures -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m signaling`` as a subprocess on a fixed loopback port."""

    def __init__(self, log_path: Path, settings: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.settings = settings or {}  # SIGNALING_* variables (secrets never go on the command line)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALING_")} | self.settings
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "signaling", "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer /health:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM (drain), then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real signaling server, shared by the tests of this module; yields its base URL."""
    srv = Server(tmp_path_factory.mktemp("server") / "signaling.log")
    srv.start()
    try:
        yield srv.base
    finally:
        srv.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own, which it may stop and start again."""
    srv = Server(tmp_path / "signaling.log")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with launch() as b:
        yield b


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("SIGNALING_BROWSER_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def clients(browser, server) -> Iterator[Callable[..., Page]]:
    """``new(name, base=server)``: a client page (signaling.testing.browser.Page), closed after the test."""
    with open_pages(browser, server) as new:
        yield new


# ---- breaking the link between a page and the server ---------------------------------------


class RoutedSockets:
    """Carries a page's WebSockets through Playwright to the real server.

    Each new socket starts healthy. ``up = False`` makes the current one drop
    what the page writes (kept in ``swallowed``), as a link that died under
    it; ``lose`` names cseqs whose frame is dropped once on a live link;
    ``down = False`` drops what the server sends (so no ``pong`` or
    ``received`` reaches the page); ``block = True`` refuses every socket
    opened from then on, as a proxy that breaks upgrades. ``urls`` lists
    every socket the page tried to open.
    """

    def __init__(self, page, block: bool = False) -> None:
        self.up = self.down = True
        self.block = block
        self.lose: set[int] = set()
        self.swallowed: list[dict] = []
        self.urls: list[str] = []
        page.route_web_socket("**/ws*", self._route)

    def _route(self, ws) -> None:
        self.urls.append(ws.url)
        if self.block:
            ws.close(code=1011, reason="blocked")
            return
        self.up = self.down = True
        server = ws.connect_to_server()

        def from_page(text: str) -> None:
            msg = json.loads(text)
            if self.up and msg.get("cseq") not in self.lose:
                server.send(text)
                return
            self.lose.discard(msg.get("cseq"))
            self.swallowed.append(msg)

        ws.on_message(from_page)
        server.on_message(lambda text: ws.send(text) if self.down else None)


class LossyPosts:
    """Breaks a polling page's message POSTs that carry ``candidate``s, one
    per entry of ``faults``, in order: ``"answer"`` lets the server handle the
    POST and then loses its answer (the page sees a network error);
    ``"request"`` loses the POST before it reaches the server. Every POST
    body is kept in ``bodies``."""

    def __init__(self, page, faults: list[str]) -> None:
        self.faults = list(faults)
        self.bodies: list[list[dict]] = []
        page.route("**/api/sessions/*/messages*", self._route)

    def _route(self, route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        body = json.loads(route.request.post_data)
        self.bodies.append(body)
        if self.faults and any(m.get("type") == "candidate" for m in body):
            if self.faults.pop(0) == "answer":
                route.fetch()  # handled by the real server...
            route.abort("connectionreset")  # ...but the page never hears of it
            return
        route.continue_()

    def cseqs(self) -> dict[int, set[int]]:
        """Candidate number -> every cseq it was POSTed with."""
        seen: dict[int, set[int]] = collections.defaultdict(set)
        for body in self.bodies:
            for m in body:
                if m.get("type") == "candidate":
                    seen[m["data"]["n"]].add(m["cseq"])
        return seen


def count_candidates(receiver: Page) -> None:
    """From now on the receiver's page records the ``n`` of every ``candidate`` it gets."""
    receiver.js("""(() => { window.candidates = [];
        webrtcEdge.signalingClient.addEventListener('message', (ev) => {
            if (ev.detail.type === 'candidate') window.candidates.push(ev.detail.data.n); }); })()""")


def send_candidates(sender: Page, to: str, numbers: range, then_drop: bool = False) -> None:
    """``sig.send`` a ``candidate`` numbered n to ``to`` for each n, in one go (then ``drop()``)."""
    sender.page.evaluate("""([to, first, last, drop]) => {
        for (let n = first; n <= last; n++) webrtcEdge.signalingClient.send({type: 'candidate', to, data: {n}});
        if (drop) webrtcEdge.drop();
    }""", [to, numbers.start, numbers.stop - 1, then_drop])


def assert_delivered_once_in_order(sender: Page, receiver: Page, count: int) -> None:
    """Once the server confirmed all the sender sent, the receiver got 1..count, each once, in order."""
    sender.wait("webrtcEdge.signalingClient.unconfirmed === 0", what="the server confirming every message")
    receiver.wait(f"window.candidates.length >= {count}", what=f"{count} candidates")
    time.sleep(1)  # a duplicate would arrive right behind
    assert receiver.js("window.candidates") == list(range(1, count + 1))


# ---- tests ------------------------------------------------------------------------------


def test_landing_page_and_assets(clients, shots) -> None:
    a = clients("a").open()
    assert a.js("document.body.dataset.view") == "landing"
    assert a.js("window.webrtcEdge.transport") == "websocket"
    assert a.page.inner_text("#my-id") == a.id
    assert len(a.id) >= 8
    # The strict policy is in force (so assert_clean() below means something).
    a.js("""(() => { const s = document.createElement('script');
                     s.textContent = 'window.inlineRan = true'; document.body.append(s); s.remove(); })()""")
    a.wait("window.webrtcEdge.cspViolations.length > 0", what="a CSP violation report")
    assert a.js("window.inlineRan") is None
    assert a.js("window.webrtcEdge.cspViolations")[0].startswith("script-src")
    a.js("window.webrtcEdge.cspViolations.length = 0")
    a.console.clear()
    a.screenshot(shots / "landing.png")
    a.assert_clean()


def test_one_to_one_call_over_websocket(clients, shots) -> None:
    a = clients("a").open(autoanswer=True)
    b = clients("b").open(call=a.id)
    b.wait_media()
    a.wait_media()
    assert set(a.peers()) == {b.id} and set(b.peers()) == {a.id}
    assert a.tile_states() == ["connected"] and b.tile_states() == ["connected"]
    assert int(b.page.get_attribute("#tiles figure.tile.remote", "data-frames")) > 0
    assert a.js("webrtcEdge.transport") == b.js("webrtcEdge.transport") == "websocket"
    b.screenshot(shots / "call-1to1.png")

    b.page.click("#hangup")
    a.wait("window.webrtcEdge.peers.size === 0 && document.body.dataset.view === 'landing'", what="the hang-up")
    assert b.js("document.body.dataset.view") == "landing"
    a.assert_clean()
    b.assert_clean()


def test_incoming_call_prompt(clients, shots) -> None:
    a = clients("a").open()
    b = clients("b").open(call=a.id)
    a.page.wait_for_selector("#incoming[open]")
    assert b.id in a.page.inner_text("#incoming")
    a.screenshot(shots / "incoming-call.png")
    a.page.click("#incoming-accept")
    a.wait_media()
    b.wait_media()


def test_room_host_and_two_participants(clients, shots) -> None:
    host = clients("host").open(room="standup", role="host", name="Bo", secret="s3cret")
    host.wait("window.webrtcEdge.mode === 'room'", what="joined")
    ana = clients("ana").open(room="standup", role="participant", name="Ana", secret="s3cret")
    cy = clients("cy").open(room="standup", role="participant", name="Cy", secret="s3cret", transport="polling")
    for p in (ana, cy):
        p.wait_media(1)
        peers = p.peers()
        assert list(peers) == [host.id], peers  # participants talk to the host only
        assert peers[host.id]["role"] == "host" and peers[host.id]["name"] == "Bo"
    host.wait_media(2)
    peers = host.peers()
    assert set(peers) == {ana.id, cy.id}
    assert {v["name"] for v in peers.values()} == {"Ana", "Cy"}
    assert host.tile_states() == ["connected", "connected"]
    assert cy.js("webrtcEdge.transport") == "polling"
    assert host.js("webrtcEdge.role") == "host" and ana.js("webrtcEdge.role") == "participant"
    # The secret does not stay in the address bar.
    assert "secret" not in ana.page.url
    host.screenshot(shots / "room-host.png")
    ana.screenshot(shots / "room-participant.png")

    eve = clients("eve").open(room="standup", role="participant", name="Eve", secret="wrong")
    eve.wait("window.webrtcEdge.errors.some(e => e.code === 'bad-secret')", what="bad-secret")
    eve.wait("document.body.dataset.view === 'landing'", what="back to the landing page")
    eve.screenshot(shots / "room-bad-secret.png")

    ana.page.click("#hangup")
    host.wait("window.webrtcEdge.peers.size === 1", what="peer-left for Ana")
    assert list(host.peers()) == [cy.id]
    for c in (host, ana, cy):
        c.assert_clean()


def test_participant_before_host(clients) -> None:
    ana = clients("ana").open(room="later", role="participant", name="Ana")
    ana.wait("window.webrtcEdge.mode === 'room'", what="joined")
    assert ana.peers() == {}
    host = clients("host").open(room="later", role="host", name="Bo")
    host.wait_media(1)
    ana.wait_media(1)


@needs_route_web_socket
def test_fallback_to_polling_when_websocket_fails(clients, shots) -> None:
    a = clients("a")
    # Every WebSocket this page opens is refused before it opens (as a proxy
    # that breaks upgrades would), so the client must fall back by itself.
    RoutedSockets(a.page, block=True)
    a.open(autoanswer=True)
    assert a.js("webrtcEdge.transport") == "polling"
    assert a.js("webrtcEdge.stats.fallbacks") >= 1
    b = clients("b").open(call=a.id)  # a WebSocket peer calls a polling peer
    b.wait_media()
    a.wait_media()
    assert b.js("webrtcEdge.transport") == "websocket"
    a.screenshot(shots / "call-polling-fallback.png")
    a.assert_clean()


def test_forced_polling_both_sides(clients) -> None:
    a = clients("a").open(autoanswer=True, transport="polling")
    b = clients("b").open(call=a.id, transport="polling")
    b.wait_media()
    a.wait_media()
    assert a.js("webrtcEdge.transport") == b.js("webrtcEdge.transport") == "polling"


def test_resume_after_websocket_drop_loses_nothing(clients) -> None:
    a = clients("a").open(autoanswer=True)
    b = clients("b").open(call=a.id)
    a.wait_media()
    b.wait_media()
    a_id = a.id
    # Cut A off: its socket drops and it cannot reconnect while offline.
    a.context.set_offline(True)
    a.js("webrtcEdge.drop()")
    a.wait("webrtcEdge.signaling === 'reconnecting'", what="reconnecting")
    # B hangs up meanwhile: the bye waits in A's session queue.
    b.page.click("#hangup")
    time.sleep(1.5)
    assert a.js("webrtcEdge.signaling") == "reconnecting"  # really cut off, not resumed yet
    assert a.peers()  # the bye has not arrived
    a.context.set_offline(False)
    a.wait("webrtcEdge.signaling === 'open'", what="the resume")
    assert a.id == a_id, "resume must keep the session id"
    assert a.js("webrtcEdge.stats.resumes") >= 1
    assert a.js("webrtcEdge.stats.sessions") == 1
    # The bye sent while A was away is replayed on resume.
    a.wait("window.webrtcEdge.peers.size === 0", what="the replayed bye")
    a.assert_clean()


def test_resume_keeps_a_live_call(clients) -> None:
    a = clients("a").open(autoanswer=True)
    b = clients("b").open(call=a.id)
    a.wait_media()
    b.wait_media()
    a.js("webrtcEdge.drop()")
    b.js("webrtcEdge.drop()")
    a.wait("webrtcEdge.signaling === 'open' && webrtcEdge.stats.resumes >= 1", what="A's resume")
    b.wait("webrtcEdge.signaling === 'open' && webrtcEdge.stats.resumes >= 1", what="B's resume")
    # Signaling still works after the resume: hanging up reaches the other side.
    assert a.peers()[b.id]["connectionState"] == "connected"
    a.page.click("#hangup")
    b.wait("window.webrtcEdge.peers.size === 0", what="the bye after resume")


def test_polling_recovers_after_network_outage(clients) -> None:
    a = clients("a").open(autoanswer=True, transport="polling")
    b = clients("b").open(call=a.id)
    a.wait_media()
    b.wait_media()
    a_id = a.id
    a.context.set_offline(True)
    a.js("webrtcEdge.drop()")  # abort the hanging poll; the next ones fail while offline
    b.page.click("#hangup")
    a.wait("webrtcEdge.signaling === 'reconnecting'", what="failing polls")
    time.sleep(1)
    assert a.peers()  # the bye has not arrived
    a.context.set_offline(False)
    a.wait("window.webrtcEdge.peers.size === 0", what="the bye fetched after the outage")
    assert a.id == a_id
    assert a.js("webrtcEdge.signaling") == "open"


def test_server_restart_gives_new_sessions_and_rejoins_the_room(clients, own_server) -> None:
    host = clients("host", own_server.base).open(room="again", role="host", name="Bo")
    ana = clients("ana", own_server.base).open(room="again", role="participant", name="Ana", transport="polling")
    host.wait_media(1)
    ana.wait_media(1)
    old_ids = {host.id, ana.id}
    own_server.stop()  # in-memory state is gone: resume tokens are refused afterwards
    host.wait("webrtcEdge.signaling === 'reconnecting'", what="the drop")
    own_server.start()
    for c in (host, ana):
        c.wait("webrtcEdge.signaling === 'open' && webrtcEdge.mode === 'room' && webrtcEdge.stats.sessions === 2",
               timeout=60, what="a new session and the room joined again")
    assert not old_ids & {host.id, ana.id}
    host.wait_media(1)
    ana.wait_media(1)
    assert list(host.peers()) == [ana.id] and list(ana.peers()) == [host.id]


@needs_route_web_socket
def test_websocket_blocked_after_a_drop_carries_the_session_on_over_polling(clients) -> None:
    a = clients("a")
    link = RoutedSockets(a.page)
    a.open(autoanswer=True)
    assert a.js("webrtcEdge.transport") == "websocket"
    b = clients("b").open(call=a.id)
    a.wait_media()
    b.wait_media()
    a_id = a.id
    link.block = True  # only the first WebSocket worked
    a.js("webrtcEdge.drop()")
    a.wait("webrtcEdge.transport === 'polling' && webrtcEdge.signaling === 'open'", what="the switch to polling")
    assert a.id == a_id, "the same session must carry on"
    assert any("resume=" in url for url in link.urls[1:])
    assert a.peers()[b.id]["connectionState"] == "connected"
    b.page.click("#hangup")
    a.wait("window.webrtcEdge.peers.size === 0", what="the bye over polling")
    a.assert_clean()


def test_calling_an_unknown_peer_reports_it(clients) -> None:
    a = clients("a").open(call="NoSuchPeer000000")
    a.wait("window.webrtcEdge.errors.some(e => e.code === 'unknown-peer')", what="unknown-peer")
    a.wait("document.body.dataset.view === 'landing' && window.webrtcEdge.peers.size === 0",
           what="back to the landing page")
    assert "No peer" in a.page.inner_text("#toasts")
    a.assert_clean()


def test_receive_only_caller_without_camera(clients) -> None:
    a = clients("a").open(autoanswer=True)
    b = clients("b").open(call=a.id, media=False)  # no getUserMedia at all
    b.wait_media()  # B still receives A's video
    a.wait("[...window.webrtcEdge.peers.values()].some(p => p.connectionState === 'connected')",
           what="A connected")
    assert b.js("document.getElementById('local-tile').hidden") is True


# ---- reliable sending (cseq) ----------------------------------------------------------------


@needs_route_web_socket
@pytest.mark.parametrize("resume_over", ["websocket", "polling"])
def test_messages_written_to_a_dying_socket_arrive_once_in_order(clients, resume_over) -> None:
    """What the page wrote to a socket that then died is sent again after the
    resume (over WebSocket, or carried on over long-polling with the same
    count) and reaches the peer once, in order."""
    a = clients("a")
    link = RoutedSockets(a.page)
    a.open()
    b = clients("b").open()
    count_candidates(b)
    a_id = a.id
    send_candidates(a, b.id, range(1, 11))
    b.wait("window.candidates.length === 10", what="the first 10 candidates")
    link.up = False  # the link dies: what the page writes from now on is lost
    link.block = resume_over == "polling"
    send_candidates(a, b.id, range(11, 41), then_drop=True)
    a.wait(f"webrtcEdge.signaling === 'open' && webrtcEdge.transport === '{resume_over}' "
           "&& webrtcEdge.stats.resumes >= 1", what=f"the resume over {resume_over}")
    assert_delivered_once_in_order(a, b, 40)
    assert [m["cseq"] for m in link.swallowed if m["type"] == "candidate"] == list(range(11, 41))
    assert a.js("webrtcEdge.stats.resent") >= 30
    assert a.id == a_id and a.js("webrtcEdge.stats.sessions") == 1
    a.assert_clean()


@needs_route_web_socket
def test_resending_everything_kept_delivers_nothing_twice(clients) -> None:
    """The server handled all 40 but no confirmation reached the page; the
    page carries its session on over long-polling, which knows nothing of
    ``received``, and so sends all 40 again: the peer still gets each once.
    The next messages continue the count on the new transport."""
    a = clients("a")
    link = RoutedSockets(a.page)
    a.open()
    b = clients("b").open()
    count_candidates(b)
    link.down = False  # nothing from the server reaches A: no pong, no received
    send_candidates(a, b.id, range(1, 41))
    b.wait("window.candidates.length === 40", what="40 candidates handled by the server")
    time.sleep(1.5)  # A's confirming pings went out; their pongs were lost
    assert a.js("webrtcEdge.signalingClient.unconfirmed") == 40
    link.block = True
    a.js("webrtcEdge.drop()")
    a.wait("webrtcEdge.signaling === 'open' && webrtcEdge.transport === 'polling'", what="the switch to polling")
    a.wait("webrtcEdge.signalingClient.unconfirmed === 0", what="the server confirming every message")
    assert a.js("webrtcEdge.stats.resent") > 0  # each one a repeat: the server had handled all 40
    send_candidates(a, b.id, range(41, 46))
    assert_delivered_once_in_order(a, b, 45)
    a.assert_clean()


def test_polling_post_whose_answer_is_lost_is_not_delivered_twice(clients) -> None:
    """Long-polling: a POST the server handled but whose answer was lost, and
    one that never reached the server, are both sent again with the same
    cseqs; the peer gets every message once, in order."""
    a = clients("a")
    posts = LossyPosts(a.page, ["answer", "request", "answer"])
    a.open(transport="polling")
    b = clients("b").open()
    count_candidates(b)
    send_candidates(a, b.id, range(1, 41))
    assert_delivered_once_in_order(a, b, 40)
    assert not posts.faults, "every fault was injected"
    cseqs = posts.cseqs()
    assert all(len(seen) == 1 for seen in cseqs.values()), cseqs  # a resend keeps its cseq
    assert sorted(c for seen in cseqs.values() for c in seen) == list(range(1, 41))
    assert a.js("webrtcEdge.stats.resent") >= 1
    assert a.js("webrtcEdge.transport") == "polling"
    a.assert_clean()


@needs_route_web_socket
def test_a_gap_on_a_live_socket_is_resent_quietly(clients) -> None:
    """One frame lost on a live socket (cseq 5): the server refuses the next
    one as ``out-of-order`` and drops those after it; the page pings 200 ms
    later, the pong's ``received`` (4) shows what was not handled, and the
    page sends 5 to 10 again on the same socket. Each arrives once, in order,
    and the page shows no error."""
    a = clients("a")
    link = RoutedSockets(a.page)
    a.open()
    b = clients("b").open()
    count_candidates(b)
    link.lose = {5}
    send_candidates(a, b.id, range(1, 11))
    assert_delivered_once_in_order(a, b, 10)
    assert [m["cseq"] for m in link.swallowed] == [5]
    assert [e["code"] for e in a.js("webrtcEdge.errors")] == ["out-of-order"]
    assert a.js("webrtcEdge.stats.resent") >= 6
    assert a.js("webrtcEdge.stats.drops") == 0  # recovered by ping and pong, not by a resume
    assert a.page.inner_text("#toasts") == ""
    a.assert_clean()


def test_a_burst_over_the_rate_limit_goes_at_the_pace_and_none_is_refused(clients) -> None:
    """120 messages at once, past the server's burst allowance (100): the page sends them at
    its pace (half the burst at once, then under the rate the welcome gave), so the server
    refuses none; each arrives once, in order, sent once."""
    a = clients("a").open()
    b = clients("b").open()
    count_candidates(b)
    assert a.js("webrtcEdge.signalingClient._pace.size") == 50
    send_candidates(a, b.id, range(1, 121))
    assert_delivered_once_in_order(a, b, 120)
    assert [e["code"] for e in a.js("webrtcEdge.errors")] == []
    assert a.js("webrtcEdge.stats.resent") == 0
    assert a.page.inner_text("#toasts") == ""
    a.assert_clean()
