"""default scenario: playbooks/diagnose.yml names the cause of a broken deployment.

The deployment is broken on purpose, one fault per row, all at once: an app instance stopped
(``signaling@<last port>``), a proxy WebSocket read timeout below the app's heartbeat (the
deployed nginx site edited, nginx reloaded), and coturn given a TURN secret that is not the
app's (``/etc/turnserver.conf`` edited, coturn restarted). Diagnose runs and must FAIL exactly
those three rows, each with the advice that fixes it, and leave every other row ok. The faults
are undone whatever happens (the fixture's ``finally``: later test files use the same host);
then diagnose runs again, in check mode, and every row is ok.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from testinfra_helpers import instance_ports, inventory_host, inventory_hosts

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent  # with its group_vars/
NGINX_SITE = "/etc/nginx/sites-available/webrtc-edge.conf"
TURN_CONFIG = "/etc/turnserver.conf"
BACKUP = "/root/diagnose-test"  # the originals while broken (the test host only)

testinfra_hosts = inventory_hosts("proxy")


def diagnose(*options: str) -> tuple[int, list[dict], str]:
    """Run the playbook on the scenario's inventory: its exit code, its rows, its output."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        argv = ["ansible-playbook", "-i", str(INVENTORY), "playbooks/diagnose.yml",
                "-e", f"diagnose_report={report}", *options]
        env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
        proc = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300, check=False)
        output = proc.stdout + proc.stderr
        assert report.exists(), f"no report from {' '.join(argv)}:\n{output[-4000:]}"
        return proc.returncode, json.loads(report.read_text()), output


def by_result(rows: list[dict], result: str) -> list[dict]:
    return [r for r in rows if r["result"] == result]


def wait_ready(host, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while host.run(f"curl -fsS http://127.0.0.1:{port}/ready").rc != 0:
        assert time.monotonic() < deadline, f"signaling@{port} not ready again within {timeout} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def broken(host):
    """Break the deployment three ways, run diagnose, repair (always); the run's result."""
    app = inventory_host(inventory_hosts("signaling_app")[0])
    turn = inventory_host(inventory_hosts("turn")[0])
    port = instance_ports(app)[-1]
    started = time.monotonic()
    host.check_output(f"mkdir -p {BACKUP} && cp -p {NGINX_SITE} {BACKUP}/nginx-site")
    turn.check_output(f"mkdir -p {BACKUP} && cp -p {TURN_CONFIG} {BACKUP}/turnserver.conf")
    try:
        app.check_output(f"systemctl stop signaling@{port}")
        # The /ws location's timeout (90 s) down to 20 s, below the app's 30 s heartbeat.
        site = host.file(NGINX_SITE).content_string
        ws = re.search(r"location = /ws \{.*?proxy_read_timeout (\d+)s;", site, re.S)
        assert ws, "no proxy_read_timeout in the /ws location"
        host.check_output(f"sed -i '{site[:ws.end()].count(chr(10)) + 1}s/proxy_read_timeout {ws.group(1)}s;/"
                          f"proxy_read_timeout 20s;/' {NGINX_SITE}")
        host.check_output("nginx -t -q && systemctl reload nginx")
        turn.check_output("sed -i 's/^static-auth-secret=.*/static-auth-secret=not-the-apps-secret-0123456789/' "
                          f"{TURN_CONFIG}")
        turn.check_output("systemctl restart coturn")
        return diagnose()
    finally:  # before the result is returned: the last test and later files find the host repaired
        host.run(f"cp -p {BACKUP}/nginx-site {NGINX_SITE} && nginx -t -q && systemctl reload nginx")
        turn.run(f"cp -p {BACKUP}/turnserver.conf {TURN_CONFIG} && systemctl restart coturn")
        app.run(f"systemctl start signaling@{port}")
        host.run(f"rm -rf {BACKUP}")
        turn.run(f"rm -rf {BACKUP}")
        wait_ready(app, port)
        print(f"\ndiagnose, broken three ways and repaired: {time.monotonic() - started:.1f} s")


def test_diagnose_names_each_fault(broken, host):
    code, rows, output = broken
    port = instance_ports(inventory_host(inventory_hosts("signaling_app")[0]))[-1]
    failed = {r["check"]: r for r in by_result(rows, "FAIL")}
    heartbeat = [c for c in failed if c.startswith("heartbeat vs proxy timeout")]
    assert code != 0, "diagnose must fail when a row FAILs"
    assert sorted(failed) == sorted([f"upstream 127.0.0.1:{port} /ready", "TURN allocation", *heartbeat]) \
        and len(heartbeat) == 1, output[-6000:]
    assert f"systemctl status signaling@{port}" in failed[f"upstream 127.0.0.1:{port} /ready"]["action"]
    assert "20 s" in failed[heartbeat[0]]["detail"] and "heartbeat 30 s" in failed[heartbeat[0]]["detail"]
    assert "connections drop every 20 s" in failed[heartbeat[0]]["action"]
    assert "proxy_ws_read_timeout" in failed[heartbeat[0]]["action"]
    assert "wrong TURN secret" in failed["TURN allocation"]["action"]
    # The table on the console names them too.
    assert re.search(r"TURN allocation\s+\S+\s+FAIL", output), output[-4000:]


def test_diagnose_leaves_the_other_rows_ok(broken):
    _, rows, _output = broken
    ok = {r["check"] for r in by_result(rows, "ok")}
    for check in ("certificate", "DNS", "HTTP -> HTTPS", "HSTS", "WebSocket /ws", "long-polling /api",
                  "Redis", "firewall", "clock"):
        assert any(c.startswith(check) for c in ok), f"{check}: {rows}"
    assert not by_result(rows, "warn"), by_result(rows, "warn")


def test_diagnose_all_ok_after_repair_in_check_mode(broken):
    code, rows, output = diagnose("--check")
    assert code == 0, output[-4000:]
    assert rows and rows == by_result(rows, "ok"), [r for r in rows if r["result"] != "ok"]
    checks = {r["check"].split(" (")[0] for r in rows}
    expected = {"DNS", "certificate", "HTTP -> HTTPS", "HSTS", "WebSocket /ws", "long-polling /api",
                "heartbeat vs proxy timeout", "Redis", "TURN allocation", "firewall", "clock"}
    assert expected <= {c if not c.startswith(("DNS ", "certificate ", "upstream ")) else c.split(" ")[0]
                        for c in checks}, checks
    assert len([c for c in checks if c.startswith("upstream ")]) == 2, checks
    assert re.search(r"changed=0\b", output) and not re.search(r"changed=[1-9]", output), output[-2000:]
