"""The router hashes a multimodal chat as the pods do: images, video and audio as placeholder tokens where they
sit, and each item's identifier in the extra keys of every block its placeholders overlap (vLLM's rule).
Hashed without the identifiers, two requests with different images look like one shared cached prefix, and a
prefix-aware router herds every image request onto one pod."""

from __future__ import annotations

import asyncio

from kvtiers.hashing import BlockHasher, to_event_hashes
from kvtiers.multimodal import MMInput, locate
from kvtiers.tokenizer import BuiltinTokenizer as PodTokenizer
from router_lite.tokenization import BuiltinTokenizer, HashSettings, RequestTokenizer
from router_lite.types import LLMRequest
from sim_gpu import api
from sim_gpu.api import ServedModel
from tests.sim.test_multimodal import image, png

SETTINGS = HashSettings(16, "sha256", "vllm-none-hash")
SYSTEM = {"role": "system", "content": "You describe pictures for a museum catalogue, in two sentences. " * 4}


def _chat(url: str) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": [image(url), {"type": "text", "text": "What is this?"}]}]


def _routed(messages: list[dict]) -> LLMRequest:
    req = LLMRequest("r", "m", prompt_text="")
    asyncio.run(RequestTokenizer(BuiltinTokenizer(), lambda: SETTINGS).prepare(req, "chat", {"messages": messages}))
    return req


def test_router_tokens_items_and_hashes_equal_the_pods():
    messages = _chat(png(560, 420))  # 20 x 15 placeholder tokens
    routed = _routed(messages)
    pod = api.parse_chat({"messages": messages, "max_tokens": 2}, ServedModel("m", 8192, PodTokenizer()))
    assert routed.prompt_token_ids == pod.prompts[0]
    assert routed.mm_items == pod.mm_items and routed.mm_items[0][2] == 300
    pod_hashes = BlockHasher(16, "sha256", "vllm-none-hash").hash_blocks(pod.prompts[0], mm_items=pod.mm_items)
    assert routed.block_hashes == to_event_hashes(pod_hashes)


def test_different_images_after_a_shared_system_prompt_share_only_the_text_blocks():
    a, b = _routed(_chat(png(560, 420))), _routed(_chat(png(548, 420)))  # same token count, other image
    assert a.prompt_token_ids == b.prompt_token_ids  # placeholders alone cannot tell the images apart
    first_image_block = a.mm_items[0][1] // 16
    assert a.block_hashes[:first_image_block] == b.block_hashes[:first_image_block]
    assert all(x != y for x, y in zip(a.block_hashes[first_image_block:], b.block_hashes[first_image_block:]))
    same = _routed(_chat(png(560, 420)))
    assert same.block_hashes == a.block_hashes


def test_items_found_in_an_engines_expanded_tokens():
    served = ServedModel("m", 8192, PodTokenizer())
    messages = [
        SYSTEM,
        {"role": "user", "content": [image(png(56, 56)), image(png(84, 56)), {"type": "text", "text": "Compare."}]},
    ]
    pod = api.parse_chat({"messages": messages, "max_tokens": 2}, served)
    tokens = api.tokenize({"messages": messages}, served)["tokens"]  # what a pod's /tokenize answers
    items = [MMInput("image", ident, n) for ident, _, n in pod.mm_items]
    assert locate(tokens, items) == pod.mm_items  # two adjacent images: one run, split by their counts
    assert locate(tokens[:-40], items + [MMInput("audio", "x", 750)]) is None


def test_approximate_prefix_scorer_tells_two_images_apart():
    """llm-d's approximate prefix-cache-scorer hashes its own chunks: an image's placeholders enter as the item."""
    from router_lite.plugins.scorers.prefix_cache import _items_in_place
    from router_lite.prefix.approximate import LazyBlockHashes

    a, b = _routed(_chat(png(560, 420))), _routed(_chat(png(548, 420)))
    ha, hb = (LazyBlockHashes("m", _items_in_place(r.prompt_token_ids, r.mm_items), 16, 256).all() for r in (a, b))
    first_image_block = a.mm_items[0][1] // 16
    assert ha[:first_image_block] == hb[:first_image_block]
    assert all(x != y for x, y in zip(ha[first_image_block:], hb[first_image_block:]))
    plain = LazyBlockHashes("m", a.prompt_token_ids, 16, 256).all()
    assert plain == LazyBlockHashes("m", b.prompt_token_ids, 16, 256).all()  # what it hashed before: one prefix


def test_locate_takes_only_whole_items_on_one_placeholder():
    ph, text = 99, [5, 6, 7, 8]
    one, two = MMInput("image", "a", 4), MMInput("image", "b", 6)
    prompt = text + [3, 3, 3, 3, 3] + text + [ph] * 10 + text  # a run of repeated text before the images
    assert locate(prompt, [one, two]) == [("a", 13, 4), ("b", 17, 6)]
    assert locate(text + [ph] * 12 + text, [one, two]) is None  # the router counts 10, the engine expanded 12
    assert locate(text + [ph] * 4 + text + [7] * 6 + text, [one, two]) is None  # the second run is not the placeholder
    assert locate(text, []) == []
