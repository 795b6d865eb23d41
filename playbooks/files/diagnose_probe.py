#!/usr/bin/env python3
"""Read-only probes for playbooks/diagnose.yml, run by the host's own python3 (stdlib only).

    diagnose_probe.py proxy --server nginx|apache --heartbeat HOST=SECONDS/IDLE ... [--warn-days 14]
    diagnose_probe.py firewall --expect tcp/443 --expect udp/49160-49999 ...

`proxy` (on a proxy host, as root: it reads the deployed config with `nginx -T` or Apache's
files) checks what a browser meets, through the proxy on this host's loopback with the real
names (SNI and Host): DNS, the certificate, 308 and HSTS, a WebSocket up to `welcome`,
long-polling, each upstream's /ready, and the app heartbeat against the proxy's WebSocket read
timeout. `firewall` reads `nft -j list table inet webrtc_edge`. Each prints one JSON object,
{"rows": [{"check", "result": ok|warn|FAIL, "detail", "action"}], ...}; nothing is written.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time

LOCAL_CA = "/etc/webrtc-edge/tls/ca.pem"  # roles/tls: the CA clients trust (local CA, given CA or ACME chain)
TIMEOUT = 5.0
TABLE = "webrtc_edge"  # roles/firewall: table inet webrtc_edge


def row(check, result, detail, action=""):
    return {"check": check, "result": result, "detail": detail, "action": action if result != "ok" else ""}


# ---------------------------------------------------------------------------
# The deployed proxy configuration
# ---------------------------------------------------------------------------

def _block(text, start):
    """The text of the {...} block whose opening brace is at or after ``start``."""
    depth, i = 0, text.index("{", start)
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return text[i + 1:]


def _seconds(value, unit):
    return int(value) * {"": 1, "s": 1, "m": 60, "h": 3600}[unit or ""]


def nginx_config(dump):
    """Names, ports, upstream servers and the /ws read timeout of `nginx -T` output."""
    dump = re.sub(r"(?m)#.*$", "", dump)
    names = []
    for value in re.findall(r"\bserver_name\s+([^;]+);", dump):
        names += [n for n in value.split() if n != "_" and n not in names]
    https = re.findall(r"\blisten\s+(?:\S*:)?(\d+)\s+ssl\b", dump)
    plain = [p for p in re.findall(r"\blisten\s+(?:\S*:)?(\d+)\s*;", dump)]
    upstreams = []
    for match in re.finditer(r"\bupstream\s+\S+\s*\{", dump):
        for server in re.findall(r"\bserver\s+(\S+?:\d+)\b", _block(dump, match.start())):
            if server not in upstreams:
                upstreams.append(server)
    ws_timeout, source = 60, "nginx's default (no proxy_read_timeout)"
    outside = dump
    for match in reversed(list(re.finditer(r"\blocation\b[^{;]*\{", dump))):
        end = match.end() + len(_block(dump, match.start())) + 1
        outside = outside[:match.start()] + outside[end:]
    server_level = re.search(r"\bproxy_read_timeout\s+(\d+)([smh]?)\s*;", outside)
    location = re.search(r"\blocation\s+(?:=\s*)?/ws\s*\{", dump)
    inner = _block(dump, location.start()) if location else ""
    found = re.search(r"\bproxy_read_timeout\s+(\d+)([smh]?)\s*;", inner)
    if found:
        ws_timeout, source = _seconds(*found.groups()), "proxy_read_timeout in location /ws"
    elif server_level:
        ws_timeout, source = _seconds(*server_level.groups()), "proxy_read_timeout (server level)"
    return {"names": names, "https_port": int(https[0]) if https else 443,
            "http_port": int(plain[0]) if plain else 80, "upstreams": upstreams,
            "ws_read_timeout": ws_timeout, "ws_read_timeout_source": source}


def apache_config(text):
    """The same from Apache's enabled configuration files."""
    text = re.sub(r"(?m)^\s*#.*$", "", text)
    names = []
    for value in re.findall(r"(?mi)^\s*Server(?:Name|Alias)\s+(.+)$", text):
        names += [n for n in value.split() if n not in names and not n.endswith(".invalid")]  # the catch-all
    vhost_ports = re.findall(r"(?i)<VirtualHost\s+\S*:(\d+)>", text)
    https = [p for p in vhost_ports if p != "80"] or ["443"]
    upstreams, ws_timeout, source = [], None, ""
    for line in re.findall(r"(?mi)^\s*BalancerMember\s+(.+)$", text):
        target = re.match(r'"?(\w+)://([^"\s/]+)', line)
        if target and target.group(2) not in upstreams:
            upstreams.append(target.group(2))
        timeout = re.search(r"\btimeout=(\d+)", line)
        if timeout and (target.group(1) == "ws" or "upgrade=websocket" in line):
            ws_timeout, source = int(timeout.group(1)), "timeout= of the WebSocket BalancerMember"
    if ws_timeout is None:
        found = re.search(r"(?mi)^\s*ProxyTimeout\s+(\d+)", text) or re.search(r"(?mi)^\s*Timeout\s+(\d+)", text)
        ws_timeout, source = ((int(found.group(1)), "ProxyTimeout/Timeout") if found
                              else (60, "Apache's default Timeout"))
    return {"names": names, "https_port": int(https[0]), "http_port": 80, "upstreams": upstreams,
            "ws_read_timeout": ws_timeout, "ws_read_timeout_source": source}


def read_proxy_config(server):
    if server == "nginx":
        return nginx_config(subprocess.run(["nginx", "-T"], capture_output=True, text=True, check=True).stdout)
    dump = subprocess.run(["apache2ctl", "-t", "-D", "DUMP_INCLUDES"], capture_output=True, text=True).stdout
    files = re.findall(r"\(\d+\)\s+(/\S+)", dump)
    return apache_config("\n".join(open(f, encoding="utf-8", errors="replace").read() for f in files))


# ---------------------------------------------------------------------------
# Talking to the proxy as a browser would
# ---------------------------------------------------------------------------

def tls_context():
    ctx = ssl.create_default_context()
    if os.path.exists(LOCAL_CA):
        ctx.load_verify_locations(LOCAL_CA)
    return ctx


def tls_socket(address, port, name, ctx=None):
    raw = socket.create_connection((address, port), timeout=TIMEOUT)
    try:
        return (ctx or tls_context()).wrap_socket(raw, server_hostname=name)
    except Exception:
        raw.close()
        raise


def https(address, port, name, method, path, body=None, headers=None):
    conn = http.client.HTTPSConnection(name, port, timeout=TIMEOUT)
    conn.sock = tls_socket(address, port, name)
    head = {"Host": name if port == 443 else f"{name}:{port}", "Origin": f"https://{name}"}
    head.update(headers or {})
    if body is not None:
        body = json.dumps(body).encode()
        head["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=head)
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    return answer.status, answer.headers, data


def check_dns(names, local_addresses):
    rows = []
    for name in names:
        try:
            found = sorted({info[4][0] for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)})
        except socket.gaierror as exc:
            rows.append(row(f"DNS {name}", "FAIL", f"does not resolve: {exc}",
                            f"publish an A/AAAA record for {name} pointing at this proxy (or its load balancer)"))
            continue
        here = [a for a in found if a in local_addresses]
        rows.append(row(f"DNS {name}", "ok" if here else "warn", " ".join(found),
                        f"{name} resolves to none of this host's addresses: fine behind a load balancer or NAT, "
                        "else fix the DNS record"))
    return rows


def check_certificate(address, port, names, warn_days):
    rows = []
    for name in names:
        check = f"certificate {name}"
        try:
            with tls_socket(address, port, name) as tls:
                cert = tls.getpeercert()
        except ssl.SSLCertVerificationError as exc:
            rows.append(row(check, "FAIL", exc.verify_message or str(exc),
                            "serve a certificate that chains to a trusted CA and names "
                            f"{name}: check tls_server_names and tls_source, then re-run site.yml --tags tls"))
            continue
        except (OSError, ssl.SSLError) as exc:
            rows.append(row(check, "FAIL", f"no TLS on {address}:{port}: {exc}",
                            "is the proxy running? systemctl status nginx / apache2"))
            continue
        days = (ssl.cert_time_to_seconds(cert["notAfter"]) - time.time()) / 86400
        result = "ok" if days >= warn_days else "warn"
        rows.append(row(check, result, f"chain verifies, names {name}, {days:.0f} days left ({cert['notAfter']})",
                        f"renew now (fewer than {warn_days} days): tls_source acme renews by itself "
                        "(systemctl list-timers), others: re-run site.yml --tags tls"))
    return rows


def check_redirect_and_hsts(address, http_port, https_port, name):
    rows = []
    try:
        conn = http.client.HTTPConnection(address, http_port, timeout=TIMEOUT)
        conn.request("GET", "/diagnose", headers={"Host": name})
        answer = conn.getresponse()
        location = answer.getheader("Location", "")
        conn.close()
        want = f"https://{name}" + ("" if https_port == 443 else f":{https_port}") + "/diagnose"
        good = answer.status == 308 and location == want
        rows.append(row("HTTP -> HTTPS", "ok" if good else "FAIL", f"{answer.status} {location}",
                        f"port {http_port} must answer 308 to {want}: re-run site.yml --tags proxy"))
    except OSError as exc:
        rows.append(row("HTTP -> HTTPS", "FAIL", f"port {http_port}: {exc}", "is the proxy listening on port 80?"))
    try:
        status, headers, _ = https(address, https_port, name, "GET", "/")
        hsts = headers.get("Strict-Transport-Security", "")
        age = re.search(r"max-age=(\d+)", hsts)
        good = bool(age) and int(age.group(1)) >= 15552000
        rows.append(row("HSTS", "ok" if good else "FAIL", f"{status} Strict-Transport-Security: {hsts or '(none)'}",
                        "the proxy must send HSTS with max-age >= 180 days: re-run site.yml --tags proxy"))
    except (OSError, ssl.SSLError) as exc:
        rows.append(row("HSTS", "FAIL", str(exc), "see the certificate row"))
    return rows


def websocket_welcome(address, port, name):
    """Upgrade on /ws and read the first frame, which must be `welcome`; then close with 1000."""
    key = base64.b64encode(os.urandom(16)).decode()
    with tls_socket(address, port, name) as tls:
        tls.settimeout(TIMEOUT)
        tls.sendall((f"GET /ws HTTP/1.1\r\nHost: {name}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: https://{name}\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status + " ":
            return None, status
        while len(rest) < 2 or len(rest) < _frame_end(rest):
            chunk = tls.recv(65536)
            if not chunk:
                return None, "connection closed before welcome"
            rest += chunk
        payload = rest[_frame_end(rest) - _payload_length(rest):_frame_end(rest)]
        mask = os.urandom(4)
        close = (1000).to_bytes(2, "big")
        tls.sendall(bytes([0x88, 0x80 | len(close)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(close)))
        return json.loads(payload), status


def _payload_length(frame):
    n = frame[1] & 0x7F
    if n == 126:
        return int.from_bytes(frame[2:4], "big") if len(frame) >= 4 else 1 << 30
    if n == 127:
        return int.from_bytes(frame[2:10], "big") if len(frame) >= 10 else 1 << 30
    return n


def _frame_end(frame):
    n = frame[1] & 0x7F
    return {126: 4, 127: 10}.get(n, 2) + _payload_length(frame)


def check_websocket(address, port, name):
    try:
        welcome, status = websocket_welcome(address, port, name)
    except (OSError, ssl.SSLError, ValueError) as exc:
        welcome, status = None, str(exc)
    if welcome and welcome.get("type") == "welcome":
        return row("WebSocket /ws", "ok", f"101, welcome (heartbeat {welcome.get('heartbeat')} s)"), welcome
    action = ("502/504: no instance answered, see the upstream rows (instances down, firewall between proxy "
              "and app); 400/426: something in front strips Upgrade/Connection; 403: Origin not allowed "
              "(signaling_app_allowed_origins)")
    return row("WebSocket /ws", "FAIL", status, action), None


def check_polling(address, port, name):
    try:
        status, _, body = https(address, port, name, "POST", "/api/sessions", body={})
        if status != 201:
            raise ValueError(f"POST /api/sessions: {status} {body[:120]!r}")
        session = json.loads(body)
        auth = {"Authorization": f"Bearer {session['token']}"}
        status, _, body = https(address, port, name, "GET", f"/api/sessions/{session['id']}/messages?wait=1",
                                headers=auth)
        if status != 200:
            raise ValueError(f"GET messages: {status} {body[:120]!r}")
        status, _, _ = https(address, port, name, "DELETE", f"/api/sessions/{session['id']}", headers=auth)
        if status != 204:
            raise ValueError(f"DELETE session: {status}")
    except (OSError, ssl.SSLError, ValueError, KeyError) as exc:
        return row("long-polling /api", "FAIL", str(exc),
                   "502/504: see the upstream rows; 429: the proxy's rate limit (proxy_api_rate); a poll cut "
                   "before its wait: proxy_api_read_timeout must exceed the longest wait (30 s)")
    return row("long-polling /api", "ok", "session created, polled (1 s wait), deleted")


def check_upstreams(upstreams):
    rows = []
    for upstream in upstreams:
        address, _, port = upstream.rpartition(":")
        check = f"upstream {upstream} /ready"
        unit = f"signaling@{port}"
        try:
            conn = http.client.HTTPConnection(address.strip("[]"), int(port), timeout=TIMEOUT)
            conn.request("GET", "/ready")
            answer = conn.getresponse()
            body = answer.read()[:100].decode(errors="replace")
            conn.close()
        except OSError as exc:
            rows.append(row(check, "FAIL", f"unreachable: {exc}",
                            f"instance down: on its app host `systemctl status {unit}`, `journalctl -u {unit}`; "
                            "if it runs, the firewall between proxy and app (see the firewall rows)"))
            continue
        if answer.status == 200:
            rows.append(row(check, "ok", "200"))
        else:
            rows.append(row(check, "FAIL", f"{answer.status} {body}",
                            f"not ready: draining (a restart in progress) or its Redis unreachable (see the Redis "
                            f"row); `journalctl -u {unit}` on its app host"))
    return rows


def check_heartbeat(config, heartbeats):
    rows, timeout = [], config["ws_read_timeout"]
    for spec in heartbeats:
        host, _, values = spec.partition("=")
        heartbeat, _, idle = values.partition("/")
        heartbeat, idle = int(heartbeat), int(idle or 0)
        detail = (f"app {host}: heartbeat {heartbeat} s, idle_timeout {idle} s; proxy WebSocket read timeout "
                  f"{timeout} s ({config['ws_read_timeout_source']})")
        if heartbeat >= timeout:
            rows.append(row(f"heartbeat vs proxy timeout ({host})", "FAIL", detail,
                            f"connections drop every {timeout} s: the proxy closes a silent WebSocket before the app's "
                            f"ping; set proxy_ws_read_timeout above signaling_app_heartbeat ({heartbeat}), e.g. "
                            f"{heartbeat * 3}, and re-run site.yml --tags proxy"))
        elif idle and idle <= heartbeat:
            rows.append(row(f"heartbeat vs proxy timeout ({host})", "FAIL", detail,
                            "the app drops peers before it pings them: signaling_app_idle_timeout must exceed "
                            "signaling_app_heartbeat; re-run site.yml --tags app"))
        else:
            margin = timeout - heartbeat
            rows.append(row(f"heartbeat vs proxy timeout ({host})", "ok" if margin >= 5 else "warn", detail,
                            "less than 5 s between the app's ping and the proxy's timeout: "
                            "raise proxy_ws_read_timeout"))
    return rows


def probe_proxy(args):
    config = read_proxy_config(args.server)
    names = config["names"] or ["localhost"]
    name = names[0]
    rows = check_dns(names, set(args.local_address))
    rows += check_certificate(args.address, config["https_port"], names, args.warn_days)
    rows += check_redirect_and_hsts(args.address, config["http_port"], config["https_port"], name)
    ws_row, _ = check_websocket(args.address, config["https_port"], name)
    rows.append(ws_row)
    rows.append(check_polling(args.address, config["https_port"], name))
    rows += check_upstreams(config["upstreams"])
    rows += check_heartbeat(config, args.heartbeat)
    return {"rows": rows, "config": config}


# ---------------------------------------------------------------------------
# The host firewall
# ---------------------------------------------------------------------------

def _ports(value, sets):
    if isinstance(value, int):
        return [(value, value)]
    if isinstance(value, str) and value.startswith("@"):
        return [p for v in sets.get(value[1:], []) for p in _ports(v, sets)]
    if isinstance(value, dict) and "set" in value:
        return [p for v in value["set"] for p in _ports(v, sets)]
    if isinstance(value, dict) and "range" in value:
        return [tuple(value["range"])]
    return []


def accepted_ports(ruleset):
    """(proto, low, high) of every accept rule matching a destination port, in any chain of the table."""
    items = ruleset.get("nftables", [])
    sets = {i["set"]["name"]: i["set"].get("elem", []) for i in items if "set" in i}
    accepted = []
    for item in items:
        rule = item.get("rule")
        if not rule or not any("accept" in e for e in rule["expr"]):
            continue
        for expr in rule["expr"]:
            left = expr.get("match", {}).get("left", {})
            payload = left.get("payload", {}) if isinstance(left, dict) else {}
            if payload.get("field") == "dport" and expr["match"].get("op", "==") in ("==", "in"):
                accepted += [(payload["protocol"], lo, hi) for lo, hi in _ports(expr["match"]["right"], sets)]
    return accepted


def probe_firewall(args):
    done = subprocess.run(["nft", "-j", "list", "table", "inet", TABLE], capture_output=True, text=True)
    if done.returncode != 0:
        error = (done.stderr.strip().splitlines() or [""])[0][:100]
        return {"rows": [row("firewall", "warn", f"no table inet {TABLE}: {error}",
                             "the host firewall is off (firewall_enabled: false) or not loaded: "
                             "systemctl status webrtc-edge-firewall; re-run site.yml --tags firewall")]}
    accepted = accepted_ports(json.loads(done.stdout))
    missing = []
    for spec in args.expect:
        proto, _, ports = spec.partition("/")
        low, _, high = ports.partition("-")
        low, high = int(low), int(high or low)
        if not any(p == proto and lo <= low and high <= hi for p, lo, hi in accepted):
            missing.append(spec)
    open_ports = sorted({f"{p}/{lo}" + (f"-{hi}" if hi != lo else "") for p, lo, hi in accepted})
    if missing:
        return {"rows": [row("firewall", "FAIL", f"drops {', '.join(missing)}; lets in {' '.join(open_ports)}",
                             "the loaded ruleset is not the deployment's: re-run site.yml --tags firewall, or "
                             "`systemctl reload webrtc-edge-firewall` (nft list table inet webrtc_edge)")]}
    return {"rows": [row("firewall", "ok", f"lets in {' '.join(open_ports)}")]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy")
    proxy.add_argument("--server", choices=["nginx", "apache"], required=True)
    proxy.add_argument("--address", default="127.0.0.1", help="where to reach the proxy (SNI and Host are the names)")
    proxy.add_argument("--local-address", action="append", default=[], help="this host's addresses (DNS check)")
    proxy.add_argument("--heartbeat", action="append", default=[], help="APP_HOST=HEARTBEAT/IDLE_TIMEOUT")
    proxy.add_argument("--warn-days", type=int, default=14)
    firewall = sub.add_parser("firewall")
    firewall.add_argument("--expect", action="append", default=[], help="PROTO/PORT or PROTO/LOW-HIGH")
    args = parser.parse_args(argv)
    result = probe_proxy(args) if args.command == "proxy" else probe_firewall(args)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
