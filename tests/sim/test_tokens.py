"""Output tokens: numpy's vectorised draws and the digest-chained prompt key give exactly what the plain
definition (`int(random.Random(key).random() * vocab)`, crc32 of the int64 prompt) gives."""

from __future__ import annotations

import random
import zlib
from array import array

import pytest

from kvtiers.hashing import BlockHasher
from sim_gpu.engine import EngineConfig, EngineRequest, SimEngine
from sim_gpu.engine.tokens import TokenGenerator


def _plain_key(seed: int, prompt: list[int]) -> int:
    return (zlib.crc32(array("q", prompt).tobytes()) << 32) ^ (seed & 0xFFFFFFFF) ^ (len(prompt) << 16)


def _plain_tokens(key: int, vocab: int, n: int) -> list[int]:
    rand = random.Random(key).random
    return [int(rand() * vocab) for _ in range(n)]


def test_stream_equals_plain_draws_in_any_mix_of_next_and_take() -> None:
    gen = TokenGenerator(seed=7, vocab_size=32000)
    rng = random.Random(1)
    for _ in range(40):
        prompt = [rng.randrange(50_000) for _ in range(rng.randrange(1, 200))]
        key = gen.key(prompt)
        assert key == _plain_key(7, prompt)
        s = gen.stream(prompt)
        got: list[int] = []
        while len(got) < 1500:
            got += [s.next()] if rng.random() < 0.3 else s.take(rng.randrange(1, 400))
        assert got == _plain_tokens(key, 32000, len(got))


def test_a_repeated_prompt_starts_from_the_run_kept_for_it_and_gets_the_same_stream() -> None:
    """Runs are kept per key (most recent keys): repeats, interleaved streams of one key, streams that outgrow
    the kept run, and keys dropped from the memo all still give the plain draws."""
    gen = TokenGenerator(seed=5, vocab_size=151_000)
    rng = random.Random(2)
    prompts = [[rng.randrange(150_000) for _ in range(rng.randrange(2, 80))] for _ in range(300)]
    for rep in range(3):
        for i in range(0, len(prompts), 7 if rep else 1):  # the first pass fills the memo past its bound
            p = prompts[i]
            a, b = gen.stream(p, expect=20), gen.stream(p, expect=20)
            got_a = a.take(10)
            got_b = b.take(5)
            got_a += a.take(rng.randrange(1, 300)) + [a.next()]
            got_b += b.take(rng.randrange(1, 600))
            want = _plain_tokens(_plain_key(5, p), 151_000, max(len(got_a), len(got_b)))
            assert got_a == want[: len(got_a)]
            assert got_b == want[: len(got_b)]
    assert len(gen._runs) <= 256


def test_a_key_of_one_32_bit_word_takes_the_python_path_with_the_same_values() -> None:
    gen = TokenGenerator(seed=3, vocab_size=100)
    key = gen.key([])  # crc32 of no bytes is 0: the key is the seed alone
    assert key < 2**32
    assert gen.stream([]).take(50) == _plain_tokens(key, 100, 50)


def test_key_chained_through_block_digests_equals_the_plain_key() -> None:
    gen = TokenGenerator(seed=0)
    hasher = BlockHasher(16)
    system = list(range(100, 180))
    for tail in ([5] * 7, [6] * 40, [], list(range(33))):
        prompt = system + tail
        digests = hasher.hash_blocks(prompt)
        assert gen.key(prompt, (16, digests)) == _plain_key(0, prompt)
        assert gen.key(prompt, (16, digests[:2])) == _plain_key(0, prompt)  # fewer digests than blocks


@pytest.mark.parametrize("given", [False, True])
def test_engine_with_the_callers_prompt_digests_generates_and_caches_the_same(given: bool) -> None:
    cfg = EngineConfig(block_size=16, num_gpu_blocks=64)
    prompt = list(range(1000, 1075))
    digests = BlockHasher(16).hash_blocks(prompt) if given else None
    eng = SimEngine(cfg)
    eng.add_request(EngineRequest("a", prompt, 40, ignore_eos=True, prompt_block_hashes=digests))
    toks, events, t = [], [], 0.0
    while eng.has_unfinished():
        r = eng.step(t)
        t += r.duration_s
        events += r.kv_events
        toks += [x for o in r.outputs for x in o.new_token_ids]
    ref = SimEngine(cfg)
    ref.add_request(EngineRequest("a", prompt, 40, ignore_eos=True))
    ref_toks, ref_events, t = [], [], 0.0
    while ref.has_unfinished():
        r = ref.step(t)
        t += r.duration_s
        ref_events += r.kv_events
        ref_toks += [x for o in r.outputs for x in o.new_token_ids]
    assert toks == ref_toks == _plain_tokens(TokenGenerator(0).key(prompt), cfg.vocab_size, 40)
    assert events == ref_events and events


def test_engine_refuses_more_prompt_digests_than_full_blocks() -> None:
    eng = SimEngine(EngineConfig(block_size=16, num_gpu_blocks=64))
    with pytest.raises(ValueError, match="prompt_block_hashes: expected at most 2"):
        eng.add_request(EngineRequest("a", list(range(40)), 4, prompt_block_hashes=[b"x" * 32] * 3))
