"""Typed eviction: pinning with a budget, eager eviction, and the LRU / Belady yardsticks."""

from __future__ import annotations

import random

import pytest

from kvtiers.policy import (
    EvictionQueue,
    PolicyConfig,
    TraceRequest,
    TypePolicy,
    belady_misses,
    flatten,
    lru_misses,
    semantic_defaults,
    simulate_prefix_cache,
)
from kvtiers.types import BlockType

T = BlockType


def test_from_config_parses_and_rejects_with_key_path():
    cfg = PolicyConfig.from_config(
        {"system_prompt": {"pin": True, "pin_budget": 0.5}, "reasoning_branch": {"evict_on_finish": True}}
    )
    assert cfg.of(T.SYSTEM_PROMPT) == TypePolicy(pin=True, pin_budget=0.5)
    assert cfg.of(T.CONVERSATION) == TypePolicy()
    assert not cfg.is_lru and PolicyConfig().is_lru
    with pytest.raises(ValueError, match="kv_tiers.policies: block type: expected one of"):
        PolicyConfig.from_config({"sys": {}})
    with pytest.raises(ValueError, match=r"kv_tiers.policies.system_prompt.pinn: unknown key"):
        PolicyConfig.from_config({"system_prompt": {"pinn": True}})
    with pytest.raises(ValueError, match=r"system_prompt.pin: expected true or false"):
        PolicyConfig.from_config({"system_prompt": {"pin": "yes"}})
    with pytest.raises(ValueError, match=r"system_prompt.pin_budget: expected a fraction"):
        PolicyConfig.from_config({"system_prompt": {"pin_budget": 2}})


def test_lru_order_without_policy():
    q = EvictionQueue(3)
    for h in "abc":
        q.add(h)
    q.touch("a")
    assert q.pop_victim() == "b"
    assert q.victim(protect={"c"}) == "a"


def test_pinned_blocks_go_last_and_respect_budget():
    q = EvictionQueue(10, PolicyConfig({T.SYSTEM_PROMPT: TypePolicy(pin=True, pin_budget=0.2)}))
    q.add("s1", T.SYSTEM_PROMPT)
    q.add("s2", T.SYSTEM_PROMPT)
    q.add("c1", T.CONVERSATION)
    assert q.pop_victim() == "c1"  # younger, but unpinned
    q.add("s3", T.SYSTEM_PROMPT)  # budget 2 blocks: s1 falls back to LRU
    q.add("c2", T.CONVERSATION)
    assert [q.pop_victim() for _ in range(4)] == ["s1", "c2", "s2", "s3"]
    assert q.pop_victim() is None


def test_finished_throwaway_blocks_go_first():
    q = EvictionQueue(10, semantic_defaults())
    q.add("c", T.CONVERSATION)
    q.add("r1", T.REASONING_BRANCH)
    q.add("r2", T.REASONING_BRANCH)
    assert q.victim() == "c"  # not finished yet: plain LRU
    q.finish(["r2", "c"])
    assert [q.pop_victim() for _ in range(3)] == ["r2", "c", "r1"]


def _flood_trace(n_flood: int = 200) -> list[TraceRequest]:
    """A 4-block system prompt every 20 requests, one-off 6-block requests in between."""
    sysp = tuple(f"sys{i}" for i in range(4))
    trace = []
    for i in range(n_flood):
        if i % 20 == 0:
            trace.append(TraceRequest(sysp + (f"q{i}",), (T.SYSTEM_PROMPT,) * 4 + (T.CONVERSATION,)))
        else:
            trace.append(TraceRequest(tuple(f"o{i}_{j}" for j in range(6)), (T.OTHER,) * 6))
    return trace


def test_pinned_system_prompt_survives_a_flood_that_lru_loses():
    trace = _flood_trace()
    capacity = 32
    lru = simulate_prefix_cache(trace, capacity)
    typed = simulate_prefix_cache(trace, capacity, semantic_defaults())
    n_sys_requests = sum(1 for r in trace if r.blocks[0] == "sys0")
    # LRU recomputes the system prompt every time; the pinned policy only the first time.
    assert lru - typed == 4 * (n_sys_requests - 1)
    bound = belady_misses(flatten(trace), capacity)
    assert bound <= typed <= lru


def test_prefix_semantics_recompute_after_first_miss():
    trace = [TraceRequest(("a", "b", "c")), TraceRequest(("x",)), TraceRequest(("a", "b", "c"))]
    # capacity 3: blocks are freed tail first, so "x" evicts "c" and request 3 recomputes only "c"
    assert simulate_prefix_cache(trace, 3) == 3 + 1 + 1
    # a head miss costs the whole request even when the tail is cached
    head_miss = [TraceRequest(("a", "b")), TraceRequest(("a", "b", "c", "d")), TraceRequest(("z", "b", "c", "d"))]
    assert simulate_prefix_cache(head_miss, 8) == 2 + 2 + 4
    assert lru_misses(flatten(trace), 3) == 7  # flat LRU cascades too (each re-fetch evicts the next block)
    assert belady_misses(flatten(trace), 3) == 5  # MIN evicts "c" for "x": only "x" and "c" miss again


def _brute_force_opt(seq, cap):
    """Fewest misses over every eviction choice (exponential; tiny inputs only)."""
    import functools

    @functools.lru_cache(None)
    def go(i, cache):
        if i == len(seq):
            return 0
        h = seq[i]
        if h in cache:
            return go(i + 1, cache)
        if len(cache) < cap:
            return 1 + go(i + 1, cache | {h})
        return 1 + min(go(i + 1, (cache - {v}) | {h}) for v in cache)

    return go(0, frozenset())


@pytest.mark.parametrize("seed", range(6))
def test_belady_is_optimal_on_small_random_sequences(seed):
    rng = random.Random(seed)
    seq = [rng.randrange(6) for _ in range(14)]
    cap = rng.randrange(1, 4)
    assert belady_misses(seq, cap) == _brute_force_opt(seq, cap)
    assert belady_misses(seq, cap) <= lru_misses(seq, cap)
    assert belady_misses(seq, 0) == len(seq)
