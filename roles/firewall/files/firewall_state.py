"""What the firewall role's preflight reads on a host before anything changes, printed as JSON.

Run by roles/firewall/tasks/preflight.yml as
``python3 -c <this file> RULESET_FILE SSH_PORT LOCAL UNIT_FILE`` (no become: it only reads).
Prints one JSON object:

``ssh_connection``
    the SSH connection Ansible's session came in on, as sshd put it in the environment
    (``SSH_CONNECTION``: client address, client port, server address, server port), or "".
    Looked up in this process's environment first, then in each parent's: a ``local``
    connection inherits the controller's environment, where ``sudo`` may have dropped it
    while the operator's login shell further up still has it.
``ssh_peers``
    with LOCAL=1 only (``ansible_connection: local``, the controller is this host): the
    client addresses of the TCP connections established to SSH_PORT right now, the
    operator's SSH sessions into this machine; [] otherwise.
``loaded``
    the model the last run left in RULESET_FILE (its marker line), or null.
``sha256``
    of RULESET_FILE and UNIT_FILE (the unit's file), null where missing: the role writes neither
    when it would write the same, and saves a round trip to the host per file.
``unit``
    whether the unit (UNIT_FILE's name) is ``enabled`` and ``active`` now.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import sys

MODEL_MARKER = "# webrtc-edge-firewall-model: "  # plugins/filter/firewall_model.py
ESTABLISHED = "01"


def ssh_connection(pid: int | None = None) -> str:
    """SSH_CONNECTION of ``pid`` (default: this process) or of its nearest ancestor that has one."""
    pid = pid or os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/environ", "rb") as env:
                for item in env.read().split(b"\0"):
                    if item.startswith(b"SSH_CONNECTION="):
                        return item.split(b"=", 1)[1].decode(errors="replace").strip()
        except OSError:
            pass  # another user's process: go on with its parent
        try:
            with open(f"/proc/{pid}/status") as status:
                pid = next(int(line.split()[1]) for line in status if line.startswith("PPid:"))
        except (OSError, StopIteration, ValueError):
            break
    return ""


def _hex_address(text: str) -> str:
    """An address of /proc/net/tcp{,6}: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def established_peers(table: str, port: int) -> list[str]:
    """Client addresses of the connections established to local ``port`` in a /proc/net/tcp{,6} text."""
    peers = []
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != ESTABLISHED:
            continue
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port:
            peers.append(_hex_address(fields[2].rsplit(":", 1)[0]))
    return peers


def loaded_model(path: str):
    try:
        with open(path) as ruleset:
            for line in ruleset:
                if line.startswith(MODEL_MARKER):
                    return json.loads(line[len(MODEL_MARKER):])
    except (OSError, ValueError):
        pass
    return None


def sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as content:
            return hashlib.sha256(content.read()).hexdigest()
    except OSError:
        return None


def unit_state(unit: str) -> dict[str, bool]:
    def answers(*args: str) -> bool:
        try:
            return subprocess.run(["systemctl", *args, unit], capture_output=True, check=False).returncode == 0
        except OSError:
            return False
    return {"enabled": answers("is-enabled", "--quiet"), "active": answers("is-active", "--quiet")}


def main(argv: list[str]) -> None:
    ruleset_file, ssh_port, local, unit_file = argv[1], int(argv[2]), argv[3] == "1", argv[4]
    peers = []
    if local:
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(name) as table:
                    peers += established_peers(table.read(), ssh_port)
            except OSError:
                pass
    print(json.dumps({
        "ssh_connection": ssh_connection(),
        "ssh_peers": sorted(set(peers)),
        "loaded": loaded_model(ruleset_file),
        "sha256": {"ruleset": sha256(ruleset_file), "unit": sha256(unit_file)},
        "unit": unit_state(os.path.basename(unit_file)),
    }))


if __name__ == "__main__":
    main(sys.argv)
