"""The scheduling cycle end to end on hand-made pools: locality with the approximate and precise profiles,
round-robin as the baseline, health, decision records and feedback hooks."""

from __future__ import annotations

import json
import random

import pytest

from kvtiers.kvevents import BlockStored, KVEventBatch
from router_lite.config import load_config
from router_lite.prefix import PrecisePrefixIndex, PrefixIndexes
from router_lite.scheduler import Scheduler
from router_lite.types import Endpoint, EndpointMetrics, LLMRequest

APPROX = {
    "plugins": [
        {"type": "queue-scorer"},
        {"type": "kv-cache-utilization-scorer"},
        {"type": "prefix-cache-scorer", "parameters": {"blockSizeTokens": 16, "autoTune": False}},
    ],
    "schedulingProfiles": [
        {
            "name": "default",
            "plugins": [
                {"pluginRef": "queue-scorer"},
                {"pluginRef": "kv-cache-utilization-scorer"},
                {"pluginRef": "prefix-cache-scorer", "weight": 3},
            ],
        }
    ],
}
PRECISE = {
    "plugins": [
        {"type": "queue-scorer"},
        {
            "type": "precise-prefix-cache-scorer",
            "parameters": {"tokenProcessorConfig": {"blockSize": 16}, "speculativeIndexing": False},
        },
    ],
    "schedulingProfiles": [
        {
            "name": "default",
            "plugins": [{"pluginRef": "queue-scorer"}, {"pluginRef": "precise-prefix-cache-scorer", "weight": 3}],
        }
    ],
}
RR = {"plugins": [{"type": "round-robin-picker"}]}


def pool(n: int = 4) -> list[Endpoint]:
    return [Endpoint("127.0.0.1", 9000 + i) for i in range(n)]


def group_prompt(g: int, i: int) -> list[int]:
    """A 256-token shared prefix per group plus a 40-token unique suffix."""
    return [g * 1000 + t for t in range(256)] + [50_000 + g * 100 + i] * 40


def drive(
    sched: Scheduler, eps: list[Endpoint], groups: int = 4, per_group: int = 6, on_route=None
) -> dict[int, list[str]]:
    """Interleave requests of each prefix group; a routed request adds to its endpoint's queue."""
    served: dict[int, list[str]] = {g: [] for g in range(groups)}
    for i in range(per_group):
        for g in range(groups):
            r = LLMRequest(f"g{g}-{i}", "m", prompt_token_ids=group_prompt(g, i))
            res = sched.schedule(r, eps)
            sched.on_routed(r, res)
            res.target.metrics.waiting_queue_size += 1
            served[g].append(res.target.key)
            if on_route:
                on_route(r, res)
    return served


def test_approximate_profile_keeps_groups_local_and_spreads_groups():
    sched = Scheduler(load_config(APPROX), rng=random.Random(1))
    served = drive(sched, pool())
    homes = {g: set(keys) for g, keys in served.items()}
    assert all(len(h) == 1 for h in homes.values()), homes  # every request of a group on one pod
    assert len({next(iter(h)) for h in homes.values()}) == 4  # four groups on four pods


def test_round_robin_scatters_groups():
    sched = Scheduler(load_config(RR))
    served = drive(sched, pool(), groups=3, per_group=4)
    assert all(len(set(keys)) == 4 for keys in served.values())  # each group visits every pod


def test_precise_profile_follows_kv_events():
    index = PrefixIndexes(precise=PrecisePrefixIndex())
    sched = Scheduler(load_config(PRECISE), index, rng=random.Random(2))
    seqs: dict[str, int] = {}
    params = sched.config.precise_prefix_settings()

    def engine_stores(request, result):  # the chosen pod's engine publishes what it cached
        key = result.target.key
        seqs[key] = seqs.get(key, -1) + 1
        hashes = params.block_hashes(request.prompt_token_ids)
        index.precise.apply(
            key,
            seqs[key],
            KVEventBatch(0.0, [BlockStored(block_hashes=hashes, parent_block_hash=None, token_ids=[], block_size=16)]),
        )

    served = drive(sched, pool(), on_route=engine_stores)
    homes = {g: set(keys) for g, keys in served.items()}
    assert all(len(h) == 1 for h in homes.values()), homes
    assert len({next(iter(h)) for h in homes.values()}) == 4
    # The decision record carries the match: 16 shared blocks (256 tokens) on the home pod.
    r = LLMRequest("probe", "m", prompt_token_ids=group_prompt(0, 99))
    res = sched.schedule(r, pool())
    home = next(iter(homes[0]))
    assert res.profile_results["default"].prefix_blocks[home] == 16


def test_precise_speculation_gives_locality_before_events_arrive():
    cfg = json.loads(json.dumps(PRECISE))
    cfg["plugins"][1]["parameters"]["speculativeIndexing"] = True
    sched = Scheduler(load_config(cfg), rng=random.Random(3))
    served = drive(sched, pool(), per_group=3)
    assert all(len(set(keys)) == 1 for keys in served.values())


def test_unhealthy_endpoints_leave_the_candidate_set():
    sched = Scheduler(load_config(APPROX))
    eps = pool(3)
    eps[0].healthy = eps[1].healthy = False
    for i in range(5):
        assert sched.schedule(LLMRequest(f"r{i}", "m"), eps).target is eps[2]
    eps[2].healthy = False
    res = sched.schedule(LLMRequest("x", "m"), eps)
    assert res.target is None and not res.ok and res.reason == "no healthy endpoints"
    assert sched.schedule(LLMRequest("y", "m"), []).reason == "no endpoints"


def test_filters_leaving_nothing_is_a_clear_reason():
    sched = Scheduler(load_config({"plugins": [{"type": "prefill-filter"}, {"type": "queue-scorer"}]}))
    res = sched.schedule(LLMRequest("r", "m"), pool(2))
    assert res.target is None and res.reason == "no candidate endpoints after filters"


def test_decision_record_shape_and_weighted_scores():
    sched = Scheduler(load_config(APPROX), rng=random.Random(0))
    eps = pool(3)
    eps[0].metrics = EndpointMetrics(waiting_queue_size=4, kv_cache_usage_percent=0.5)
    eps[1].metrics = EndpointMetrics(waiting_queue_size=0, kv_cache_usage_percent=0.1)
    eps[2].metrics = EndpointMetrics(waiting_queue_size=2, kv_cache_usage_percent=0.9)
    r = LLMRequest("req-1", "m", prompt_token_ids=list(range(64)))
    res = sched.schedule(r, eps)
    assert res.target is eps[1]
    d = json.loads(json.dumps(res.to_decision_dict()))
    assert d["request_id"] == "req-1" and d["model"] == "m" and d["prompt_tokens"] == 64
    assert d["profiles_run"] == ["default"] and d["chosen"] == {"decode": eps[1].key, "prefill": None}
    assert d["scheduling_ms"] > 0 and "max score" in d["reason"]
    by_ep = {c["endpoint"]: c for c in d["candidates"]}
    c0 = by_ep[eps[0].key]
    assert c0["scores"]["queue-scorer"] == {"raw": 0.0, "weighted": 0.0}
    assert c0["scores"]["kv-cache-utilization-scorer"] == {"raw": 0.5, "weighted": 0.5}
    c2 = by_ep[eps[2].key]
    assert c2["scores"]["queue-scorer"] == {"raw": 0.5, "weighted": 0.5}
    assert c2["total"] == pytest.approx(0.5 + 0.1)
    assert all(c["role"] == "both" and c["prefix_match_blocks"] == 0 for c in d["candidates"])
    assert [c["endpoint"] for c in d["candidates"]][0] == eps[1].key  # best first
    assert res.ranked() == [eps[1], eps[2], eps[0]]  # retry order


def test_weights_scale_and_clamp():
    cfg = {
        "plugins": [{"type": "kv-cache-utilization-scorer"}, {"type": "queue-scorer"}],
        "schedulingProfiles": [
            {
                "name": "p",
                "plugins": [
                    {"pluginRef": "kv-cache-utilization-scorer", "weight": 10},
                    {"pluginRef": "queue-scorer", "weight": 0},
                ],
            }
        ],
    }
    sched = Scheduler(load_config(cfg))
    eps = pool(2)
    eps[0].metrics.kv_cache_usage_percent = -0.5  # a bogus metric: raw 1.5 is clamped to 1
    eps[1].metrics.kv_cache_usage_percent = 0.2
    res = sched.schedule(LLMRequest("r", "m"), eps)
    pr = res.profile_results["p"]
    assert pr.totals == {eps[0].key: 10.0, eps[1].key: pytest.approx(8.0)}
    assert pr.raw_scores["kv-cache-utilization-scorer"][eps[0].key] == 1.5


def test_on_routed_with_retry_target_and_on_finished():
    cfg = {
        "plugins": [
            {"type": "active-request-scorer"},
            {"type": "prefix-cache-scorer", "parameters": {"blockSizeTokens": 16}},
        ]
    }
    sched = Scheduler(load_config(cfg), rng=random.Random(0))
    eps = pool(2)
    r = LLMRequest("r", "m", prompt_token_ids=list(range(64)))
    res = sched.schedule(r, eps)
    other = eps[1] if res.target is eps[0] else eps[0]
    sched.on_routed(r, res, target=other)  # the first pick failed; the gateway retried on the other
    active = sched.plugins["active-request-scorer"]
    assert active.counts == {other.key: 1}
    r2 = LLMRequest("r2", "m", prompt_token_ids=list(range(64)))
    res2 = sched.schedule(r2, eps)
    assert res2.profile_results["default"].prefix_blocks == {other.key: 4}  # credit went to the retry target
    sched.on_finished(r, other)
    assert active.counts == {}


def test_reschedule_of_same_request_sees_fresh_index():
    sched = Scheduler(load_config(APPROX), rng=random.Random(0))
    eps = pool(2)
    r = LLMRequest("r", "m", prompt_token_ids=list(range(64)))
    first = sched.schedule(r, eps)
    assert first.profile_results["default"].prefix_blocks == {}
    sched.on_routed(r, first)
    again = sched.schedule(r, eps)
    assert again.profile_results["default"].prefix_blocks == {first.target.key: 4}


def test_index_settings_follow_the_active_config_and_reset_on_a_swap():
    """Issue 15: the precise scorer's tier weights, sharing and speculative TTL belong to its config; a config
    swap to one without them must not inherit them (the shared index outlives schedulers)."""
    from router_lite.config import load_config
    from router_lite.prefix import PrefixIndexes
    from router_lite.scheduler import Scheduler

    tiered = load_config(
        {
            "plugins": [
                {
                    "type": "precise-prefix-cache-scorer",
                    "parameters": {
                        "indexerConfig": {
                            "kvCacheBackendConfigs": [{"name": "gpu", "weight": 1.0}, {"name": "cpu", "weight": 0.25}]
                        },
                        "speculativeIndexing": True,
                        "speculativeTtl": "7s",
                        "sharedMedia": ["disk", "nfs"],
                    },
                }
            ]
        }
    )
    plain = load_config({"plugins": [{"type": "queue-scorer"}]})
    indexes = PrefixIndexes()
    defaults = (
        dict(indexes.precise.tier_weights),
        set(indexes.precise.shared_media),
        indexes.precise.speculative_ttl_s,
    )
    first = Scheduler(tiered, indexes)
    assert indexes.precise.tier_weights["CPU"] == 0.25 and indexes.precise.speculative_ttl_s == 7.0
    assert {"DISK", "NFS"} <= indexes.precise.shared_media
    assert first.needs.block_hashes and first.needs.tokens
    second = Scheduler(plain, indexes)
    assert (indexes.precise.tier_weights, indexes.precise.shared_media, indexes.precise.speculative_ttl_s) == defaults
    assert not second.needs.block_hashes and not second.needs.tokens and second.needs.kv_events is None
