"""upgrade scenario: release N+1 and back under live peers, then nginx -> apache.

Converge deploys release N (app/ as it is). verify then drives the deployment
itself, running ansible-playbook with the scenario's inventory, in three
steps, each a module-scoped fixture built on the one before:

1. ``upgraded``: a copy of app/ whose pyproject.toml says N+1 (a real version
   bump, so a new wheel, wheelhouse and release) is deployed by
   playbooks/app.yml with ``-e signaling_app_source_dir=COPY`` while one room
   talks through the proxy (peers.py: a WebSocket host, two WebSocket
   participants and a long-polling participant, each sending numbered
   messages all along).
2. ``rolled_back``: the same run with ``-e signaling_app_rollback=true``,
   under a room talking the same way.
3. ``apache``: site.yml with ``-e proxy_server=apache``.

Each step records what the tests judge: the instances' start and stop events
from the journal, each instance's /health, the ``current`` link, the releases
directory and the room's traffic. For steps 1 and 2 the tests prove that:

* every instance restarted exactly once, one at a time: an instance got its
  stop only after the one before it listened again, so never both were down;
* every instance reports the step's version on /health, ``current`` points at
  that release, and the releases directory holds both N and N+1;
* every WebSocket peer was sent away (close 1001) and resumed with its id,
  room and role (``lost`` 0), each time within ``MAX_OUTAGE`` seconds (the
  proxy always had a live instance for it);
* no message was lost: each receiver got every number each sender sent it,
  in the sender's order;
* nothing was delivered twice by the server (each peer's ``seq`` runs 1, 2,
  3... across its resumes). A client that sends again what the server had not
  confirmed when the connection broke may repeat a message the server did
  take (docs/protocol.md gives a client no way to know): such a repeat is
  allowed only for a number its sender recorded as sent again;
* the server answered nothing with an error.

Step 3 proves Apache serves (``welcome`` over wss, the client page 200, /health
with release N) while nginx is stopped and disabled.

The figures (messages, resumes, outages) are printed; ``pytest -s`` shows them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from peers import Room
from releases import app_copy, bumped, release_n, run_playbook
from testinfra_helpers import instance_ports, inventory_hosts, published_port, run_ca_file

testinfra_hosts = inventory_hosts("all")

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
CA_FILE = run_ca_file()
RELEASES = "/opt/signaling/releases"
CURRENT = "/opt/signaling/current"
TALK_AFTER = 3  # seconds the room keeps talking after a playbook run, before it settles
# Release changes run the app tier alone, as an operator would (site.yml gives the same
# result, with every other tier checked again on the way); the proxy switch runs site.yml.
APP_PLAYBOOK = "playbooks/app.yml"
# A WebSocket peer sent away must find a live instance well within the proxy's fail_timeout
# (10 s): restarting the next instance while the proxy still counts the previous one as
# failed leaves it no live upstream for up to that long.
MAX_OUTAGE = 5.0


@dataclass
class Event:
    """An instance's start or stop, from the journal."""

    at: int  # microseconds since the epoch
    port: int
    kind: str  # "stop" (systemd sends SIGTERM) or "listening" (the new process serves)
    version: str = ""


@dataclass
class Step:
    """What one playbook run changed, recorded right after it."""

    name: str
    version: str  # the release this step should leave running
    events: list[Event]
    health: dict[int, str]  # port -> version on /health
    current: str
    releases: list[str]
    room: Room | None = None


async def deploy_under_load(port: int, log: Path, *extra: str) -> Room:
    """Run the playbook while a room talks; return the room once everything settled."""
    async with Room(f"https://localhost:{port}", str(CA_FILE)) as room:
        await room.flowing()
        await run_playbook(APP_PLAYBOOK, log, *extra)
        await asyncio.sleep(TALK_AFTER)
        await room.settle()
    return room


def journal_events(host, since: float) -> list[Event]:
    """Stops (systemd's "Stopping") and starts (the app's "listening") of every instance since ``since``."""
    out = host.check_output(f"journalctl -o json --no-pager --since @{int(since) - 1} -u 'signaling@*'")
    events = []
    for line in out.splitlines():
        entry = json.loads(line)
        at = int(entry["__REALTIME_TIMESTAMP"])
        if at < since * 1e6:
            continue
        message = entry.get("MESSAGE", "")
        if entry.get("UNIT", "").startswith("signaling@") and message.startswith("Stopping "):
            events.append(Event(at, int(entry["UNIT"].split("@")[1].split(".")[0]), "stop"))
        elif message.startswith("{"):
            record = json.loads(message)
            if record.get("msg") == "listening":
                events.append(Event(at, record["port"], "listening", record["version"]))
    return sorted(events, key=lambda e: e.at)


def record(host, name: str, version: str, since: float, room: Room | None) -> Step:
    ports = instance_ports(host)
    health = {
        port: json.loads(host.check_output(f"curl -fsS http://127.0.0.1:{port}/health"))["version"]
        for port in ports
    }
    step = Step(
        name=name,
        version=version,
        events=journal_events(host, since),
        health=health,
        current=host.file(CURRENT).linked_to,
        releases=sorted(host.file(RELEASES).listdir()),
        room=room,
    )
    print(f"\n{name}: {version} health={health} current={step.current} releases={step.releases}")
    for event in step.events:
        print(f"  {event.at / 1e6:.3f} {event.port} {event.kind} {event.version}")
    if room is not None:
        print(f"  room: {room.summary()}")
    return step


def step_run(host, name: str, version: str, *extra: str) -> Step:
    port = published_port(host.backend.get_hostname(), 443)
    started = time.time()
    room = asyncio.run(deploy_under_load(port, EPHEMERAL / f"{name}.log", *extra))
    return record(host, name, version, started, room)


# -- the steps ---------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline(host) -> str:
    """Release N behind nginx, as converge left it (a second verify first restores that)."""
    version = release_n()
    if host.file(CURRENT).linked_to != f"{RELEASES}/{version}" or not host.service("nginx").is_running:
        asyncio.run(run_playbook("site.yml", EPHEMERAL / "restore.log"))
    assert host.file(CURRENT).linked_to == f"{RELEASES}/{version}"
    return version


@pytest.fixture(scope="module")
def next_source(baseline) -> tuple[Path, str]:
    """A copy of app/ whose pyproject.toml says N+1: the next release."""
    version = bumped(baseline)
    return app_copy(EPHEMERAL / "app-next", version), version


@pytest.fixture(scope="module")
def upgraded(host, next_source) -> Step:
    source, version = next_source
    return step_run(
        host, "upgrade", version,
        f"signaling_app_source_dir={source}",
        # N+1's wheelhouse belongs to this run, not the repo's cache: the copy is rebuilt each time.
        f"signaling_app_wheelhouse_cache={EPHEMERAL / 'wheelhouse'}",
    )


@pytest.fixture(scope="module")
def rolled_back(host, baseline, next_source, upgraded) -> Step:
    source, _ = next_source
    return step_run(host, "rollback", baseline, f"signaling_app_source_dir={source}",
                    "signaling_app_rollback=true")


@pytest.fixture(scope="module")
def apache(host, rolled_back) -> int:
    """Switch the proxy to Apache; return the published HTTPS port."""
    asyncio.run(run_playbook("site.yml", EPHEMERAL / "apache.log", "proxy_server=apache"))
    return published_port(host.backend.get_hostname(), 443)


@pytest.fixture(params=["upgraded", "rolled_back"])
def step(request, host) -> Step:  # `host` named here so testinfra parametrizes the tests by host
    return request.getfixturevalue(request.param)


# -- release N+1 and back: the instances ---------------------------------------


def test_every_instance_restarted_one_at_a_time(step):
    ports = sorted(step.health)
    stops = [e for e in step.events if e.kind == "stop"]
    starts = [e for e in step.events if e.kind == "listening"]
    assert sorted(e.port for e in stops) == ports, f"each instance stops exactly once: {step.events}"
    assert sorted(e.port for e in starts) == ports, f"each instance starts exactly once: {step.events}"
    # Down from its stop to its new process listening; those windows never overlap.
    windows = []
    for stop in stops:
        start = next(e for e in starts if e.port == stop.port)
        assert start.at > stop.at, f"instance {stop.port} listened before it stopped: {step.events}"
        assert start.version == step.version, f"instance {stop.port} came back with {start.version}"
        windows.append((stop.at, start.at, stop.port))
    for (_, up, first), (down, _, second) in itertools.pairwise(windows):
        assert down > up, f"{second} was stopped before {first} listened again: {step.events}"


def test_every_instance_reports_the_release(step):
    assert step.health == {port: step.version for port in step.health}


def test_current_points_at_the_release(step):
    assert step.current == f"{RELEASES}/{step.version}"


def test_releases_keep_both_versions(step, baseline, next_source):
    assert {baseline, next_source[1]} <= set(step.releases)


# -- release N+1 and back: the peers ---------------------------------------------


def test_websocket_peers_resumed_with_their_id_and_room(step):
    for peer in step.room.peers:
        if peer.transport != "websocket":
            continue
        first, *resumed = peer.welcomes
        assert resumed, f"{peer.name} was never sent away, so the restarts were not proven on it"
        assert [o.code for o in peer.outages] == [1001] * len(peer.outages), peer.outages
        for welcome in resumed:
            assert welcome.get("type") == "welcome", f"{peer.name}'s resume was refused: {welcome}"
            assert (welcome["id"], welcome["resumed"], welcome["room"], welcome["role"], welcome["lost"]) == (
                first["id"], True, peer.room, peer.role, 0)


def test_resumes_found_a_live_instance_at_once(step):
    outages = {p.name: [round(o.seconds, 3) for o in p.outages] for p in step.room.peers if p.outages}
    assert all(o.resumed_at is not None for p in step.room.peers for o in p.outages), outages
    assert max(max(o) for o in outages.values()) < MAX_OUTAGE, outages


def test_polling_peer_kept_its_session(step):
    for peer in step.room.peers:
        if peer.transport == "polling":
            assert peer.received, f"{peer.name} got nothing"
            assert not peer.anomalies, peer.anomalies


def test_no_message_lost(step):
    for stream in step.room.streams():
        missing = sorted(set(range(1, stream.sent + 1)) - set(stream.numbers))
        assert not missing, f"{stream.sender} -> {stream.receiver}: {len(missing)} of {stream.sent} lost: {missing}"


def test_order_kept_per_sender(step):
    for stream in step.room.streams():
        first_seen = list(dict.fromkeys(stream.numbers))
        assert first_seen == sorted(first_seen), f"{stream.sender} -> {stream.receiver} out of order: {first_seen}"


def test_server_delivered_nothing_twice(step):
    assert [a for peer in step.room.peers for a in peer.anomalies] == []


def test_only_resent_messages_repeat(step):
    for stream in step.room.streams():
        unexplained = [n for n in stream.duplicates if n not in stream.resent]
        assert not unexplained, f"{stream.sender} -> {stream.receiver} got {unexplained} twice, never resent"


def test_no_server_errors(step):
    # Redis stays up through an app upgrade: not even an `unavailable` to send again.
    assert {p.name: p.server_errors + p.retried_errors for p in step.room.peers
            if p.server_errors or p.retried_errors} == {}


# -- nginx -> apache -----------------------------------------------------------


def test_apache_serves_the_client(apache):
    async def fetch() -> tuple[int, str, dict]:
        context = ssl.create_default_context(cafile=str(CA_FILE))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
            async with http.get(f"https://localhost:{apache}/") as page:
                status, server = page.status, page.headers.get("Server", "")
            async with http.get(f"https://localhost:{apache}/health") as health:
                version = (await health.json())["version"]
            async with http.ws_connect(f"https://localhost:{apache}/ws") as ws:
                welcome = await ws.receive_json(timeout=10)
            return status, server, {"version": version, "welcome": welcome["type"]}

    status, server, seen = asyncio.run(fetch())
    assert status == 200
    assert "nginx" not in server.lower()
    assert seen == {"version": release_n(), "welcome": "welcome"}


def test_apache_running_and_enabled(apache, assert_service_up):
    assert_service_up("apache2")


def test_nginx_stopped_and_disabled(apache, host):
    nginx = host.service("nginx")
    assert not nginx.is_running
    assert not nginx.is_enabled
