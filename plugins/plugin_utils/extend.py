# Copyright: webrtc-edge contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Override points of the site files: extra directives, extra locations and directives for
the built-in locations, validated alike for nginx and Apache.

Each renderer takes an ``extensions`` mapping keyed by the role variables
(``nginx_extra_http_directives``...); every error names the variable and the entry.
"""

from __future__ import annotations

import re

from ansible_collections.webrtc_edge.edge.plugins.plugin_utils.validation import _list, _mapping, _string, _uri_path

#: The keys each renderer accepts: ``lines`` are lists of directive lines, ``locations``
#: lists of {path, match, directives}, ``per_location`` mappings path -> directive lines.
NGINX_EXTENSIONS = {
    "nginx_extra_http_directives": "lines",
    "nginx_extra_server_directives": "lines",
    "nginx_extra_locations": "locations",
    "nginx_location_directives": "per_location",
}
APACHE_EXTENSIONS = {
    "apache_extra_server_directives": "lines",
    "apache_extra_vhost_directives": "lines",
    "apache_extra_locations": "locations",
    "apache_location_directives": "per_location",
}
_SECTION_RE = re.compile(r"^<(/?)([A-Za-z][A-Za-z0-9_]*)(?:\s[^>]*)?>$")


def _each_line(value, what):
    """``(i, line)`` of a list of one-line strings (no newlines or other control characters)."""
    return [(i, _string(raw, f"{what}[{i}]")) for i, raw in enumerate(_list(value, what))]


def _nginx_lines(value, what):
    """Lines of nginx directives: each ends with ``;`` or closes a block; braces balance."""
    lines, depth = [], 0
    for i, line in _each_line(value, what):
        if not line.endswith((";", "{", "}")):
            raise ValueError(f"{what}[{i}] must end with ';' (or open or close a block): {line!r}")
        depth += line.count("{") - line.count("}")
        if depth < 0:
            raise ValueError(f"{what}[{i}] closes a block that is not open: {line!r}")
        lines.append(line)
    if depth:
        raise ValueError(f"{what} leaves {depth} block(s) open: braces must balance")
    return lines


def _apache_lines(value, what):
    """Lines of Apache directives: every ``<Section>`` is closed by its own ``</Section>``."""
    lines, open_sections = [], []
    for i, line in _each_line(value, what):
        if line.startswith("<"):
            match = _SECTION_RE.match(line)
            if not match:
                raise ValueError(f"{what}[{i}] is not a section line like <If ...> or </If>: {line!r}")
            closing, name = match.group(1), match.group(2).lower()
            if not closing:
                open_sections.append(name)
            elif not open_sections or open_sections.pop() != name:
                raise ValueError(f"{what}[{i}] closes a section that is not open: {line!r}")
        lines.append(line)
    if open_sections:
        raise ValueError(f"{what} leaves <{open_sections[-1]}> open: sections must balance")
    return lines


def _locations(value, what, lines, taken):
    out = []
    for i, raw in enumerate(_list(value, what)):
        entry = _mapping(raw, f"{what}[{i}]")
        unknown = sorted(set(entry) - {"path", "match", "directives"})
        if unknown:
            raise ValueError(f"{what}[{i}] has unknown keys: {', '.join(unknown)}")
        path = _uri_path(entry.get("path", ""), f"{what}[{i}].path")
        match = entry.get("match", "prefix")
        if match not in ("prefix", "exact"):
            raise ValueError(f"{what}[{i}].match must be prefix or exact, got {match!r}")
        if path in taken:
            raise ValueError(f"{what}[{i}].path {path} collides with a location the site already has "
                             f"(add directives to it with the location directives instead)")
        taken.add(path)
        out.append({"path": path, "match": match,
                    "directives": lines(entry.get("directives", []), f"{what}[{i}].directives")})
    return out


def _per_location(value, what, lines, known):
    out = {}
    for path, directives in _mapping(value or {}, what).items():
        if path not in known:
            raise ValueError(f"{what} names {path!r}, not a location of the site; known: {', '.join(known)}")
        out[path] = lines(directives, f"{what}[{path!r}]")
    return out


def check_extensions(extensions, table, dialect, known, reserved=()):
    """Validate ``extensions`` for one renderer; every key of ``table`` is in the result.

    ``known`` are the paths of the built-in locations (the only ones location directives may
    name); extra locations may take none of them, nor a ``reserved`` path.
    """
    given = _mapping(extensions or {}, "extensions")
    unknown = sorted(set(given) - set(table))
    if unknown:
        raise ValueError(f"unknown extension points: {', '.join(unknown)} (known: {', '.join(table)})")
    lines = _nginx_lines if dialect == "nginx" else _apache_lines
    taken = set(known) | set(reserved)
    out = {}
    for key, kind in table.items():
        value = given.get(key)
        if kind == "lines":
            out[key] = lines(value or [], key)
        elif kind == "locations":
            out[key] = _locations(value or [], key, lines, taken)
        else:
            out[key] = _per_location(value, key, lines, list(known))
    return out
