"""Real vLLM's KV events carry exactly the block hashes our hasher (and so the simulator and router) computes."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from vllm_harness import EventCollector

pytestmark = pytest.mark.vllm


def _wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_block_hashes_equal_real_vllm_with_explicit_seed(vllm_pair) -> None:
    from kvtiers.hashing import DEFAULT_SEED, BlockHasher, to_event_hash

    pod = vllm_pair.pods[0]
    assert pod.env["PYTHONHASHSEED"] == vllm_pair.hash_seed == "42"
    collector = EventCollector(pod.kv_events_endpoint)
    try:
        time.sleep(0.5)  # ZMQ slow joiner: let the subscription reach the publisher
        rng = random.Random(7)
        ids = [rng.randrange(10, 2000) for _ in range(3 * vllm_pair.block_size + 5)]  # 3 full blocks + a partial
        r = httpx.post(pod.url + "/v1/completions", json={"model": "tiny", "prompt": ids, "max_tokens": 1}, timeout=60)
        assert r.status_code == 200, r.text
        ours = [to_event_hash(d) for d in BlockHasher(vllm_pair.block_size, "sha256", vllm_pair.hash_seed).hash_blocks(ids)]
        assert _wait_for(lambda: set(ours) <= collector.stored_hashes()), f"vLLM stored {sorted(collector.stored_hashes())}, we expect {ours}"
        stored = [ev for ev in collector.events if type(ev).__name__ == "BlockStored"]
        assert [h for ev in stored for h in ev.block_hashes][:3] == ours
        assert stored[0].parent_block_hash is None and stored[0].block_size == vllm_pair.block_size
        assert collector.topics == {pod.topic.encode()}
        # the seed matters: vLLM's default seed would give other hashes, so a leaked PYTHONHASHSEED breaks routing
        default = [to_event_hash(d) for d in BlockHasher(vllm_pair.block_size, "sha256", DEFAULT_SEED).hash_blocks(ids)]
        assert not set(default) & collector.stored_hashes()
    finally:
        collector.close()


def test_simulator_engine_hashes_equal_real_vllm(vllm_pair) -> None:
    """sim_gpu's engine, fed the same token ids with the same seed, publishes the same block hashes."""
    try:
        from sim_gpu.engine import block_hashes_for as sim_hashes  # type: ignore[attr-defined]
    except ImportError:
        from kvtiers.hashing import BlockHasher, to_event_hash

        def sim_hashes(ids, block_size, seed):  # the simulator hashes through kvtiers.hashing
            return [to_event_hash(d) for d in BlockHasher(block_size, "sha256", seed).hash_blocks(ids)]

    pod = vllm_pair.pods[1]
    collector = EventCollector(pod.kv_events_endpoint)
    try:
        time.sleep(0.5)
        rng = random.Random(11)
        prefix = [rng.randrange(10, 2000) for _ in range(2 * vllm_pair.block_size)]
        for tail in range(2):
            ids = prefix + [rng.randrange(10, 2000) for _ in range(vllm_pair.block_size)]
            r = httpx.post(pod.url + "/v1/completions", json={"model": "tiny", "prompt": ids, "max_tokens": 1}, timeout=60)
            assert r.status_code == 200, r.text
            want = sim_hashes(ids, vllm_pair.block_size, vllm_pair.hash_seed)
            assert _wait_for(lambda: set(want) <= collector.stored_hashes()), f"block hashes differ for request {tail}"
        stored = [ev for ev in collector.events if type(ev).__name__ == "BlockStored"]
        # the second request shares 2 blocks: vLLM stores only its third block, chained to the shared second
        assert len(stored) == 2 and len(stored[1].block_hashes) == 1
        assert stored[1].parent_block_hash == stored[0].block_hashes[1]
    finally:
        collector.close()
