"""Tokens in, tokens out: the router's tokenizers give the ids the engine computes (local Hugging Face
directory with a chat template, the engine's /tokenize with its cache), and a precise router over a pod
started with the same tokenizer matches the pod's KV blocks exactly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from router_lite.tokenization import EngineTokenizer, HashSettings, LocalTokenizer, RequestTokenizer
from router_lite.types import LLMRequest
from tests.router.procs import MODEL, PRECISE_CONFIG, router, sim_pods, wait_until

pytestmark = pytest.mark.timeout(120)

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    d = tmp_path_factory.mktemp("tok")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    )
    corpus = [f"the quick brown fox {i} jumps over the lazy dog number {i * 7}" for i in range(300)]
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "chat_template": CHAT_TEMPLATE})
    )
    return d


def test_local_tokenizer_matches_the_pods_tokenize(tokenizer_dir):
    local = LocalTokenizer(tokenizer_dir)
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "the lazy dog"}]},
    ]
    with sim_pods(1, events=False, extra=["--tokenizer", str(tokenizer_dir)]) as pod:
        base = f"http://{pod.address()}"

        async def check() -> None:
            engine = EngineTokenizer(lambda: [base])
            try:
                for prompt in ("the quick brown fox 12 jumps", "über ünïcode ✓ text"):
                    assert await local.encode_prompt(MODEL, prompt) == await engine.encode_prompt(MODEL, prompt)
                ids = await local.encode_chat(MODEL, messages, {})
                assert ids == await engine.encode_chat(MODEL, messages, {})
                # The template renders BOS as text; it is encoded once, not added again as a special token.
                bos = local.tok.token_to_id("<s>")
                assert ids[0] == bos and ids.count(bos) == 1
                # The cache answers a repeated prompt without a round trip.
                before = engine.misses
                await engine.encode_chat(MODEL, messages, {})
                assert engine.misses == before and engine.hits >= 1
            finally:
                await engine.aclose()

        asyncio.run(check())


def test_request_tokenizer_hashes_like_the_engine(tokenizer_dir):
    """Block hashes of a prompt the router tokenized equal the hashes of the blocks the pod reports."""
    with sim_pods(1, extra=["--tokenizer", str(tokenizer_dir)]) as pod:
        entries = pod.endpoint_entries()
        with router(entries, PRECISE_CONFIG, ["--tokenizer", str(tokenizer_dir)]) as rt, rt.client() as c:
            prompt = " ".join(f"the quick brown fox {i} jumps over the lazy dog" for i in range(12))
            assert (
                c.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 1}).status_code == 200
            )
            wait_until(lambda: c.get("/debug/endpoints").json()["indexes"]["precise"]["events"] > 0)
            # A second request with the same prefix is matched block for block on the pod that holds it.
            r = c.post("/v1/completions", json={"model": MODEL, "prompt": prompt + " and more", "max_tokens": 1})
            assert r.status_code == 200
            from router_lite.decisions import iter_decisions

            last = None
            for d in iter_decisions(rt.url, history=1, timeout_s=2):
                last = d
                break
            ids = LocalTokenizer(tokenizer_dir).encode_text(prompt + " and more")
            cand = next(x for x in last["candidates"] if x["endpoint"] == pod.address())
            assert cand["prefix_match_blocks"] >= len(LocalTokenizer(tokenizer_dir).encode_text(prompt)) // 16
            assert cand["prefix_match_blocks"] <= len(ids) // 16


def test_token_id_prompts_are_used_as_given():
    async def run() -> None:
        rt = RequestTokenizer(None, lambda: HashSettings(4, "sha256", "vllm-none-hash"))
        req = LLMRequest("r", MODEL)
        await rt.prepare(req, "completions", {"model": MODEL, "prompt": list(range(10))})
        assert req.prompt_token_ids == list(range(10)) and len(req.block_hashes) == 2
        text_req = LLMRequest("t", MODEL)
        await rt.prepare(text_req, "completions", {"model": MODEL, "prompt": "text needs a tokenizer"})
        assert text_req.prompt_token_ids is None and text_req.block_hashes is None

    asyncio.run(run())


async def _ticks_while(coro) -> tuple[object, int]:
    """Await `coro` while a task counts event-loop turns: a blocked loop counts (almost) none."""
    done = False
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = ticks
    try:
        result = await coro
    finally:
        done = True
        await t
    return result, ticks - start


def test_long_prompts_are_tokenized_and_hashed_off_the_event_loop(tokenizer_dir):
    local = LocalTokenizer(tokenizer_dir)
    prompt = " ".join(f"the quick brown fox {i} jumps over the lazy dog" for i in range(20_000))

    async def run() -> None:
        ids, ticks = await _ticks_while(local.encode_prompt(MODEL, prompt))
        assert ids == local.encode_text(prompt) and ticks >= 3
        ids, ticks = await _ticks_while(local.encode_chat(MODEL, [{"role": "user", "content": prompt}], {}))
        assert len(ids) > 100_000 and ticks >= 3
        rt = RequestTokenizer(None, lambda: HashSettings(16, "sha256", "vllm-none-hash"))
        req = LLMRequest("r", MODEL)
        _, ticks = await _ticks_while(rt.prepare(req, "completions", {"model": MODEL, "prompt": list(range(200_000))}))
        assert len(req.block_hashes) == 200_000 // 16 and ticks >= 3

    asyncio.run(run())


def test_chat_template_is_compiled_once_at_load(tokenizer_dir, tmp_path):
    from router_lite.tokenization import TokenizationError

    local = LocalTokenizer(tokenizer_dir)
    compiled = local.tok._compiled
    asyncio.run(local.encode_chat(MODEL, [{"role": "user", "content": "hi"}], {}))
    assert local.tok._compiled is compiled is not None
    (tmp_path / "tokenizer.json").write_bytes((tokenizer_dir / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": "{% for m in messages %}{{ m.content }"})
    )
    with pytest.raises(TokenizationError, match="--tokenizer: chat template"):
        LocalTokenizer(tmp_path)  # a broken template fails at start, not on the first chat request


def test_engine_tokenizer_cache_is_bounded_by_tokens_and_keyed_by_digest():
    with sim_pods(1, events=False) as pod:
        base = f"http://{pod.address()}"

        async def run() -> None:
            engine = EngineTokenizer(lambda: [base], max_cached_tokens=300)
            try:
                prompts = [" ".join(f"w{i}x{j}" for j in range(60)) for i in range(8)]
                lengths = [len(await engine.encode_prompt(MODEL, p)) for p in prompts]
                assert all(n >= 60 for n in lengths)
                assert engine.cached_tokens <= 300 and 0 < len(engine._cache) < len(prompts)
                assert all(isinstance(k, bytes) and len(k) == 16 for k in engine._cache)  # no prompt text held
                before = engine.misses
                assert len(await engine.encode_prompt(MODEL, prompts[-1])) == lengths[-1]  # the newest is still cached
                assert engine.misses == before
                await engine.encode_prompt(MODEL, prompts[0])  # the oldest was evicted
                assert engine.misses == before + 1
                huge = " ".join(f"h{j}" for j in range(400))  # bigger than the whole cache: answered, not cached
                await engine.encode_prompt(MODEL, huge)
                assert engine.cached_tokens <= 300
            finally:
                await engine.aclose()

        asyncio.run(run())
