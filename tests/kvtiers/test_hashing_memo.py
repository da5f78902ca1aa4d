"""The memoising BlockHasher gives the same digests as the plain one (the engine's hashes must match), salts
and LoRA names included, and stays within its bound."""

from __future__ import annotations

import random

from kvtiers import hashing
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


def test_prompts_sharing_a_remembered_chain_get_the_plain_digests():
    """A prompt that shares leading blocks with the latest chain of its first block takes those digests from
    it: diverging at any block or inside one, shorter or longer than it, or equal to it, the digests are the
    plain hasher's."""
    rng = random.Random(11)
    base = [rng.randrange(150_000) for _ in range(16 * 12 + 5)]
    plain, memo = BlockHasher(16, "sha256", "42"), BlockHasher(16, "sha256", "42", memo_blocks=10_000)
    cases = [list(base), base[:16], base[: 16 * 5 + 3], base + [7] * 40]
    for cut in (16, 17, 16 * 4, 16 * 4 + 9, 16 * 11 + 15, len(base) - 1):
        cases.append(base[:cut] + [rng.randrange(150_000) for _ in range(rng.randrange(1, 60))])
    for p in cases + cases[::-1]:
        assert memo.hash_blocks(p) == plain.hash_blocks(p)
        assert memo.hash_blocks(tuple(p), cache_salt="s") == plain.hash_blocks(p, cache_salt="s")
    assert len(memo._chains) == 1  # one first block, one remembered chain (the latest)


def test_remembered_chains_stay_within_their_token_bound(monkeypatch):
    monkeypatch.setattr(hashing, "_CHAIN_TOKENS", 100)
    rng = random.Random(5)
    memo = BlockHasher(16, "sha256", "42", memo_blocks=10_000)
    for _ in range(20):
        memo.hash_blocks([rng.randrange(150_000) for _ in range(40)])
        assert memo._chain_tokens == sum(len(t) for t, _ in memo._chains.values()) <= 100
