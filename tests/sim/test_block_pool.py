"""Block pool and cache manager behaviour: LRU eviction, ref counts, hashless-first reuse, salt isolation,
reset, and the engine-level consequences (decode blocks cached, preemption under pressure)."""

from __future__ import annotations

import pytest

from kvtiers import AllBlocksCleared, BlockHasher, BlockRemoved, BlockStored, to_event_hash
from sim_gpu.engine import EngineConfig, EngineRequest, SimEngine
from sim_gpu.engine.block_pool import BlockPool
from sim_gpu.latency import LatencyModel

BS = 4
HASHER = BlockHasher(BS)


def _cached(pool: BlockPool, tokens: list[int]) -> tuple[list, list[bytes]]:
    """Allocate and cache full blocks for `tokens`, as the manager does at prefill."""
    n = len(tokens) // BS
    blocks = pool.get_new_blocks(n)
    hashes = HASHER.hash_blocks(tokens)
    pool.cache_full_blocks(blocks, hashes, 0, n, tokens)
    return blocks, hashes


def test_null_block_is_never_handed_out_and_usage_counts_held_blocks():
    pool = BlockPool(5, BS)
    assert pool.num_free_blocks == 4
    blocks = pool.get_new_blocks(2)
    assert 0 not in [b.block_id for b in blocks]
    assert pool.usage() == pytest.approx(0.5)
    pool.free_blocks(blocks)
    assert pool.usage() == 0.0
    with pytest.raises(ValueError):
        pool.get_new_blocks(5)


def test_freed_blocks_stay_cached_and_are_evicted_lru_tail_first():
    pool = BlockPool(8, BS)
    a, ha = _cached(pool, list(range(12)))  # 3 blocks
    b, hb = _cached(pool, list(range(100, 112)))  # 3 blocks
    pool.take_events()
    pool.free_blocks(reversed(a))
    pool.free_blocks(reversed(b))
    assert pool.get_cached_block(ha[0]) is a[0]  # still findable after free
    # 1 never-used block first, then a's tail..head, then b's.
    got = pool.get_new_blocks(5)
    assert got[1:] == [a[2], a[1], a[0], b[2]]
    removed = [e.block_hashes[0] for e in pool.take_events() if isinstance(e, BlockRemoved)]
    assert removed == [to_event_hash(h) for h in (ha[2], ha[1], ha[0], hb[2])]
    assert pool.get_cached_block(ha[0]) is None
    assert pool.get_cached_block(hb[1]) is b[1]


def test_hashless_freed_blocks_are_reused_before_cached_ones():
    pool = BlockPool(6, BS)
    cached, _ = _cached(pool, list(range(8)))
    partial = pool.get_new_blocks(1)  # e.g. a request's last, partly filled block
    pool.free_blocks(reversed(cached + partial))
    order = pool.free_queue_ids()
    assert order[0] == partial[0].block_id
    assert order[-2:] == [cached[1].block_id, cached[0].block_id]


def test_one_block_at_a_time_takes_the_free_queue_in_the_same_order_and_evicts_alike():
    """get_new_block (a decode's next block) is get_new_blocks(1): hashless front, never-used, LRU back."""
    pools = [BlockPool(8, BS), BlockPool(8, BS)]
    for pool in pools:
        a, _ = _cached(pool, list(range(12)))
        partial = pool.get_new_blocks(1)
        pool.free_blocks(reversed(a + partial))
        pool.take_events()
    one = [pools[0].get_new_block().block_id for _ in range(7)]
    many = [pools[1].get_new_blocks(1)[0].block_id for _ in range(7)]
    assert one == many
    assert pools[0].take_events() == pools[1].take_events() != []  # the same BlockRemoved, in order
    assert pools[0].num_free_blocks == 0
    with pytest.raises(ValueError):
        pools[0].get_new_block()


def test_touch_and_ref_counts_share_blocks():
    pool = BlockPool(6, BS)
    a, ha = _cached(pool, list(range(8)))
    pool.touch(a)  # a second request hits the same prefix
    assert [blk.ref_cnt for blk in a] == [2, 2]
    pool.free_blocks(reversed(a))
    assert pool.num_free_blocks == 3  # still held by the second request
    pool.free_blocks(reversed(a))
    assert pool.num_free_blocks == 5
    pool.touch([a[0]])  # a hit on a cached free block pulls it out of the free queue
    assert a[0].block_id not in pool.free_queue_ids() and a[0].ref_cnt == 1


def test_reset_refused_while_held_then_clears():
    pool = BlockPool(6, BS)
    a, ha = _cached(pool, list(range(8)))
    pool.take_events()
    assert pool.reset_prefix_cache() is False
    pool.free_blocks(a)
    assert pool.reset_prefix_cache() is True
    assert pool.get_cached_block(ha[0]) is None
    assert [type(e) for e in pool.take_events()] == [AllBlocksCleared]
    # After the reset, reusing those blocks evicts nothing.
    pool.get_new_blocks(5)
    assert pool.take_events() == []


def _engine(**kw) -> SimEngine:
    kw.setdefault("latency", LatencyModel.from_names("H100", "Llama-3.1-8B"))
    kw.setdefault("block_size", BS)
    kw.setdefault("num_gpu_blocks", 64)
    return SimEngine(EngineConfig(**kw))


def _drain(engine: SimEngine, limit: int = 5000) -> tuple[dict[str, list[int]], list]:
    tokens: dict[str, list[int]] = {}
    events: list = []
    for _ in range(limit):
        if not engine.has_unfinished():
            break
        res = engine.step(0.0)
        events += res.kv_events
        for out in res.outputs:
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
    assert not engine.has_unfinished()
    return tokens, events


def test_cache_salt_isolates_prefixes():
    eng = _engine()
    prompt = list(range(1, 18))
    eng.add_request(EngineRequest("a", prompt, 1, cache_salt="tenant-a"))
    _drain(eng)
    eng.add_request(EngineRequest("b", prompt, 1, cache_salt="tenant-b"))
    eng.add_request(EngineRequest("c", prompt, 1))
    res = eng.step(0.0)
    assert {o.request_id: o.num_cached_tokens for o in res.outputs} == {"b": 0, "c": 0}
    eng.add_request(EngineRequest("d", prompt, 1, cache_salt="tenant-a"))
    res = eng.step(0.0)
    assert res.outputs[0].num_cached_tokens == 16


def test_blocks_filled_by_decode_are_cached_with_output_tokens():
    eng = _engine()
    prompt = [7, 8, 9, 10, 11, 12]
    eng.add_request(EngineRequest("r", prompt, 10))
    tokens, events = _drain(eng)
    stored = [e for e in events if isinstance(e, BlockStored)]
    seq = prompt + tokens["r"]
    hashes = [to_event_hash(h) for h in HASHER.hash_blocks(seq)]
    # prefill caches block 0; decode fills and caches blocks 1..3 (16 tokens = prompt 6 + outputs 10,
    # the last output is sampled but never computed, so block 3 (tokens 12..15) is not full when computed).
    assert [e.block_hashes for e in stored] == [[hashes[0]], [hashes[1]], [hashes[2]]]
    assert stored[1].parent_block_hash == hashes[0] and stored[1].token_ids == seq[4:8]
    # A follow-up prompt continuing the conversation hits prompt and output blocks alike.
    eng.add_request(EngineRequest("next", seq + [1, 2, 3], 1))
    res = eng.step(0.0)
    assert res.outputs[0].num_cached_tokens == 12


def test_whole_prompt_hit_still_recomputes_the_last_token():
    eng = _engine()
    prompt = list(range(100, 116))  # exactly 4 full blocks
    eng.add_request(EngineRequest("a", prompt, 1))
    _drain(eng)
    eng.add_request(EngineRequest("b", prompt, 1))
    res = eng.step(0.0)
    assert res.outputs[0].num_cached_tokens == 12  # 3 blocks; the 4th holds the last token
    assert res.num_scheduled_tokens == 4


def test_preemption_under_pressure_recomputes_and_finishes_everything():
    prompts = {f"r{i}": [i * 50 + j for j in range(8)] for i in range(6)}
    calm = _engine(num_gpu_blocks=200)
    tight = _engine(num_gpu_blocks=16)
    for eng in (calm, tight):
        for rid, prompt in prompts.items():
            eng.add_request(EngineRequest(rid, prompt, 20, ignore_eos=True))
    calm_tokens, _ = _drain(calm)
    tight_tokens, _ = _drain(tight)
    assert calm.stats().num_preemptions == 0
    assert tight.stats().num_preemptions > 0
    assert tight_tokens == calm_tokens  # same outputs (deterministic per prompt), each exactly max_tokens
    assert all(len(t) == 20 for t in tight_tokens.values())
    assert tight.stats().kv_cache_usage == 0.0
