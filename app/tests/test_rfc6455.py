"""The RFC 6455 conformance suite (rfc6455.py) against real instances, on both hubs.

``python -m signaling`` runs as a subprocess with its default settings, once with
the in-memory hub and once with ``SIGNALING_REDIS_URL`` naming the real redis-server of
conftest.py; every case of rfc6455.CASES runs against each, over a plain TCP
connection to the instance (no proxy: ``rfc6455.APP``). The memory cases read the
instance's resident set from ``/proc/PID/status`` and reset its peak through
``/proc/PID/clear_refs``. After the cases, the instance must still be running and
must not have logged an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import rfc6455
from conftest import Instance, start_app, stop_app


def _read_memory(pid: int) -> dict[str, rfc6455.Memory]:
    return {"app": rfc6455.parse_status(Path(f"/proc/{pid}/status").read_text())}


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.fixture(scope="module", params=["memory", "redis"])
def instance(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """One instance per hub for the whole module."""
    # The Redis URL carries a password: by environment, as the command line refuses it.
    env = {"SIGNALING_REDIS_URL": request.getfixturevalue("redis_server")["url"]} if request.param == "redis" else {}
    inst = start_app(tmp_path_factory.mktemp(f"rfc6455-{request.param}"), env=env)
    try:
        yield inst
        assert inst.proc.poll() is None, "the instance died"
        errors = inst.new_errors()
        assert not errors, "the instance logged errors:\n" + "\n".join(errors)
    finally:
        stop_app(inst)


@pytest.fixture
def target(instance: Instance) -> rfc6455.Target:
    pid = instance.proc.pid
    return rfc6455.Target("127.0.0.1", instance.port, via=rfc6455.APP,
                          memory=lambda: _read_memory(pid), reset_peak=lambda: _reset_peak(pid))


@pytest.mark.parametrize("case", rfc6455.CASES, ids=[c.id for c in rfc6455.CASES])
async def test_rfc6455(target: rfc6455.Target, case: rfc6455.Case) -> None:
    await case.run(target)
