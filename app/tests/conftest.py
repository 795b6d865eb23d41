"""Fixtures: a fresh app per test from the factory, and the protocol clients (signaling.client)."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from signaling import config
from signaling.app import create_app
from signaling.client import PollingPeer, WsPeer


class Peer(WsPeer):
    """The reference WebSocket peer, with the tests' short timeout and ``nothing()``."""

    timeout = 3.0

    async def nothing(self, timeout: float = 0.2) -> None:
        """Assert no frame arrives within ``timeout``."""
        with pytest.raises(asyncio.TimeoutError):
            msg = await self.ws.receive(timeout=timeout)
            pytest.fail(f"unexpected frame {msg.data!r}")


class Poller(PollingPeer):
    """The reference long-polling peer; ``send`` checks the status it is told."""

    timeout = 3.0

    @property
    def info(self) -> dict[str, Any]:
        """The ``201`` answer that created the session."""
        return self.welcome

    async def send(self, *msgs: dict[str, Any], status: int = 202) -> Any:
        got, body = await self.post(*msgs)
        assert got == status, body
        return body


ClientFactory = Callable[..., Awaitable[TestClient]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Instance:
    """A real ``python -m signaling`` process (test_fuzz.py, test_rfc6455.py)."""

    base: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    uploads: Path | None = None
    log_offset: int = 0

    def new_errors(self) -> list[str]:
        """Lines logged at error level (or worse) since the last call.

        Not counted: aiohttp's own line for a request its HTTP parser refused
        (an ``aiohttp.http_exceptions`` error, answered 400 before any of our
        code runs); the status itself is checked with every request.
        """
        with open(self.log, "rb") as fh:
            fh.seek(self.log_offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.log_offset += len(complete)
        return [line.decode(errors="replace")[:2000] for line in complete.splitlines()
                if (b'"level":"error"' in line or b'"level":"critical"' in line or b"Traceback" in line)
                and not (b'"logger":"aiohttp.server"' in line and b"aiohttp.http_exceptions." in line)]


def start_app(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Instance:
    """Start ``python -m signaling`` on a free loopback port with ``args`` (and ``SIGNALING_*``
    variables in ``env``: secrets, which its command line refuses); wait for /ready."""
    port = free_port()
    log = workdir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "signaling", "--host", "127.0.0.1", "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    inst = Instance(f"http://127.0.0.1:{port}", port, proc, log)
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(inst.base + "/ready", timeout=1) as resp:
                if resp.status == 200:
                    return inst
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the instance did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def stop_app(inst: Instance) -> None:
    inst.proc.terminate()
    try:
        inst.proc.wait(15)
    except subprocess.TimeoutExpired:
        inst.proc.kill()
        inst.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real redis-server (Debian's package) on a free loopback port, for the whole run."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") or os.environ.get("REQUIRE_REDIS"):
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        pytest.skip("redis-server is not installed")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--requirepass", "test-secret"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    url = f"redis://:test-secret@127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield {"url": url, "port": port, "proc": proc}
    proc.terminate()
    proc.wait(5)


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """The shared server, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server["url"])
    client.flushall()
    client.close()
    return redis_server["url"]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run a test on the in-memory hub and on the Redis hub."""
    return request.param


@pytest.fixture
async def make_client(aiohttp_client: Any, backend: str, request: pytest.FixtureRequest) -> ClientFactory:
    """``await make_client(**settings)``: a test client on a fresh app (per backend)."""
    url = request.getfixturevalue("redis_url") if backend == "redis" else ""

    async def factory(**values: Any) -> TestClient:
        if url:
            values.setdefault("redis_url", url)
        return await aiohttp_client(create_app(config.make(**values)))

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    return await make_client()


@pytest.fixture
def connect() -> Callable[..., Awaitable[Peer]]:
    async def factory(client: TestClient, path: str = "/ws", **kw: Any) -> Peer:
        return await Peer.connect(client, path, **kw)

    return factory


@pytest.fixture
def open_poller() -> Callable[[TestClient], Awaitable[Poller]]:
    async def factory(client: TestClient) -> Poller:
        return await Poller.create(client)

    return factory


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Any:
    """Collect after every test, so a socket a test leaves open is reported against that test
    (as an unraisable ResourceWarning, an error here) and not against whichever test runs next."""
    yield
    gc.collect()
