"""The precise prefix index fed with real vLLM KV-event frames, and its sequence, tier and speculation rules;
the approximate (routing-history) index."""

from __future__ import annotations

import base64

import pytest

from kvtiers import (
    AllBlocksCleared,
    BlockHasher,
    BlockRemoved,
    BlockStored,
    decode_frames,
    encode_payload,
    to_event_hash,
)
from kvtiers.kvevents import KVEventBatch, decode_payload
from router_lite.prefix import ApproximatePrefixIndex, PrecisePrefixIndex

POD = "127.0.0.1:8102"


def _messages(step: dict):
    for message in step["messages"]:
        yield decode_frames([base64.b64decode(f) for f in message["frames_b64"]])


def _hasher(entry: dict) -> tuple[BlockHasher, bool]:
    cfg = entry["config"]
    use_int = not str(cfg["VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES"]).startswith("0")
    return BlockHasher(32, cfg["prefix_caching_hash_algo"], cfg.get("PYTHONHASHSEED") or "vllm-none-hash"), use_int


@pytest.mark.parametrize("form", ["map", "positional"])
def test_capture_replay_index_holds_exactly_what_the_pod_holds(capture, form):
    for entry in capture["captures"]:
        index = PrecisePrefixIndex()
        held: set = set()  # reference model: what the pod's GPU cache holds per the events
        before_reset: set = set()
        for step in entry["steps"]:
            removed_here: set = set()
            for _topic, seq, batch in _messages(step):
                if form == "positional":  # the older wire form must land identically
                    batch = decode_payload(encode_payload(batch, form="positional"))
                assert index.apply(POD, seq, batch) == "applied"
                for ev in batch.events:
                    if isinstance(ev, BlockStored):
                        held |= set(ev.block_hashes)
                    elif isinstance(ev, BlockRemoved):
                        held -= set(ev.block_hashes)
                        removed_here |= set(ev.block_hashes)
                    elif isinstance(ev, AllBlocksCleared):
                        before_reset = set(held)
                        held.clear()
            assert index.blocks_of(POD) == held, f"{entry['label']}/{step['name']}"
            assert index.stats()["blocks"] == len(held)
            for h in removed_here:
                assert h not in index.holders(h) or POD not in index.holders(h)
                assert index.holders(h) == {}
            if step["name"] == "evict_2":
                assert len(removed_here) == 14
        # After the reset, nothing from before it survives; only the one block stored after it.
        assert before_reset and not (before_reset & index.blocks_of(POD))
        assert len(index.blocks_of(POD)) == 1
        stats = index.stats()
        assert stats["gaps"] == 0 and stats["restarts"] == 0 and stats["duplicates"] == 0


def test_capture_match_rehashed_prompt(capture):
    """The router's own hashes of a step's tokens find that step's blocks on the pod, consecutively."""
    entry = capture["captures"][0]
    hasher, use_int = _hasher(entry)
    index = PrecisePrefixIndex()
    steps = {s["name"]: s for s in entry["steps"]}
    for name in ("basic_prompt_and_decode", "shared_prefix"):
        for _t, seq, batch in _messages(steps[name]):
            index.apply(POD, seq, batch)
    basic = steps["basic_prompt_and_decode"]
    tokens = basic["prompt_token_ids"] + basic["output_token_ids"]
    hashes = [to_event_hash(d, use_int) for d in hasher.hash_blocks(tokens)]
    assert index.match(hashes) == {POD: (len(hashes), float(len(hashes)))}
    # A prompt that diverges after the first block matches exactly one block.
    other = tokens[:32] + [t + 1 for t in tokens[32:]]
    hashes2 = [to_event_hash(d, use_int) for d in hasher.hash_blocks(other)]
    assert index.match(hashes2) == {POD: (1, 1.0)}
    # The salted request's blocks are different blocks: no match before its step is applied.
    salted = steps["cache_salt"]
    hs = [
        to_event_hash(d, use_int)
        for d in hasher.hash_blocks(salted["prompt_token_ids"], cache_salt=salted["request"]["cache_salt"])
    ]
    assert index.match(hs) == {}
    for _t, seq, batch in _messages(salted):
        index.apply(POD, seq, batch)
    assert index.match(hs)[POD][0] == len(hs) == 3


def _stored(hashes, medium="GPU", parent=None):
    return BlockStored(
        block_hashes=list(hashes),
        parent_block_hash=parent,
        token_ids=[0] * (16 * len(hashes)),
        block_size=16,
        medium=medium,
    )


def _batch(*events, rank=0):
    return KVEventBatch(0.0, list(events), rank)


def test_duplicate_sequence_is_ignored_and_gap_purges_the_pod():
    idx = PrecisePrefixIndex()
    gaps = []
    idx.on_gap = lambda key, expected, got: gaps.append((key, expected, got))
    assert idx.apply("a:1", 0, _batch(_stored([1, 2]))) == "applied"
    assert idx.apply("b:1", 0, _batch(_stored([1, 9]))) == "applied"
    assert idx.apply("a:1", 0, _batch(_stored([3]))) == "duplicate"
    assert idx.blocks_of("a:1") == {1, 2}
    assert idx.apply("a:1", 4, _batch(_stored([3]))) == "gap"
    s = idx.stats()
    assert s["duplicates"] == 1 and s["gaps"] == 1 and s["missed_messages"] == 3
    assert gaps == [("a:1", 1, 4)]
    # the lost messages may have removed 1 and 2: only what arrived after the gap is trusted; b is untouched
    assert idx.blocks_of("a:1") == {3}
    assert idx.holders(1) == {"b:1": 1.0} and idx.blocks_of("b:1") == {1, 9}


def test_per_endpoint_quota_bounds_the_index():
    """Issue 18: one publisher cannot grow the index without bound; other pods keep their room."""
    idx = PrecisePrefixIndex(max_blocks_per_endpoint=100)
    idx.apply("a:1", 0, _batch(_stored(list(range(10_000)))))
    idx.apply("b:1", 0, _batch(_stored([20_000, 20_001])))
    s = idx.stats()
    assert len(idx.blocks_of("a:1")) == 100 and s["quota_drops"] == 9_900
    assert s["blocks"] == 102 and idx.blocks_of("b:1") == {20_000, 20_001}
    idx.apply("a:1", 1, _batch(BlockRemoved(block_hashes=list(range(50)))))
    idx.apply("a:1", 2, _batch(_stored([30_000])))  # room again after removals
    assert 30_000 in idx.blocks_of("a:1")


def test_sequence_going_backwards_means_restart_and_drops_blocks():
    idx = PrecisePrefixIndex()
    idx.apply("a:1", 0, _batch(_stored([1, 2, 3])))
    idx.apply("a:1", 1, _batch(_stored([4])))
    idx.apply("b:1", 0, _batch(_stored([1, 2])))
    assert idx.apply("a:1", 0, _batch(_stored([9]))) == "restart"
    assert idx.blocks_of("a:1") == {9}
    assert idx.blocks_of("b:1") == {1, 2}  # other pods untouched
    assert idx.holders(1) == {"b:1": 1.0}
    assert idx.stats()["restarts"] == 1


def test_all_blocks_cleared_clears_only_that_pod():
    idx = PrecisePrefixIndex()
    idx.apply("a:1", 0, _batch(_stored([1, 2])))
    idx.apply("b:1", 0, _batch(_stored([1, 2])))
    idx.apply("a:1", 1, _batch(AllBlocksCleared()))
    assert idx.blocks_of("a:1") == set()
    assert idx.match([1, 2]) == {"b:1": (2, 2.0)}


def test_removal_of_absent_blocks_and_restore_are_idempotent():
    idx = PrecisePrefixIndex()
    idx.apply("a:1", 0, _batch(_stored([1, 2]), _stored([1, 2])))
    idx.apply("a:1", 1, _batch(BlockRemoved(block_hashes=[7, 2]), BlockRemoved(block_hashes=[2])))
    assert idx.blocks_of("a:1") == {1}
    assert idx.stats()["blocks"] == 1


def test_tier_weights_and_consecutive_prefix():
    idx = PrecisePrefixIndex(tier_weights={"DISK": 0.3})
    idx.apply("a:1", 0, _batch(_stored([1, 2, 3, 4])))
    idx.apply("b:1", 0, _batch(_stored([1, 2, 3, 4], medium="CPU")))
    idx.apply("c:1", 0, _batch(_stored([1, 2], medium="DISK"), _stored([4])))  # hole at block 3
    m = idx.match([1, 2, 3, 4, 5])
    assert m["a:1"] == (4, 4.0)
    assert m["b:1"][0] == 4 and m["b:1"][1] == pytest.approx(3.2)
    assert m["c:1"][0] == 2 and m["c:1"][1] == pytest.approx(0.6)
    # A block in both GPU and CPU counts at its best tier; losing the GPU copy falls back to CPU.
    idx.apply("b:1", 1, _batch(_stored([1])))
    assert idx.match([1])["b:1"] == (1, 1.0)
    idx.apply("b:1", 2, _batch(BlockRemoved(block_hashes=[1], medium="GPU")))
    assert idx.match([1])["b:1"] == (1, pytest.approx(0.8))
    assert idx.match([9, 1]) == {}  # the prefix must start at block 0


def test_single_holder_prefix_stops_at_a_hole_or_another_holder_and_sums_its_tiers():
    """One endpoint holding block 0 (the common case, walked in C): the prefix ends at the first block it does
    not hold — missing from the index or held only elsewhere — and its score sums the tiers block by block."""
    idx = PrecisePrefixIndex()
    idx.apply("a:1", 0, _batch(_stored([1, 2]), _stored([3], medium="CPU"), _stored([5, 6])))
    idx.apply("b:1", 0, _batch(_stored([4])))
    assert idx.match([1, 2, 3, 4, 5, 6]) == {"a:1": (3, 2.8)}  # 1.0 + 1.0 + 0.8, in that order
    assert idx.match([1, 2, 3, 7, 5]) == {"a:1": (3, 2.8)}  # block 7 is in no one's cache
    assert idx.match([1, 2, 3], max_blocks=2) == {"a:1": (2, 2.0)}
    assert idx.match([1]) == {"a:1": (1, 1.0)}
    idx.apply("a:1", 1, _batch(_stored([4]), _stored([7], medium="CPU")))
    assert idx.match([1, 2, 3, 4, 7, 5, 6, 8]) == {"a:1": (7, 1.0 + 1.0 + 0.8 + 1.0 + 0.8 + 1.0 + 1.0)}


def test_unknown_medium_uses_default_weight():
    idx = PrecisePrefixIndex(default_weight=0.25)
    idx.apply("a:1", 0, _batch(_stored([1], medium="lmcache")))
    assert idx.match([1]) == {"a:1": (1, 0.25)}


def test_data_parallel_rank_maps_to_rank_port():
    idx = PrecisePrefixIndex()
    idx.apply("10.0.0.1:8000", 0, _batch(_stored([1, 2]), rank=0))
    idx.apply("10.0.0.1:8000", 0, _batch(_stored([1, 2, 3]), rank=2))  # own publisher, own sequence
    assert idx.blocks_of("10.0.0.1:8000") == {1, 2}
    assert idx.blocks_of("10.0.0.1:8002") == {1, 2, 3}
    assert idx.match([1, 2, 3]) == {"10.0.0.1:8000": (2, 2.0), "10.0.0.1:8002": (3, 3.0)}
    assert idx.stats()["restarts"] == 0


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_speculative_entries_expire_unless_confirmed():
    clock = FakeClock()
    idx = PrecisePrefixIndex(speculative_ttl_s=2.0, clock=clock)
    assert idx.add_speculative("a:1", [1, 2, 3]) == 3
    assert idx.match([1, 2, 3]) == {"a:1": (3, 3.0)}
    assert idx.blocks_of("a:1") == set()  # speculation is not what events say
    idx.apply("a:1", 0, _batch(_stored([1, 2])))  # events confirm two of them
    clock.t += 2.5
    idx.apply("b:1", 0, _batch(_stored([7])))  # any write purges what has expired
    assert idx.match([1, 2, 3]) == {"a:1": (2, 2.0)}
    s = idx.stats()
    assert s["speculative"] == 0 and s["confirmed_speculative"] == 2 and s["blocks"] == 3


def test_speculation_is_dropped_on_reset_and_skips_held_blocks():
    clock = FakeClock()
    idx = PrecisePrefixIndex(clock=clock)
    idx.apply("a:1", 0, _batch(_stored([1])))
    assert idx.add_speculative("a:1", [1, 2]) == 1
    idx.apply("a:1", 1, _batch(AllBlocksCleared()))
    assert idx.match([1, 2]) == {}
    clock.t += 10  # an idle router (no writes for over a TTL) purges on read
    assert idx.match([1]) == {} and idx.stats()["blocks"] == 0


def test_shared_tier_blocks_count_for_every_endpoint():
    idx = PrecisePrefixIndex(shared_media=["SHARED"], tier_weights={"SHARED": 0.5})
    idx.apply("a:1", 0, _batch(_stored([1, 2], medium="SHARED"), _stored([1])))
    m = idx.match([1, 2], endpoints=["a:1", "b:1"])
    assert m["a:1"] == (2, 1.5)  # GPU copy of block 1, shared block 2
    assert m["b:1"] == (2, 1.0)
    idx.apply("a:1", 1, _batch(AllBlocksCleared()))  # a pod reset does not empty the shared tier
    assert idx.match([1, 2], endpoints=["b:1"]) == {"b:1": (2, 1.0)}


def test_remove_endpoint_forgets_blocks_and_sequence():
    idx = PrecisePrefixIndex()
    idx.apply("a:1", 5, _batch(_stored([1])))
    idx.remove_endpoint("a:1")
    assert idx.match([1]) == {} and idx.last_seq("a:1") is None
    assert idx.apply("a:1", 0, _batch(_stored([2]))) == "applied"


# ---- approximate index ----------------------------------------------------------------------------


def test_approximate_consecutive_match():
    idx = ApproximatePrefixIndex(100)
    idx.add("a", [1, 2, 3])
    idx.add("b", [1, 2])
    idx.add("c", [2, 3])
    assert idx.match([1, 2, 3, 4]) == {"a": 3, "b": 2}
    assert idx.match([5]) == {}


def test_approximate_lru_capacity_evicts_oldest():
    idx = ApproximatePrefixIndex(4)
    idx.add("a", [1, 2, 3])
    idx.add("a", [10, 11])  # capacity 4: block 1 (oldest) goes
    assert idx.match([1]) == {}
    assert idx.match([2, 3]) == {"a": 2}
    idx.add("a", [2])  # touch 2: now 3 is oldest
    idx.add("a", [12])
    assert idx.match([3]) == {} and idx.match([2]) == {"a": 1}
    assert idx.stats()["evictions"] == 2 and idx.blocks_of("a") == 4


def test_approximate_remove_endpoint():
    idx = ApproximatePrefixIndex(10)
    idx.add("a", [1])
    idx.add("b", [1])
    idx.remove_endpoint("a")
    assert idx.match([1]) == {"b": 1}
