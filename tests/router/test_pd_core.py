"""P/D disaggregation in the scheduler: disagg-profile-handler with prefix-based and always deciders."""

from __future__ import annotations

import random

import pytest

from router_lite.config import load_config
from router_lite.scheduler import Scheduler
from router_lite.types import Endpoint, LLMRequest


def pd_config(decider: dict | None, handler_type: str = "disagg-profile-handler", handler_params: dict | None = None) -> dict:
    plugins = [
        {"type": "prefill-filter"},
        {"type": "decode-filter"},
        {"type": "queue-scorer"},
        {"type": "prefix-cache-scorer", "parameters": {"blockSizeTokens": 16, "autoTune": False}},
    ]
    params = dict(handler_params or {})
    if decider:
        plugins.append(decider)
        params.setdefault("prefillDeciderPluginName", decider.get("name", decider["type"]))
    plugins.append({"type": handler_type, "parameters": params})
    return {
        "apiVersion": "llm-d.ai/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": plugins,
        "schedulingProfiles": [
            {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, {"pluginRef": "queue-scorer"}]},
            {"name": "decode", "plugins": [
                {"pluginRef": "decode-filter"}, {"pluginRef": "queue-scorer"},
                {"pluginRef": "prefix-cache-scorer", "weight": 2}]},
        ],
    }


PREFIX_256 = {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": 256}}


def pd_pool(prefill: int = 2, decode: int = 2) -> list[Endpoint]:
    eps = [Endpoint("10.0.0.1", 8000 + i, labels={"llm-d.ai/role": "prefill"}) for i in range(prefill)]
    eps += [Endpoint("10.0.0.2", 8000 + i, labels={"llm-d.ai/role": "decode"}) for i in range(decode)]
    return eps


def req(rid: str, n_tokens: int, base: int = 0) -> LLMRequest:
    return LLMRequest(rid, "m", prompt_token_ids=[base + t for t in range(n_tokens)])


def test_long_uncached_prompt_is_disaggregated():
    sched = Scheduler(load_config(pd_config(PREFIX_256)), rng=random.Random(0))
    res = sched.schedule(req("long", 1000), pd_pool())
    assert res.target.role == "decode" and res.prefill is not None and res.prefill.role == "prefill"
    assert res.primary_profile == "decode"
    assert list(res.profile_results) == ["decode", "prefill"]
    assert res.reason.startswith("disaggregated: 1000 non-cached prompt tokens >= nonCachedTokens 256")
    d = res.to_decision_dict()
    assert d["chosen"] == {"decode": res.target.key, "prefill": res.prefill.key}
    assert d["profiles_run"] == ["decode", "prefill"]
    roles = {(c["profile"], c["role"]) for c in d["candidates"]}
    assert roles == {("decode", "decode"), ("prefill", "prefill")}


def test_short_prompt_stays_decode_only():
    sched = Scheduler(load_config(pd_config(PREFIX_256)))
    res = sched.schedule(req("short", 100), pd_pool())
    assert res.prefill is None and res.target.role == "decode"
    assert list(res.profile_results) == ["decode"]
    assert res.reason.startswith("decode-only: 100 non-cached prompt tokens < nonCachedTokens 256")


@pytest.mark.parametrize("n, disagg", [(255, False), (256, True), (257, True)])
def test_threshold_boundary(n, disagg):
    sched = Scheduler(load_config(pd_config(PREFIX_256)))
    assert (sched.schedule(req("r", n), pd_pool()).prefill is not None) is disagg


def test_cached_prefix_on_decode_pod_avoids_disaggregation():
    sched = Scheduler(load_config(pd_config(PREFIX_256)), rng=random.Random(0))
    eps = pd_pool()
    first = req("first", 1000)
    res1 = sched.schedule(first, eps)
    assert res1.prefill is not None
    sched.on_routed(first, res1)  # decode pod now holds the prompt's blocks (transferred KV)
    follow = LLMRequest("follow", "m", prompt_token_ids=first.prompt_token_ids + list(range(5000, 5200)))
    res2 = sched.schedule(follow, eps)
    assert res2.target is res1.target  # prefix locality on the decode pool
    assert res2.prefill is None
    assert "non-cached prompt tokens < nonCachedTokens 256 (992 of 1200 cached on decode)" in res2.reason
    # A different long prompt still goes disaggregated.
    assert sched.schedule(req("other", 1000, base=90_000), eps).prefill is not None


def test_always_disagg_decider():
    sched = Scheduler(load_config(pd_config({"type": "always-disagg-pd-decider"})))
    res = sched.schedule(req("tiny", 3), pd_pool())
    assert res.prefill is not None and "always-disagg-pd-decider" in res.reason


def test_zero_non_cached_tokens_always_disaggregates():
    cfg = pd_config({"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": 0}})
    res = Scheduler(load_config(cfg)).schedule(req("tiny", 3), pd_pool())
    assert res.prefill is not None


def test_no_prefill_pods_degrades_to_decode_only_and_says_so():
    sched = Scheduler(load_config(pd_config(PREFIX_256)))
    res = sched.schedule(req("long", 1000), pd_pool(prefill=0))
    assert res.target.role == "decode" and res.prefill is None
    assert "decode-only" in res.reason and "no prefill endpoint available" in res.reason
    dead = pd_pool()
    for e in dead[:2]:
        e.healthy = False
    assert sched.schedule(req("long2", 1000), dead).prefill is None


def test_no_decode_pods_is_no_target():
    sched = Scheduler(load_config(pd_config(PREFIX_256)))
    res = sched.schedule(req("long", 1000), pd_pool(decode=0))
    assert res.target is None and res.reason == "no decode endpoints after filters"


def test_deprecated_pd_profile_handler_threshold_acts_as_prefix_decider():
    cfg = pd_config(None, handler_type="pd-profile-handler", handler_params={"threshold": 500})
    loaded = load_config(cfg)
    assert any("deprecated" in w for w in loaded.warnings)
    sched = Scheduler(loaded)
    assert sched.schedule(req("a", 499), pd_pool()).prefill is None
    assert sched.schedule(req("b", 500), pd_pool()).prefill is not None


def test_handler_without_decider_defaults_to_always():
    sched = Scheduler(load_config(pd_config(None)))
    assert sched.schedule(req("a", 10), pd_pool()).prefill is not None


def test_decode_only_profile_set_never_runs_prefill():
    cfg = pd_config(PREFIX_256)
    cfg["schedulingProfiles"] = [p for p in cfg["schedulingProfiles"] if p["name"] == "decode"]
    res = Scheduler(load_config(cfg)).schedule(req("long", 2000), pd_pool())
    assert res.prefill is None and list(res.profile_results) == ["decode"]


def test_on_routed_credits_prefill_and_decode_pods():
    cfg = pd_config(PREFIX_256)
    cfg["schedulingProfiles"][0]["plugins"].append({"pluginRef": "prefix-cache-scorer"})
    sched = Scheduler(load_config(cfg), rng=random.Random(0))
    eps = pd_pool()
    r = req("long", 1000)
    res = sched.schedule(r, eps)
    sched.on_routed(r, res)
    index = sched.indexes.approximate["prefix-cache-scorer"]
    assert index.blocks_of(res.target.key) == 62 and index.blocks_of(res.prefill.key) == 62
    assert sum(index.blocks_of(e.key) for e in eps) == 124


def test_primary_port_sets_data_parallel_header():
    cfg = pd_config(PREFIX_256, handler_params={"primaryPort": 8000})
    r = req("r", 10)
    res = Scheduler(load_config(cfg)).schedule(r, pd_pool())
    assert r.headers["x-data-parallel-host-port"] == res.target.key
