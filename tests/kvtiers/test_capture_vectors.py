"""The real vLLM 0.32 capture: our decoder reads every frame, our encoder reproduces it byte for byte,
and our hasher re-derives every stored hash and parent from the token ids."""

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
from kvtiers.kvevents import KVEventBatch, KVEventDecodeError, decode_payload


def _frames(message: dict) -> list[bytes]:
    return [base64.b64decode(f) for f in message["frames_b64"]]


def _settings(capture_entry: dict) -> tuple[BlockHasher, bool]:
    cfg = capture_entry["config"]
    use_int = not str(cfg["VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES"]).startswith("0")
    seed = cfg.get("PYTHONHASHSEED") or "vllm-none-hash"
    return BlockHasher(32, cfg["prefix_caching_hash_algo"], seed), use_int


def test_every_frame_decodes_and_reencodes_byte_for_byte(capture):
    count = 0
    for entry in capture["captures"]:
        for step in entry["steps"]:
            for message in step["messages"]:
                frames = _frames(message)
                topic, seq, batch = decode_frames(frames)
                assert topic == message["topic"]
                assert seq == message["seq"]
                assert encode_payload(batch) == frames[2]
                count += 1
    assert count > 20


def test_hashes_and_parents_rederive_from_token_ids(capture):
    for entry in capture["captures"]:
        hasher, use_int = _settings(entry)
        known: dict = {}
        for step in entry["steps"]:
            if step["prompt_token_ids"] is None:
                continue
            tokens = step["prompt_token_ids"] + step["output_token_ids"]
            digests = hasher.hash_blocks(tokens, cache_salt=step["request"].get("cache_salt"))
            derived = [to_event_hash(d, use_int) for d in digests]
            parents = [None] + derived[:-1]
            for i, h in enumerate(derived):
                known[h] = (parents[i], tokens[i * 32 : (i + 1) * 32])
            for message in step["messages"]:
                for event in decode_frames(_frames(message))[2].events:
                    if isinstance(event, BlockStored):
                        assert event.block_size == 32
                        parent = event.parent_block_hash
                        for j, h in enumerate(event.block_hashes):
                            assert h in known, f"{entry['label']}/{step['name']}: hash {h!r} not re-derived"
                            assert known[h][0] == parent
                            assert known[h][1] == event.token_ids[j * 32 : (j + 1) * 32]
                            parent = h


def test_event_kinds_present(capture):
    kinds = set()
    for entry in capture["captures"]:
        for step in entry["steps"]:
            for message in step["messages"]:
                kinds.update(type(e) for e in decode_frames(_frames(message))[2].events)
    assert kinds == {BlockStored, BlockRemoved, AllBlocksCleared}


def test_seed_changes_every_hash():
    tokens = list(range(64))
    a = BlockHasher(32, "sha256", "vllm-none-hash").hash_blocks(tokens)
    b = BlockHasher(32, "sha256", "42").hash_blocks(tokens)
    assert len(a) == len(b) == 2
    assert not set(a) & set(b)


def test_positional_form_roundtrip():
    batch = KVEventBatch(
        1.5,
        [
            BlockStored(
                block_hashes=[1, 2], parent_block_hash=None, token_ids=list(range(64)), block_size=32, medium="CPU"
            ),
            BlockRemoved(block_hashes=[1]),
            AllBlocksCleared(),
        ],
        3,
    )
    raw = encode_payload(batch, form="positional")
    assert raw != encode_payload(batch)
    back = decode_payload(raw)
    assert back.data_parallel_rank == 3
    assert back.events[0].block_hashes == [1, 2] and back.events[0].medium == "CPU"
    assert isinstance(back.events[1], BlockRemoved) and isinstance(back.events[2], AllBlocksCleared)


def test_garbage_payload_is_a_clear_error():
    with pytest.raises(KVEventDecodeError):
        decode_payload(b"\x01\x02garbage")
    with pytest.raises(KVEventDecodeError):
        decode_frames([b"topic", b"\x00"])
