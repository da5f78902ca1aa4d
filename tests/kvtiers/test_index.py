"""The global tier-aware index fed by KV events with `medium`."""

from __future__ import annotations

import base64

import pytest

from kvtiers import decode_frames
from kvtiers.index import SHARED_POD, TieredIndex, weights_from_config
from kvtiers.kvevents import AllBlocksCleared, BlockRemoved, BlockStored, KVEventBatch, decode_payload, encode_payload
from kvtiers.store import CostModel, MemoryTier, TieredStore


def stored(hashes, medium="GPU"):
    return BlockStored(block_hashes=list(hashes), parent_block_hash=None, token_ids=[], block_size=16, medium=medium)


def test_tiers_per_pod_and_weighted_scores():
    idx = TieredIndex()
    idx.apply("a", [stored([1, 2, 3, 4])])
    idx.apply("b", [stored([1, 2], "CPU"), stored([3], "GPU")])
    idx.apply("c", [stored([1, 2, 3], "DISK")])  # shared: counts for every pod
    assert idx.where(3) == {"a": {"GPU"}, "b": {"GPU"}, SHARED_POD: {"DISK"}}
    assert idx.prefix_media([1, 2, 3, 4], "a") == ["GPU"] * 4
    assert idx.prefix_media([1, 2, 3, 4], "b") == ["CPU", "CPU", "GPU"]
    assert idx.prefix_media([1, 2, 3, 4], "d") == ["DISK"] * 3  # a pod with nothing cached still loads from disk
    scores = idx.score([1, 2, 3, 4], ["a", "b", "d"])
    assert scores == pytest.approx({"a": 1.0, "b": (0.8 + 0.8 + 1.0) / 4, "d": 0.5 * 3 / 4})


def test_removal_medium_by_medium_and_clear():
    idx = TieredIndex()
    idx.apply("a", [stored([1], "GPU"), stored([1], "CPU")])
    idx.apply("a", [BlockRemoved(block_hashes=[1], medium="GPU")])
    assert idx.best_medium(1, "a") == "CPU"
    idx.apply("b", [stored([1], "DISK")])
    idx.apply("a", [AllBlocksCleared()])
    assert idx.where(1) == {SHARED_POD: {"DISK"}}  # clearing a pod's own tiers keeps the shared tier
    idx.apply("a", [BlockRemoved(block_hashes=[1], medium="DISK")])  # any pod may report a shared removal
    assert len(idx) == 0
    idx.apply("a", [BlockRemoved(block_hashes=[99], medium="CPU")])  # unknown block: ignored


def test_medium_none_and_lowercase_and_weights_config():
    idx = TieredIndex(weights=weights_from_config({"cpu": 0.6}))
    idx.apply("a", KVEventBatch(ts=0.0, events=[stored([1], None), stored([2], "cpu")]))
    assert idx.prefix_media([1, 2], "a") == ["GPU", "CPU"]
    assert idx.score([1, 2], ["a"]) == {"a": pytest.approx(0.8)}
    with pytest.raises(ValueError, match="tierWeights.CPU: expected a number in"):
        weights_from_config({"CPU": 3})
    assert idx.counts() == {"a": {"GPU": 1, "CPU": 1}}


def test_fed_by_real_vllm_frames_and_by_store_events(capture):
    idx = TieredIndex()
    n = 0
    for entry in capture["captures"]:
        for step in entry["steps"]:
            for message in step["messages"]:
                _, _, batch = decode_frames([base64.b64decode(f) for f in message["frames_b64"]])
                idx.apply("vllm", batch)
                n += len(batch.events)
    assert n > 0 and idx.stats.events == n
    store = TieredStore([MemoryTier("CPU", 1), MemoryTier("DISK", 4, shared=True)], CostModel(block_bytes=1))
    store.offer([7, 8])
    wire = decode_payload(encode_payload(KVEventBatch(ts=0.0, events=store.take_events())))
    idx.apply("pod-1", wire)
    assert idx.best_medium(8, "pod-1") == "CPU" and idx.best_medium(7, "pod-2") == "DISK"
