"""P/D disaggregation in the scheduler: disagg-profile-handler with prefix-based and always deciders."""

from __future__ import annotations

import random

import pytest

from router_lite.config import load_config
from router_lite.scheduler import Scheduler
from router_lite.types import Endpoint, LLMRequest


def pd_config(
    decider: dict | None, handler_type: str = "disagg-profile-handler", handler_params: dict | None = None
) -> dict:
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
            {
                "name": "decode",
                "plugins": [
                    {"pluginRef": "decode-filter"},
                    {"pluginRef": "queue-scorer"},
                    {"pluginRef": "prefix-cache-scorer", "weight": 2},
                ],
            },
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
    sched = Scheduler(load_config(cfg))
    res = sched.schedule(r, pd_pool())
    headers = sched.pre_request(r, res.target, res.prefill)
    assert headers["x-data-parallel-host-port"] == res.target.key
    if res.prefill is not None:  # the injected disagg-headers-handler names the prefill pod
        assert headers["x-prefiller-host-port"] == res.prefill.key


# ---- llm-d's current parameter shape (profiles / deciders per stage) ----------------------------------


def current_shape(params: dict, decider: dict | None = PREFIX_256) -> dict:
    cfg = pd_config(None, handler_params=params)
    if decider:
        cfg["plugins"].insert(-1, decider)
    return cfg


def test_current_shape_deciders_map_acts_like_the_flat_form():
    flat = Scheduler(load_config(pd_config(PREFIX_256)), rng=random.Random(0))
    cur = Scheduler(
        load_config(current_shape({"deciders": {"prefill": "prefix-based-pd-decider"}})), rng=random.Random(0)
    )
    for n in (100, 255, 256, 1000):
        a, b = flat.schedule(req(f"f{n}", n), pd_pool()), cur.schedule(req(f"c{n}", n), pd_pool())
        assert (a.prefill is None, a.reason.split(";")[0]) == (b.prefill is None, b.reason.split(";")[0])
    assert cur.schedule(req("long", 1000), pd_pool()).reason.startswith("disaggregated: 1000 non-cached prompt tokens")


def test_current_shape_custom_profile_names():
    cfg = current_shape(
        {"profiles": {"decode": "d", "prefill": "p"}, "deciders": {"prefill": "prefix-based-pd-decider"}}
    )
    cfg["schedulingProfiles"][0]["name"], cfg["schedulingProfiles"][1]["name"] = "p", "d"
    res = Scheduler(load_config(cfg)).schedule(req("long", 1000), pd_pool())
    assert res.primary_profile == "d" and list(res.profile_results) == ["d", "p"] and res.prefill.role == "prefill"


def test_current_shape_without_a_prefill_decider_is_decode_only_as_in_llm_d():
    res = Scheduler(load_config(current_shape({"profiles": {"decode": "decode"}}, decider=None))).schedule(
        req("long", 5000), pd_pool()
    )
    assert res.prefill is None and list(res.profile_results) == ["decode"]
    assert res.reason.startswith("decode-only: no prefill decider configured") and not res.prefill_unavailable


def test_the_shipped_pd_profile_uses_the_current_shape():
    from llmdctl.profile import shipped_router_configs

    cfg = load_config(shipped_router_configs()["pd-disaggregation"])
    params = cfg.profile_handler.params
    assert params.deciders == {"prefill": "prefix-based-pd-decider"} and params.prefill_decider_plugin_name is None
    assert cfg.warnings == []


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"deciders": {"prefill": "prefix-based-pd-decider", "encoder": "x"}},
            r"parameters\.deciders: unknown stage 'encoder'; accepted: prefill, encode",
        ),
        (
            {"profiles": {"decode": "decode", "prefil": "prefill"}},
            r"parameters\.profiles: unknown stage 'prefil'; accepted: decode, prefill, encode",
        ),
        ({"deciders": {"prefill": ""}}, r"parameters\.deciders\.prefill: expected a name"),
        ({"deciders": "prefix-based-pd-decider"}, r"parameters\.deciders: expected a mapping"),
        (
            {"deciders": {"prefill": "prefix-based-pd-decider"}, "prefillDeciderPluginName": "other"},
            r"deciders\.prefill: 'prefix-based-pd-decider' conflicts with prefillDeciderPluginName 'other'",
        ),
        (
            {"profiles": {"decode": "x"}, "decodeProfile": "decode"},
            r"profiles\.decode: 'x' conflicts with decodeProfile 'decode'",
        ),
        ({"profiles": {"prefill": "decode"}}, r"profiles\.prefill: must differ from the decode profile"),
        (
            {"profiles": {"decode": "nope"}},
            r"profiles\.decode 'nope' is not among schedulingProfiles \(prefill, decode\)",
        ),
        ({"deciders": {"prefill": "ghost"}}, r"deciders\.prefill 'ghost' names no plugin"),
        ({"deciders": {"prefill": "queue-scorer"}}, r"deciders\.prefill 'queue-scorer' is a scorer, not a P/D decider"),
    ],
)
def test_current_shape_mistakes_are_one_line_errors(params, message):
    from router_lite.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(current_shape(params))


def test_llm_d_sample_pd_config_loads_unchanged():
    """llm-d-inference-scheduler's deploy/config/pd-epp-config.yaml shape, headers handler included."""
    doc = {
        "apiVersion": "llm-d.ai/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": [
            {"type": "disagg-headers-handler"},
            {
                "type": "prefix-cache-scorer",
                "parameters": {"maxPrefixBlocksToMatch": 256, "lruCapacityPerServer": 31250},
            },
            {"type": "queue-scorer"},
            {"type": "prefill-filter"},
            {"type": "decode-filter"},
            {"type": "max-score-picker"},
            {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": 16}},
            {"type": "disagg-profile-handler", "parameters": {"deciders": {"prefill": "prefix-based-pd-decider"}}},
        ],
        "schedulingProfiles": [
            {
                "name": p,
                "plugins": [
                    {"pluginRef": f"{p}-filter"},
                    {"pluginRef": "max-score-picker"},
                    {"pluginRef": "prefix-cache-scorer", "weight": 2},
                    {"pluginRef": "queue-scorer", "weight": 1},
                ],
            }
            for p in ("prefill", "decode")
        ],
    }
    cfg = load_config(doc)
    assert cfg.warnings == []
    res = Scheduler(cfg).schedule(req("r", 100), pd_pool())
    assert res.prefill is not None and res.target.role == "decode"


def test_no_prefill_endpoint_is_a_flag_on_the_result_not_only_reason_text():
    sched = Scheduler(load_config(current_shape({"deciders": {"prefill": "prefix-based-pd-decider"}})))
    wanted = sched.schedule(req("long", 1000), pd_pool(prefill=0))
    assert wanted.prefill is None and wanted.prefill_unavailable
    declined = sched.schedule(req("short", 10), pd_pool(prefill=0))
    assert declined.prefill is None and not declined.prefill_unavailable
    served = sched.schedule(req("long2", 1000, base=50_000), pd_pool())
    assert served.prefill is not None and not served.prefill_unavailable


def test_decider_counts_cached_tokens_at_the_gateways_block_size():
    """Precise scorer left at its default blockSize 16, engines at 64: a prompt wholly cached on the decode
    pod must read as 1024 cached tokens (16 blocks x 64), so it stays decode-only."""
    import asyncio

    from kvtiers.kvevents import BlockStored, KVEventBatch
    from router_lite.tokenization import HashSettings, RequestTokenizer

    cfg = pd_config(PREFIX_256)
    cfg["plugins"].insert(0, {"type": "precise-prefix-cache-scorer"})
    cfg["schedulingProfiles"][1]["plugins"] = [
        {"pluginRef": "decode-filter"},
        {"pluginRef": "precise-prefix-cache-scorer", "weight": 2},
    ]
    sched = Scheduler(load_config(cfg), rng=random.Random(0))
    eps = pd_pool()
    r = LLMRequest("cached", "m")
    asyncio.run(
        RequestTokenizer(None, lambda: HashSettings(64)).prepare(
            r, "completions", {"model": "m", "prompt": list(range(1024))}
        )
    )
    decode = eps[2]
    sched.indexes.precise.apply(
        decode.key,
        0,
        KVEventBatch(
            0.0, [BlockStored(block_hashes=r.block_hashes, parent_block_hash=None, token_ids=[], block_size=64)]
        ),
    )
    res = sched.schedule(r, eps)
    assert res.target is decode and res.prefill is None
    assert res.profile_results["decode"].prefix_block_size == 64
    assert "0 non-cached prompt tokens < nonCachedTokens 256 (1024 of 1024 cached on decode)" in res.reason
