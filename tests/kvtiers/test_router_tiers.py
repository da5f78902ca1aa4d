"""The router's view of KV tiers: per-medium prefix breakdown and the shared DISK tier (pure cores)."""

from __future__ import annotations

from kvtiers.kvevents import BlockRemoved, BlockStored, KVEventBatch
from router_lite.config import load_config
from router_lite.prefix import PrecisePrefixIndex, PrefixIndexes
from router_lite.scheduler import Scheduler
from router_lite.types import Endpoint, LLMRequest


def _stored(hashes, medium="GPU"):
    return BlockStored(block_hashes=list(hashes), parent_block_hash=None, token_ids=[], block_size=16, medium=medium)


def _batch(*events):
    return KVEventBatch(0.0, list(events), 0)


def test_prefix_media_counts_each_block_at_its_best_tier_shared_disk_included():
    idx = PrecisePrefixIndex(shared_media=["DISK"])
    idx.apply("a:1", 0, _batch(_stored([1, 2]), _stored([3], "CPU"), _stored([1, 2, 3, 4], "DISK")))
    assert idx.prefix_media([1, 2, 3, 4, 5], "a:1") == {"GPU": 2, "CPU": 1, "DISK": 1}
    assert idx.prefix_media([1, 2, 3, 4, 5], "b:1") == {"DISK": 4}  # b never held them: the shared tier serves it
    idx.apply(
        "a:1", 1, _batch(BlockRemoved(block_hashes=[3], medium="DISK"), BlockRemoved(block_hashes=[3], medium="CPU"))
    )
    assert idx.prefix_media([1, 2, 3, 4], "b:1") == {"DISK": 2}  # the run stops at the first block nobody holds
    assert idx.stats()["blocks_by_medium"] == {"GPU": 2, "DISK": 3}
    assert idx.tiered


def _scheduler(index: PrefixIndexes) -> Scheduler:
    cfg = load_config(
        {
            "plugins": [
                {"type": "precise-prefix-cache-scorer"},
                {"type": "max-score-picker"},
                {"type": "single-profile-handler"},
            ],
            "schedulingProfiles": [
                {
                    "name": "default",
                    "plugins": [
                        {"pluginRef": "precise-prefix-cache-scorer", "weight": 1},
                        {"pluginRef": "max-score-picker"},
                    ],
                }
            ],
        },
        origin="test",
    )
    return Scheduler(cfg, index)


def test_decisions_carry_prefix_tiers_once_events_name_a_lower_tier_and_disk_is_shared_by_default():
    index = PrefixIndexes()
    sched = _scheduler(index)
    eps = [Endpoint("127.0.0.1", 8001), Endpoint("127.0.0.1", 8002)]
    req = LLMRequest(request_id="r", model="m", prompt_token_ids=list(range(64)))
    hashes = sched.plugins["precise-prefix-cache-scorer"]._hashes(req)
    index.precise.apply("127.0.0.1:8001", 0, _batch(_stored(hashes[:1])))
    d = sched.schedule(req, eps).to_decision_dict()
    assert all("prefix_tiers" not in c for c in d["candidates"])  # GPU-only stack: decisions unchanged
    index.precise.apply("127.0.0.1:8001", 1, _batch(_stored(hashes[1:], "DISK")))
    req = LLMRequest(request_id="r2", model="m", prompt_token_ids=list(range(64)))
    d = sched.schedule(req, eps).to_decision_dict()
    by_ep = {c["endpoint"]: c for c in d["candidates"]}
    assert by_ep["127.0.0.1:8001"]["prefix_tiers"] == {"GPU": 1, "DISK": 3}
    assert by_ep["127.0.0.1:8002"]["prefix_tiers"] == {}  # the shared blocks follow block 0, which only 8001 holds
    assert d["chosen"]["decode"] == "127.0.0.1:8001"


def test_a_tiered_stores_own_events_cross_the_wire_into_the_routers_index():
    """kvtiers emits the tier events, the router's index consumes them: the one global index (no second copy)."""
    from kvtiers.kvevents import decode_payload, encode_payload
    from kvtiers.store import CostModel, MemoryTier, TieredStore

    store = TieredStore([MemoryTier("CPU", 1), MemoryTier("DISK", 4, shared=True)], CostModel(block_bytes=1))
    store.offer([7, 8])  # the CPU tier holds one block: 8 stays there, 7 goes on to the shared disk
    wire = decode_payload(encode_payload(KVEventBatch(ts=0.0, events=store.take_events())))
    idx = PrecisePrefixIndex(shared_media=["DISK"])
    idx.apply("a:1", 0, wire)
    idx.apply("a:1", 1, _batch(_stored([9], None), _stored([10], "cpu")))  # vLLM: medium None is GPU, any case
    assert idx.prefix_media([8], "a:1") == {"CPU": 1}
    assert idx.prefix_media([7], "b:1") == {"DISK": 1}  # the shared tier serves a pod that never held it
    assert idx.prefix_media([9, 10], "a:1") == {"GPU": 1, "CPU": 1}
