"""The engine replays the real vLLM 0.32 capture: same token ids in, the same KV events out — hashes, parents,
token lists, extra keys, and the BlockStored/BlockRemoved/AllBlocksCleared sequence (incl. LRU eviction order)."""

from __future__ import annotations

import base64

import pytest

from kvtiers import AllBlocksCleared, BlockRemoved, BlockStored, decode_frames
from sim_gpu.engine import EngineConfig, EngineRequest, SimEngine
from sim_gpu.latency import LatencyModel


def _engine_for(entry: dict) -> SimEngine:
    cfg = entry["config"]
    return SimEngine(
        EngineConfig(
            block_size=32,
            num_gpu_blocks=96,
            max_num_seqs=8,
            max_model_len=2048,
            hash_algo=cfg["prefix_caching_hash_algo"],
            hash_seed=cfg.get("PYTHONHASHSEED") or "vllm-none-hash",
            event_hash_int=not str(cfg["VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES"]).startswith("0"),
            latency=LatencyModel.from_names("cpu", "tinyllama"),
            vocab_size=2048,
        )
    )


def _expected(step: dict) -> list:
    events = []
    for message in step["messages"]:
        events += decode_frames([base64.b64decode(f) for f in message["frames_b64"]])[2].events
    return events


def _run(engine: SimEngine, step: dict) -> list:
    engine.add_request(
        EngineRequest(
            request_id=step["name"],
            prompt_token_ids=step["prompt_token_ids"],
            max_tokens=len(step["output_token_ids"]),
            ignore_eos=True,
            cache_salt=step["request"].get("cache_salt"),
            output_token_ids=step["output_token_ids"],
        )
    )
    events, now = [], 0.0
    for _ in range(10_000):
        if not engine.has_unfinished():
            break
        result = engine.step(now)
        now += result.duration_s
        events += result.kv_events
    assert not engine.has_unfinished()
    return events


@pytest.mark.parametrize("label", ["sha256_int", "sha256_cbor_bytes", "sha256_int_PYTHONHASHSEED42"])
def test_engine_events_equal_real_vllm(capture, label):
    entry = next(e for e in capture["captures"] if e["label"] == label)
    engine = _engine_for(entry)
    kinds = set()
    for step in entry["steps"]:
        if step["prompt_token_ids"] is None:  # POST /reset_prefix_cache
            assert engine.reset_prefix_cache() is True
            continue
        got = _run(engine, step)
        want = _expected(step)
        # msgspec structs compare by content: hashes, parents, token ids, block size, extra keys, medium...
        assert got == want, f"{label}/{step['name']}: events differ"
        kinds.update(type(e) for e in got)
    assert kinds == {BlockStored, BlockRemoved, AllBlocksCleared}


def test_eviction_step_removes_in_lru_order(capture):
    entry = capture["captures"][0]
    engine = _engine_for(entry)
    removed: list = []
    for step in entry["steps"]:
        if step["prompt_token_ids"] is None:
            break
        events = _run(engine, step)
        if step["name"] == "evict_2":
            removed = [e.block_hashes[0] for e in events if isinstance(e, BlockRemoved)]
    want = [
        e.block_hashes[0]
        for e in _expected(next(s for s in entry["steps"] if s["name"] == "evict_2"))
        if isinstance(e, BlockRemoved)
    ]
    assert len(removed) == 14 and removed == want
    # The cache_salt request's first block survives: hashless partial blocks were evicted before it.
    assert engine.stats().prefix_cache_hits_tokens == 64  # shared_prefix hit 2 blocks of basic
