# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host firewall: one validated model of what a host opens, rendered as an nftables table.

Sections, top-down:

1. Constants (the table, ICMP essentials).
2. Validation helpers (each raises ``ValueError`` with a readable message).
3. ``build_firewall_model``: role variables -> one normalised model.
4. ``firewall_union`` (what stays open while a run moves services) and
   ``firewall_admits`` / ``firewall_dropped`` (would the model let these connections in:
   the lock-out guard).
5. ``render_firewall_ruleset``: the model -> an ``nft -f`` file.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.validation import _bool, _list, _mapping

# ---------------------------------------------------------------------------
# 1. Constants
# ---------------------------------------------------------------------------

#: The table of our own (family inet: IPv4 and IPv6 in one chain). Loading the file replaces
#: this table and nothing else; the host's other tables (ufw's, firewalld's, Docker's, the
#: apache role's per-address limit) stay as they are.
TABLE = "webrtc_edge"
#: The line of the rendered file that carries the model as JSON, read back by the next run's
#: preflight (what is open now, kept open until that run ends).
MODEL_MARKER = "# webrtc-edge-firewall-model: "
PROTOS = ("tcp", "udp")
#: ICMP that keeps IPv4 working: errors (path MTU discovery needs destination-unreachable's
#: "fragmentation needed") and ping.
ICMP_TYPES = ["destination-unreachable", "time-exceeded", "parameter-problem", "echo-request"]
#: ICMPv6 errors and ping (RFC 4890 4.3.1: never drop packet-too-big).
ICMPV6_TYPES = ["destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem", "echo-request"]
#: Neighbour discovery (RFC 4861): without it IPv6 stops working on the link. Valid only with a
#: hop limit of 255, which an off-link sender cannot forge.
ICMPV6_ND_TYPES = ["nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert"]
#: Multicast listener discovery (RFC 3810), from link-local addresses only: switches that snoop
#: MLD stop forwarding neighbour discovery's multicast to a host that never answers.
ICMPV6_MLD_TYPES = ["mld-listener-query", "mld-listener-report", "mld-listener-done", "mld2-listener-report"]
#: Operator comments: short, printable, no quotes (they go inside an nft string).
_COMMENT_RE = re.compile(r"^[A-Za-z0-9 _.,:;/()\[\]+=@'-]{1,100}$")
_RANGE_RE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
#: Words a raw rule may not contain: they would act on other tables or the whole ruleset.
_RAW_FORBIDDEN = re.compile(r"\b(flush|table|chain|delete|include|define|destroy)\b")


# ---------------------------------------------------------------------------
# 2. Validation helpers
# ---------------------------------------------------------------------------

def _port_number(value, what):
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a port (1..65535), got a boolean")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{what} must be a port (1..65535) or a range 'A-B', got {value!r}")
    return value


def _port_ranges(value, what):
    """``22``, ``'8081-8084'`` or a list of these -> sorted, merged ``[(low, high), ...]``."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{what} must name at least one port")
    ranges = []
    for i, item in enumerate(items):
        label = f"{what}[{i}]" if isinstance(value, (list, tuple)) else what
        match = _RANGE_RE.match(item) if isinstance(item, str) else None
        if match:
            low, high = _port_number(match.group(1), label), _port_number(match.group(2), label)
            if low > high:
                raise ValueError(f"{label} is a range with its ends swapped: {item!r}")
        else:
            low = high = _port_number(item, label)
        ranges.append((low, high))
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return merged


def _port_strings(ranges):
    return [str(low) if low == high else f"{low}-{high}" for low, high in ranges]


def _network(value, what):
    """An address or a network (CIDR) -> ``ipaddress`` network; no host names (nft would
    resolve them once, at load time) and no host bits in a prefix (a typo for another network)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be an IPv4/IPv6 address or network such as 192.0.2.0/24, got {value!r}")
    text = value.strip()
    bare = text.split("%", 1)[0]  # a link-local address's zone (fe80::1%eth0)
    try:
        network = ipaddress.ip_network(bare, strict=True)
    except ValueError:
        try:
            host = ipaddress.ip_network(bare, strict=False)
        except ValueError:
            raise ValueError(
                f"{what} must be an IPv4/IPv6 address or network such as 192.0.2.0/24 (not a host name), "
                f"got {text!r}") from None
        raise ValueError(f"{what} has host bits set: {text!r} (the network is {host})") from None
    if network.version == 6 and network.prefixlen == 128 and network.network_address.ipv4_mapped:
        return ipaddress.ip_network(network.network_address.ipv4_mapped)
    return network


def _sources(value, what):
    """``'any'`` -> None (from anywhere); a list of addresses/networks, or a mapping of host
    name -> its addresses (None when unknown) -> sorted, collapsed ``(ipv4, ipv6)`` lists."""
    if isinstance(value, str) and value.strip() == "any":
        return None
    networks = []
    if isinstance(value, Mapping):
        for host, addresses in value.items():
            if addresses is None:
                raise ValueError(
                    f"{what}: the addresses of {host} are unknown (its facts were not gathered in this run): "
                    "run the whole inventory (playbooks/preflight.yml covers every host), or set "
                    f"firewall_host_addresses for {host}")
            networks += [_network(a, f"{what}: {host}'s address")
                         for a in _list(addresses, f"{what}: {host}'s addresses")]
    else:
        networks = [_network(a, f"{what}[{i}]") for i, a in enumerate(_list(value, f"{what} (or 'any')"))]
    v4 = ipaddress.collapse_addresses(n for n in networks if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in networks if n.version == 6)
    return [_net_string(n) for n in v4], [_net_string(n) for n in v6]


def _net_string(network):
    single = network.prefixlen == network.max_prefixlen
    return str(network.network_address) if single else str(network)


def _comment(value, what):
    if not isinstance(value, str) or not _COMMENT_RE.match(value.strip()):
        raise ValueError(
            f"{what} must be 1 to 100 letters, digits, spaces or _.,:;/()[]+=@'- (no quotes), got {value!r}")
    return value.strip()


def _raw_rule(value, what):
    """An operator's raw nft rule: one line, balanced braces, nothing acting beyond our chain.
    Its syntax is nft's to judge (``nft -c`` before the file lands)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string (one nft rule)")
    text = value.strip()
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text) or ";" in text or "#" in text:
        raise ValueError(f"{what} must be one rule on one line, without ';', '#' or control characters: {text!r}")
    depth = 0
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            break
    if depth != 0:
        raise ValueError(f"{what} has unbalanced braces: {text!r}")
    word = _RAW_FORBIDDEN.search(text)
    if word:
        raise ValueError(f"{what} must be a rule of our input chain, not use '{word.group(1)}': {text!r}")
    return text


def _rule(item, what, comment=None):
    item = _mapping(item, what)
    unknown = sorted(set(item) - {"comment", "proto", "port", "from"})
    if unknown:
        raise ValueError(f"{what} has unknown keys {unknown} (allowed: port, proto, from, comment)")
    if "port" not in item:
        raise ValueError(f"{what} needs a port (a number, a range 'A-B' or a list of these)")
    proto = str(item.get("proto", "tcp")).strip().lower()
    if proto not in PROTOS:
        raise ValueError(f"{what}.proto must be one of: {', '.join(PROTOS)} (got {item.get('proto')!r})")
    sources = _sources(item.get("from", "any"), f"{what}.from")
    return {
        "comment": _comment(comment if comment is not None else item.get("comment", what), f"{what}.comment"),
        "proto": proto,
        "ports": _port_strings(_port_ranges(item["port"], f"{what}.port")),
        "any": sources is None,
        "ipv4": [] if sources is None else sources[0],
        "ipv6": [] if sources is None else sources[1],
    }


# ---------------------------------------------------------------------------
# 3. The model
# ---------------------------------------------------------------------------

def build_firewall_model(spec):
    """Role variables -> the validated model of one host's firewall.

    ``spec`` keys:

    - ``ssh``: ``{port, from}``, ``from`` the addresses/networks that may open SSH sessions
      (``firewall_ssh_allow`` and the controller's address); empty: SSH closed;
    - ``rules``: what the host's tiers serve, each ``{comment, proto, port, from}`` with ``from``
      ``'any'``, a list of addresses or ``{host name: its addresses}``; rules whose ``from`` is
      empty are left out (a group without hosts opens nothing);
    - ``allow``: the operator's ``firewall_allow`` entries, the same shape, ``from`` defaulting
      to anywhere and ``comment`` optional;
    - ``extra_rules``: ``firewall_extra_rules``, raw nft rules, after the SSH rule and before the
      others (a drop there keeps an address away from everything but SSH);
    - ``log_dropped``: log what the policy drops (rate-limited).
    """
    spec = _mapping(spec, "firewall spec")
    unknown = sorted(set(spec) - {"ssh", "rules", "allow", "extra_rules", "log_dropped"})
    if unknown:
        raise ValueError(f"firewall spec has unknown keys {unknown}")
    ssh = _mapping(spec.get("ssh", {}), "firewall_ssh")
    port = _port_number(ssh.get("port", 22), "firewall_ssh_port")
    rules = [_rule(item, f"rules[{i}]") for i, item in enumerate(_list(spec.get("rules", []), "rules"))]
    rules += [_rule(item, f"firewall_allow[{i}]")
              for i, item in enumerate(_list(spec.get("allow", []), "firewall_allow"))]
    if isinstance(ssh.get("from"), str):
        raise ValueError("firewall_ssh_allow must be a list of addresses or networks (0.0.0.0/0 and ::/0: anywhere)")
    ssh_v4, ssh_v6 = _sources(ssh.get("from") or [], "firewall_ssh_allow")
    ssh_rule = {"comment": "ssh", "proto": "tcp", "ports": [str(port)], "any": False, "ipv4": ssh_v4, "ipv6": ssh_v6}
    return {
        "ssh": _unique([ssh_rule]),
        "extra_rules": [_raw_rule(r, f"firewall_extra_rules[{i}]")
                        for i, r in enumerate(_list(spec.get("extra_rules", []), "firewall_extra_rules"))],
        "rules": _unique(rules),
        "log_dropped": _bool(spec.get("log_dropped", False), "firewall_log_dropped"),
    }


def _unique(rules, before=()):
    """The rules that open something and say something new (after ``before``), in order."""
    kept, seen = [], {_key(r) for r in before}
    for rule in rules:
        if (rule["any"] or rule["ipv4"] or rule["ipv6"]) and _key(rule) not in seen:
            kept.append(rule)
            seen.add(_key(rule))
    return kept


def _key(rule):
    """A rule's meaning, without its comment."""
    return (rule["proto"], tuple(rule["ports"]), rule["any"], tuple(rule["ipv4"]), tuple(rule["ipv6"]))


def _check_model(model, what="firewall model"):
    model = _mapping(model, what)
    for key in ("ssh", "rules", "extra_rules", "log_dropped"):
        if key not in model:
            raise ValueError(f"{what} has no '{key}': build it with the firewall_model filter")
    return model


# ---------------------------------------------------------------------------
# 4. Union and the lock-out guard
# ---------------------------------------------------------------------------

def firewall_union(model, before=None):
    """``model`` plus every SSH and tier rule of ``before`` it lacks: what a run loads first, so
    that what the last run opened stays open until this run has moved its services (site.yml
    closes it last). ``before`` is None or empty on a host without our table."""
    model = _check_model(model)
    if not before:
        return model
    before = _check_model(before, "the loaded firewall model")

    def kept(key):
        return [{**r, "comment": _kept_comment(r["comment"])} for r in _unique(before[key], model[key])]

    return {
        "ssh": model["ssh"] + kept("ssh"),
        "extra_rules": model["extra_rules"],  # the operator's own rules take effect at once
        "rules": model["rules"] + kept("rules"),
        "log_dropped": model["log_dropped"],
    }


def _kept_comment(comment):
    prefix = "until this run ends: "
    return comment if comment.startswith(prefix) else (prefix + comment)[:100]


def firewall_admits(model, address, port, proto="tcp"):
    """Whether ``model``'s rules accept a new connection from ``address`` to ``port``.
    Raw ``extra_rules`` are not read: they come after the SSH rule, so they cannot drop what it lets in."""
    model = _check_model(model)
    source = _network(address, "address").network_address
    port = _port_number(port, "port")
    for rule in model["ssh"] + model["rules"]:
        if rule["proto"] != proto or not any(low <= port <= high for low, high in _port_ranges(rule["ports"], "ports")):
            continue
        if rule["any"] or any(source in ipaddress.ip_network(n) for n in rule["ipv4"] + rule["ipv6"]):
            return True
    return False


def firewall_dropped(model, sessions, proto="tcp"):
    """The connections of ``sessions`` (each ``'ADDRESS PORT'``: a client address and the local
    port it connects to) that ``model`` would not let in anew, in order."""
    dropped = []
    for i, session in enumerate(_list(sessions, "sessions")):
        parts = str(session).split()
        if len(parts) != 2:
            raise ValueError(f"sessions[{i}] must be 'ADDRESS PORT', got {session!r}")
        if not firewall_admits(model, parts[0], parts[1], proto):
            dropped.append(f"{parts[0]} to port {parts[1]}")
    return dropped


# ---------------------------------------------------------------------------
# 5. Rendering
# ---------------------------------------------------------------------------

def _set(items):
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _rule_lines(rule):
    match = f"{rule['proto']} dport {_set(rule['ports'])}"
    tail = f'accept comment "{rule["comment"]}"'
    if rule["any"]:
        return [f"{match} {tail}"]
    return ([f"ip saddr {_set(rule['ipv4'])} {match} {tail}"] if rule["ipv4"] else []) + \
           ([f"ip6 saddr {_set(rule['ipv6'])} {match} {tail}"] if rule["ipv6"] else [])


def render_firewall_ruleset(model):
    """The model as an ``nft -f`` file: our table declared, deleted and defined again in one
    transaction, so loading replaces it atomically and touches no other table."""
    model = _check_model(model)
    body = [
        "chain input {",
        "    type filter hook input priority filter; policy drop;",
        "",
        "    ct state vmap { established : accept, related : accept, invalid : drop }",
        "    iif lo accept",
        "",
        "    # ICMP and ICMPv6 that IP needs (errors, path MTU, ping), neighbour discovery, MLD, DHCPv6 replies.",
        f"    icmp type {_set(ICMP_TYPES)} accept",
        f"    icmpv6 type {_set(ICMPV6_TYPES)} accept",
        f"    icmpv6 type {_set(ICMPV6_ND_TYPES)} ip6 hoplimit 255 accept",
        f"    ip6 saddr fe80::/10 icmpv6 type {_set(ICMPV6_MLD_TYPES)} accept",
        "    ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept",
    ]
    if model["ssh"]:
        body += ["", "    # SSH: firewall_ssh_allow and the controller."]
        body += [f"    {line}" for rule in model["ssh"] for line in _rule_lines(rule)]
    if model["extra_rules"]:
        body += ["", "    # firewall_extra_rules: after SSH, before what the tiers serve."]
        body += [f"    {r}" for r in model["extra_rules"]]
    if model["rules"]:
        body += ["", "    # What this host's tiers serve, and to whom; then firewall_allow."]
        body += [f"    {line}" for rule in model["rules"] for line in _rule_lines(rule)]
    if model["log_dropped"]:
        body += ["", '    limit rate 5/minute burst 10 packets log prefix "webrtc-edge drop: " level info']
    body.append("}")
    lines = [
        "#!/usr/sbin/nft -f",
        "# Managed by Ansible (webrtc-edge, role firewall), do not edit: set firewall_* variables.",
        f"# Only the table inet {TABLE} is replaced (in one transaction); the host's other tables stay.",
        MODEL_MARKER + json.dumps(model, sort_keys=True, separators=(",", ":")),
        "",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        "",
        f"table inet {TABLE} {{",
        *[f"    {line}" if line else "" for line in body],
        "}",
    ]
    return "\n".join(lines) + "\n"

