"""Each filter the collection offers is one the roles use, documented in its own file
(plugins/filter/<name>.yml) with the arguments the function really takes."""

import inspect
import re
from pathlib import Path

import pytest
import yaml

from ansible_collections.webrtc_edge.edge.plugins.filter import firewall_model, proxy_model

REPO = Path(__file__).resolve().parents[3]
FILTERS = {**proxy_model.FilterModule().filters(), **firewall_model.FilterModule().filters()}


def _doc(name):
    return yaml.safe_load((REPO / "plugins" / "filter" / f"{name}.yml").read_text())


def test_the_filters_are_the_ones_the_roles_use():
    used = set()
    for path in (REPO / "roles").rglob("*"):
        if path.suffix in (".yml", ".j2"):
            used |= set(re.findall(r"\bwebrtc_edge\.edge\.([a-z_]+)\b", path.read_text()))
    assert sorted(FILTERS) == sorted(used)


def test_no_documentation_without_a_filter():
    documented = {p.stem for p in (REPO / "plugins" / "filter").glob("*.yml")}
    assert documented == set(FILTERS)


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_each_filter_documents_its_own_arguments(name):
    doc = _doc(name)
    assert doc["DOCUMENTATION"]["name"] == name
    assert doc["DOCUMENTATION"]["short_description"]
    assert f"webrtc_edge.edge.{name}" in doc["EXAMPLES"]
    assert "_value" in doc["RETURN"]
    params = list(inspect.signature(FILTERS[name].__wrapped__).parameters.values())
    options = doc["DOCUMENTATION"]["options"]
    assert options["_input"]["required"] is True
    assert sorted(options) == sorted(["_input"] + [p.name for p in params[1:]])
    for param in params[1:]:
        if param.default is inspect.Parameter.empty:
            assert options[param.name].get("required") is True, param.name
        elif param.default is not None:
            assert str(options[param.name]["default"]) == str(param.default), param.name
    positional = doc["DOCUMENTATION"].get("positional")
    if positional:
        assert [p.strip() for p in positional.split(",")] == [p.name for p in params[1:len(positional.split(",")) + 1]]
