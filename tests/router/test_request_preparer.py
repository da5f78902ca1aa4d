"""The planner's request preparer: block hashes as the live gateway computes them, a repeated prompt object
served from what it hashed to, and anything that changes the hashes (another prompt, a salt, a LoRA) hashed."""

from __future__ import annotations

import random

from router_lite.plugins import Needs
from router_lite.tokenization import HashSettings, PromptHasher, request_preparer
from router_lite.types import BLOCK_DIGESTS, BLOCK_SIZE, LLMRequest

SETTINGS = HashSettings(block_size=16, algo="sha256", seed="vllm-none-hash")


def _expected(prompt: list[int], salt: str | None = None, lora: str | None = None) -> LLMRequest:
    req = LLMRequest("ref", "m", prompt_token_ids=prompt, cache_salt=salt, lora_name=lora)
    PromptHasher().prepare(req, SETTINGS)
    return req


def test_repeated_prompt_objects_get_the_hashes_a_fresh_hasher_computes():
    rng = random.Random(5)
    shared = [rng.randrange(150_000) for _ in range(200)]
    prompts = [shared + [rng.randrange(150_000) for _ in range(40)] for _ in range(3)]
    prepare = request_preparer(Needs(block_hashes=True), (16, "sha256", "vllm-none-hash"))
    for rep in range(3):
        for i, p in enumerate(prompts):
            for salt, lora in ((None, None), ("tenant", None), (None, "adapter")):
                req = LLMRequest(f"r{rep}-{i}", "m", prompt_token_ids=p, cache_salt=salt, lora_name=lora)
                prepare(req)
                ref = _expected(p, salt, lora)
                assert req.block_hashes == ref.block_hashes
                assert req.state.get(BLOCK_SIZE) == 16
                assert req.state.get(BLOCK_DIGESTS) == ref.state.get(BLOCK_DIGESTS)
    # an equal prompt in another list object, and a different prompt, are hashed for what they hold
    copy = list(prompts[0])
    req = LLMRequest("copy", "m", prompt_token_ids=copy)
    prepare(req)
    assert req.block_hashes == _expected(copy).block_hashes
    other = prompts[1][:100]
    req = LLMRequest("other", "m", prompt_token_ids=other)
    prepare(req)
    assert req.block_hashes == _expected(other).block_hashes != _expected(prompts[1]).block_hashes


def test_no_hashing_when_no_plugin_matches_block_hashes():
    req = LLMRequest("r", "m", prompt_token_ids=list(range(64)))
    request_preparer(Needs(), (16, "sha256", None))(req)
    assert req.block_hashes is None and req.state.get(BLOCK_DIGESTS) is None
