"""RFC 6455 conformance through the proxy (issue 11): app/tests/rfc6455.py, the suite the
app tests run against the app directly, here against the deployed site.

Group ``ws_conformance``, selected with ``--checks`` (molecule/common/testinfra_plugin.py) by
molecule/default (through nginx) and molecule/apache (through Apache). Every case connects to the proxy's 443 published
on 127.0.0.1 with TLS (the run's CA, SNI and ``Host`` the site's name), like any
client on the internet, and the proxy passes the WebSocket to one of the app
instances. The cases that answer differently through a proxy say so per path
(``rfc6455.NGINX``, ``rfc6455.APACHE``) and why. The memory cases read every app
instance's resident set on its host (``/proc/<MainPID>/status`` of each
``signaling@<port>``, reset through ``clear_refs`` before each attack); their figures
go to ``molecule/artifacts/<label>/ws_memory.json`` (tests/tools/report.py prints them).
"""

from __future__ import annotations

import asyncio
import json

import pytest
import rfc6455  # app/tests/rfc6455.py (pythonpath in molecule/pytest.ini)
from deployment_checks import _instances, artifacts_dir, proxy_host, proxy_kind, run_async, site  # noqa: F401 (fixtures)
from hostile_checks import API_BURST, API_RATE, _proxy_var

pytestmark = pytest.mark.ws_conformance  # the group a scenario selects with --checks (testinfra_plugin.py)


def _each_instance(instances, command: str) -> dict[str, str]:
    """Run ``command`` with ``$PID`` set to each instance's main process, one call per host."""
    out = {}
    for host in {i.host.backend.get_hostname(): i.host for i in instances}.values():
        units = [i for i in instances if i.host is host]
        script = "; ".join(
            f"PID=$(systemctl show -p MainPID --value {i.unit}); echo '=== {i.name}'; {command}" for i in units)
        text = host.check_output(script)
        for chunk in text.split("=== ")[1:]:
            name, _, body = chunk.partition("\n")
            out[name] = body
    return out


def _pace(proxy_host, proxy_kind) -> float:
    """Seconds between two of the suite's connections. Apache: mod_evasive counts every
    request per page and address (``proxy_api_rate`` + ``proxy_api_burst`` a second, then
    403 for 10 s) and every case is a request for /ws from this one address, so the suite
    keeps to two thirds of that. nginx limits the request rate under /api/ only."""
    if proxy_kind != rfc6455.APACHE:
        return 0.0
    per_second = int(_proxy_var(proxy_host, "proxy_api_rate", API_RATE)) + int(
        _proxy_var(proxy_host, "proxy_api_burst", API_BURST))
    return 1.5 / per_second


async def _served(target: rfc6455.Target, timeout: float = 30) -> None:
    """Wait until an upgrade gets its 101: the checks before may have left this address
    blocked for a while (mod_evasive's 10 s) or over a limit."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer, ws = await rfc6455.handshake(target)
        await ws.done()
        if answer.status == 101:
            return
        assert asyncio.get_running_loop().time() < deadline, f"/ws not served: {answer.head!r}"
        await asyncio.sleep(1)


@pytest.fixture(scope="module")
def ws_target(site, proxy_host, proxy_kind) -> rfc6455.Target:
    instances = _instances()

    def memory() -> dict[str, rfc6455.Memory]:
        return {name: rfc6455.parse_status(text)
                for name, text in _each_instance(instances, "cat /proc/$PID/status").items()}

    def reset_peak() -> None:
        _each_instance(instances, "echo 5 > /proc/$PID/clear_refs")

    figures: dict[str, dict] = {}

    def record(name: str, values: dict) -> None:
        figures[name] = values
        out = artifacts_dir()
        out.mkdir(parents=True, exist_ok=True)
        (out / "ws_memory.json").write_text(json.dumps(
            {"proxy": proxy_kind, "bound_kib": rfc6455.MEMORY_BOUND_KIB, "cases": figures}, indent=2))

    target = rfc6455.Target("127.0.0.1", site.https_port, via=proxy_kind, tls=site.tls_context(),
                            server_name=site.name, host_header=f"{site.name}:{site.https_port}",
                            memory=memory, reset_peak=reset_peak, record=record,
                            interval=_pace(proxy_host, proxy_kind))
    run_async(_served(target))
    return target


@pytest.mark.parametrize("case", rfc6455.CASES, ids=[c.id for c in rfc6455.CASES])
def test_rfc6455_through_the_proxy(ws_target, case):
    run_async(case.run(ws_target))
