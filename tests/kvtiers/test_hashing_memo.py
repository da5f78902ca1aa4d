"""The memoising BlockHasher gives the same digests as the plain one (the engine's hashes must match), salts
and LoRA names included, and stays within its bound."""

from __future__ import annotations

import random

from kvtiers.hashing import BlockHasher


def test_memoised_digests_equal_plain_ones_and_the_memo_stays_bounded():
    rng = random.Random(7)
    shared = [rng.randrange(150_000) for _ in range(640)]
    prompts = [shared + [rng.randrange(150_000) for _ in range(rng.randrange(0, 300))] for _ in range(30)]
    for algo in ("sha256", "sha256_cbor"):
        plain, memo = BlockHasher(16, algo, "42"), BlockHasher(16, algo, "42", memo_blocks=200)
        for p in prompts:
            for salt, lora in ((None, None), ("tenant-a", None), (None, "adapter"), ("tenant-b", "adapter")):
                assert memo.hash_blocks(p, salt, lora) == plain.hash_blocks(p, salt, lora)
            assert len(memo._memo) <= 200 + len(p) // 16  # cleared when full, before a prompt is hashed
        parent = plain.hash_blocks(shared[:32])[-1]  # a continued chain (blocks that fill during decode)
        assert memo.hash_blocks(shared[32:64], parent=parent, start_block=2) == plain.hash_blocks(shared[:64])[2:]


def test_hash_next_continues_a_chain_as_hash_blocks_does():
    """The decode path's one-block hash equals the chain's next digest, memoised or not."""
    rng = random.Random(3)
    toks = [rng.randrange(150_000) for _ in range(16 * 6)]
    plain = BlockHasher(16, "sha256", "42")
    full = plain.hash_blocks(toks)
    for hasher in (plain, BlockHasher(16, "sha256", "42", memo_blocks=3)):
        for _ in range(2):  # the second pass hits the memo (or finds it cleared at its bound)
            for i in range(1, 6):
                assert hasher.hash_next(full[i - 1], toks[i * 16 : (i + 1) * 16]) == full[i]
            assert hasher._memo is None or len(hasher._memo) <= 3
    assert plain.hash_next(None, toks[:16]) == full[0]
