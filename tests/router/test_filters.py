"""Filters: role filters on llm-d.ai/role, by-label, label-selector-filter."""

from __future__ import annotations

import pytest

from router_lite.config import ConfigError
from router_lite.plugins import PluginContext
from router_lite.prefix import PrefixIndexes
from router_lite.registry import lookup, parse_dataclass
from router_lite.types import Endpoint, LLMRequest

R = LLMRequest("r", "m")


def make(type_name: str, params: dict | None = None):
    pt = lookup(type_name)
    return pt.cls.create(
        type_name, parse_dataclass(pt.cls.Params, params or {}, type_name), PluginContext(indexes=PrefixIndexes())
    )


P = Endpoint("h", 1, labels={"llm-d.ai/role": "prefill", "zone": "a"})
D = Endpoint("h", 2, labels={"llm-d.ai/role": "decode", "zone": "b"})
B = Endpoint("h", 3, labels={"llm-d.ai/role": "both"})
U = Endpoint("h", 4)  # no role label: both
ALL = [P, D, B, U]


def test_roles_from_labels():
    assert [e.role for e in ALL] == ["prefill", "decode", "both", "both"]
    assert Endpoint("h", 5, labels={"llm-d.ai/role": "weird"}).role == "both"


def test_decode_and_prefill_filters():
    assert make("decode-filter").filter(R, ALL) == [D, B, U]
    assert make("prefill-filter").filter(R, ALL) == [P]


def test_by_label():
    f = make("by-label", {"label": "zone", "validValues": ["a"]})
    assert f.filter(R, ALL) == [P]
    g = make("by-label", {"label": "zone", "validValues": ["b"], "allowsNoLabel": True})
    assert g.filter(R, ALL) == [D, B, U]
    with pytest.raises(ConfigError, match="label: required"):
        make("by-label", {})


def test_label_selector_filter():
    f = make("label-selector-filter", {"matchLabels": {"llm-d.ai/role": "decode"}})
    assert f.filter(R, ALL) == [D]
    g = make("label-selector-filter", {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]})
    assert g.filter(R, ALL) == [P, D]
    h = make("by-label-selector", {"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]})
    assert h.filter(R, ALL) == [B, U]
    k = make("label-selector-filter", {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]})
    assert k.filter(R, ALL) == [D, B, U]
    with pytest.raises(ConfigError, match="operator"):
        make("label-selector-filter", {"matchExpressions": [{"key": "zone", "operator": "Near"}]})
    with pytest.raises(ConfigError, match="values: operator In needs"):
        make("label-selector-filter", {"matchExpressions": [{"key": "zone", "operator": "In"}]})


def test_endpoint_parse():
    e = Endpoint.parse("127.0.0.1:8001@prefill")
    assert e.key == "127.0.0.1:8001" and e.role == "prefill"
    for bad in ("nohost", "h:0", "h:port", "h:1@chef"):
        with pytest.raises(ValueError, match="endpoint"):
            Endpoint.parse(bad)
