"""The simulator's engine with kvtiers below its GPU pool: offload on eviction, load on GPU miss, events."""

from __future__ import annotations

import random

import pytest

import sim_gpu.engine as sim_engine
from kvtiers.engine_hook import attach_tiers, build_store
from kvtiers.fs_tier import FsTier
from kvtiers.hashing import to_event_hash
from kvtiers.store import CostModel, FilesystemTier, MemoryTier, TieredStore, kv_bytes_per_block, synthetic_payload
from kvtiers.types import BlockType

BS = 16
COST = CostModel(block_bytes=kv_bytes_per_block(32, 8, 128, BS))


def engine(gpu_blocks=41):
    return sim_engine.SimEngine(sim_engine.EngineConfig(num_gpu_blocks=gpu_blocks, block_size=BS, max_num_seqs=4))


def run(eng, prompt, rid, now=0.0):
    """Run one request to completion; (finish time, first-token time, cached tokens, events)."""
    eng.add_request(sim_engine.EngineRequest(rid, prompt, max_tokens=2, arrival_time=now))
    first, cached, events = None, None, []
    for _ in range(10_000):
        r = eng.step(now)
        now += r.duration_s if r.duration_s > 0 else 1e-4
        events += r.kv_events
        for o in r.outputs:
            if o.first_token:
                first, cached = now, o.num_cached_tokens
        if not eng.has_unfinished():
            return now, first, cached, events
    raise AssertionError("request did not finish")


def prompts(n, blocks=12, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(30000) for _ in range(blocks * BS + 5)] for _ in range(n)]


def media(events):
    out = {}
    for e in events:
        key = (type(e).__name__, getattr(e, "medium", None))
        out[key] = out.get(key, 0) + len(getattr(e, "block_hashes", []))
    return out


def test_evicted_prefix_comes_back_from_cpu_faster_than_recompute():
    target, *flood = prompts(5, blocks=100)  # long prompts: recompute is compute-bound, a load is not
    results = {}
    for with_tiers in (False, True):
        eng = engine(401)
        hook = attach_tiers(eng, TieredStore([MemoryTier("CPU", 1000)], COST, block_size=BS)) if with_tiers else None
        now, _, _, _ = run(eng, target, "t0")
        for i, p in enumerate(flood):  # 4 x 100 blocks through a 400-block GPU: the target is evicted
            now, _, _, _ = run(eng, p, f"f{i}", now)
        start = now
        now, first, cached, events = run(eng, target, "t1", now)
        results[with_tiers] = (first - start, cached, events, hook)
    ttft_gpu_only, cached_gpu_only, _, _ = results[False]
    ttft_tiered, cached_tiered, events, hook = results[True]
    assert cached_gpu_only == 0
    assert cached_tiered == 100 * BS  # every full block of the prompt came back from CPU
    assert hook.counters.hit_tokens_cpu == 100 * BS
    assert hook.counters.load_s == pytest.approx(COST.load_seconds(["CPU"] * 100))
    assert ttft_tiered < ttft_gpu_only / 2
    m = media(events)
    assert m[("BlockStored", "GPU")] >= 100  # loaded blocks are GPU-cached again (events for the router)


def test_pod_b_loads_what_pod_a_computed_through_the_shared_directory(tmp_path):
    def pod():
        eng = engine()
        fs = FilesystemTier(FsTier(tmp_path, 64 << 20), synthetic_payload(4096))
        return eng, attach_tiers(eng, TieredStore([fs], COST, block_size=BS))

    shared, *flood = prompts(5, seed=1)
    a, _ = pod()
    now, _, _, events_a = run(a, shared, "a0")
    for i, p in enumerate(flood):
        now, *_rest, ev = run(a, p, f"a{i + 1}", now)
        events_a += ev
    assert media(events_a)[("BlockStored", "DISK")] >= 12  # pod A's evictions landed on the shared disk
    b, hook_b = pod()
    _, _, cached, events_b = run(b, shared, "b0")
    assert cached == 12 * BS and hook_b.counters.hit_tokens_disk == 12 * BS
    assert hook_b.store.tiers[0].fs.stats.reads == 12


def test_typed_blocks_skip_offload_and_replicate(tmp_path):
    spec = {
        "cpu_blocks": 100,
        "filesystem": {"path": "kv", "capacity_mb": 64},
        "policies": {"system_prompt": {"replicate": True}, "reasoning_branch": {"evict": "eager"}},
    }
    store = build_store(spec, block_size=BS, block_bytes=COST.block_bytes, base_dir=str(tmp_path), payload_bytes=1024)
    eng = engine()
    hook = attach_tiers(eng, store)
    sysp, scratch, *flood = prompts(10, blocks=8, seed=2)
    hook.note_request(sysp, [BlockType.SYSTEM_PROMPT] * 8)
    hook.note_request(scratch, [BlockType.REASONING_BRANCH] * 8)
    now, _, _, ev = run(eng, sysp, "s")
    assert media(ev).get(("BlockStored", "DISK")) == 8  # replicated through to the shared tier at once
    now, *_ = run(eng, scratch, "r", now)
    for i, p in enumerate(flood):
        now, *_ = run(eng, p, f"f{i}", now)
    assert store.stats.skipped_eager == 8  # the scratchpad was never offloaded
    keys = lambda p: [to_event_hash(d) for d in eng.hasher.hash_blocks(p)]  # noqa: E731
    assert [store.holds(k) for k in keys(scratch)] == [None] * 8
    assert {store.holds(k) for k in keys(sysp)} == {"CPU"}
    assert len(list((tmp_path / "kv").iterdir())) == 8


def test_attach_rejects_mismatched_block_size():
    with pytest.raises(ValueError, match="block_size"):
        attach_tiers(engine(), TieredStore([MemoryTier("CPU", 4)], COST, block_size=32))


def test_tier_loads_under_memory_pressure_always_finish(tmp_path):
    """Requests holding loaded KV in the waiting queue must never deadlock the engine (regression)."""
    docs = prompts(12, blocks=16, seed=3)
    eng = sim_engine.SimEngine(sim_engine.EngineConfig(num_gpu_blocks=65, block_size=BS, max_num_seqs=64))
    fs = FilesystemTier(FsTier(tmp_path, 64 << 20), synthetic_payload(512))
    hook = attach_tiers(eng, TieredStore([MemoryTier("CPU", 64), fs], COST, block_size=BS))
    rng = random.Random(5)
    now, issued, steps = 0.0, 0, 0
    while issued < 80 or eng.has_unfinished():
        while issued < 80 and eng.num_unfinished() < 8:
            eng.add_request(
                sim_engine.EngineRequest(
                    f"r{issued}", docs[rng.randrange(12)] + [7, 7, 7], max_tokens=16, ignore_eos=True
                )
            )
            issued += 1
        r = eng.step(now)
        now += r.duration_s if r.duration_s > 0 else 1e-5
        steps += 1
        assert steps < 20_000, "engine stalled with tier loads pending"
    assert hook.counters.hit_tokens_cpu + hook.counters.hit_tokens_disk > 0
