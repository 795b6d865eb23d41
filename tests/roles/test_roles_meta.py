"""Every role's meta/argument_specs.yml, defaults/main.yml and README.md agree, and its
meta/main.yml lists the platforms the preflight accepts.

The argument spec documents and validates each public variable; defaults/main.yml sets it.
They must list the same names (both directions), every other entry point may only take
variables the role defaults, and the README's variable table names each of them. The
supported platforms are kept in playbooks/vars/platforms.yml alone.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks").is_dir())
PLATFORMS_FILE = ROLES_DIR.parent / "playbooks" / "vars" / "platforms.yml"


class _Loader(yaml.SafeLoader):
    """Safe loader that accepts Ansible's tags (!vault, !unsafe) as plain scalars."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node))


def _load(path: Path) -> dict:
    if not path.is_file():
        return {}
    return yaml.load(path.read_text(), Loader=_Loader) or {}


def _defaults(role: str) -> set[str]:
    return set(_load(ROLES_DIR / role / "defaults" / "main.yml"))


def _specs(role: str) -> dict[str, dict]:
    return _load(ROLES_DIR / role / "meta" / "argument_specs.yml").get("argument_specs") or {}


def _supported_platforms() -> list[dict]:
    """playbooks/vars/platforms.yml as Galaxy's meta lists platforms: a name and its releases."""
    releases: dict[str, list[str]] = {}
    for platform in _load(PLATFORMS_FILE)["__platforms_supported"]:
        releases.setdefault(platform["distribution"], []).append(platform["release"])
    return [{"name": name, "versions": versions} for name, versions in releases.items()]


def test_roles_found():
    assert {"signaling_app", "tls", "redis", "coturn"} <= set(ROLES)


def test_supported_platforms_are_debian_12_and_13():
    assert _load(PLATFORMS_FILE)["__platforms_supported"] == [
        {"distribution": "Debian", "major_version": "12", "release": "bookworm"},
        {"distribution": "Debian", "major_version": "13", "release": "trixie"},
    ]


@pytest.mark.parametrize("role", ROLES)
def test_meta_lists_the_supported_platforms(role):
    platforms = _load(ROLES_DIR / role / "meta" / "main.yml")["galaxy_info"].get("platforms")
    assert platforms == _supported_platforms(), (
        f"roles/{role}/meta/main.yml: platforms {platforms}, playbooks/vars/platforms.yml: {_supported_platforms()}")


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_exist(role):
    specs = _specs(role)
    assert "main" in specs, f"roles/{role}/meta/argument_specs.yml has no argument_specs.main"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_specified(role):
    options = set((_specs(role).get("main") or {}).get("options") or {})
    missing = sorted(_defaults(role) - options)
    assert not missing, f"roles/{role}: in defaults/main.yml but not in argument_specs main: {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_every_specified_option_has_a_default(role):
    options = set((_specs(role).get("main") or {}).get("options") or {})
    extra = sorted(options - _defaults(role))
    assert not extra, f"roles/{role}: in argument_specs main but not in defaults/main.yml: {extra}"


@pytest.mark.parametrize("role", ROLES)
def test_entry_points_take_only_defaulted_variables(role):
    defaults = _defaults(role)
    for entry, spec in _specs(role).items():
        extra = sorted(set((spec or {}).get("options") or {}) - defaults)
        assert not extra, f"roles/{role}: entry point {entry} takes variables without a default: {extra}"
        tasks = ROLES_DIR / role / "tasks" / f"{entry}.yml"
        assert tasks.is_file(), (f"roles/{role}: argument_specs names entry point {entry} "
                                 f"but tasks/{entry}.yml is missing")


@pytest.mark.parametrize("role", ROLES)
def test_options_are_described_and_typed(role):
    for entry, spec in _specs(role).items():
        for name, option in ((spec or {}).get("options") or {}).items():
            assert option.get("description"), f"roles/{role}: {entry}.{name} has no description"
            assert option.get("type"), f"roles/{role}: {entry}.{name} has no type"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_has_a_comment_above_it(role):
    path = ROLES_DIR / role / "defaults" / "main.yml"
    lines = path.read_text().splitlines() if path.is_file() else []
    bare = [
        line.split(":")[0]
        for before, line in itertools.pairwise(["", *lines])
        if line[:1].isalpha() and ":" in line and not before.startswith("#")
    ]
    assert not bare, f"roles/{role}/defaults/main.yml: no comment line right above {bare}"


@pytest.mark.parametrize("role", ROLES)
def test_readme_documents_every_default(role):
    readme = ROLES_DIR / role / "README.md"
    assert readme.is_file(), f"roles/{role}/README.md is missing"
    rows = {line.split("|")[1].strip().strip("`") for line in readme.read_text().splitlines() if line.startswith("|")}
    missing = sorted(_defaults(role) - rows)
    assert not missing, f"roles/{role}/README.md has no variable table row for: {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_equal_the_defaults(role):
    """Literal defaults are stated once: the spec's `default` repeats defaults/main.yml exactly."""
    defaults = _load(ROLES_DIR / role / "defaults" / "main.yml")
    options = _specs(role)["main"]["options"]
    for name, value in defaults.items():
        if isinstance(value, str) and "{{" in value:
            continue  # computed defaults are described in prose
        assert options[name].get("default") == value, f"{role}: {name}"


@pytest.mark.parametrize("role", ROLES)
def test_public_variables_carry_the_role_prefix(role):
    prefix = {"proxy": "proxy_"}.get(role, f"{role}_")
    assert [name for name in _defaults(role) if not name.startswith(prefix)] == []
