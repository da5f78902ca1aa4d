"""Multimodal inputs in the simulator: chat parts as placeholder tokens, vLLM's mm block-hash keys, encoder time
in the engine, and the encode role of E/P/D over HTTP on real processes."""

from __future__ import annotations

import base64
import struct
import time
import zlib

import httpx
import pytest

from kvtiers.hashing import BlockHasher, block_extra_keys, mm_block_keys
from kvtiers.tokenizer import BuiltinTokenizer
from router_lite import promtext
from sim_gpu import api, multimodal
from sim_gpu.api import APIError, ServedModel
from sim_gpu.clock import VirtualClock
from sim_gpu.engine import EngineConfig, EngineRequest, SimEngine
from sim_gpu.latency import LatencyModel
from sim_gpu.metrics import SLOW_PAGE_MAX_AGE_S
from tests.sim.simproc import sim_server

H100_8B = LatencyModel.from_names("H100", "Llama-3.1-8B")


def png(width: int, height: int) -> str:
    """A tiny valid PNG header as a data URL (only the size matters to the simulator)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def chat(*parts: dict, text: str = "What is in this picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, *parts]}]


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def test_parts_become_placeholder_tokens_where_they_sit():
    served = ServedModel("m", 8192, BuiltinTokenizer())
    msgs = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "before"},
                image(png(672, 448)),  # 24 x 16 tokens of 28 px
                {"type": "text", "text": "between"},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            ],
        }
    ]
    req = api.parse_chat({"messages": msgs, "max_tokens": 2}, served)
    ids = req.prompts[0]
    (id1, off1, n1), (id2, off2, n2) = req.mm_items
    assert (n1, n2) == (24 * 16, multimodal.AUDIO_TOKENS)
    ph = served.tokenizer.vocab_size - 1
    assert ids[off1 : off1 + n1] == [ph] * n1 and ids[off2 : off2 + n2] == [ph] * n2
    assert off1 < off2 - n1 and ph not in ids[off1 + n1 : off2]  # text between the two items
    text_only = api.parse_chat({"messages": [{"role": "user", "content": "beforebetween"}], "max_tokens": 2}, served)
    assert len(ids) > len(text_only.prompts[0]) + n1 + n2 - 10
    assert api.tokenize({"messages": msgs}, served)["count"] == len(ids)  # /tokenize counts the same
    other = api.parse_chat({"messages": chat(image("https://x/a.jpg")), "max_tokens": 2}, served)
    assert other.mm_items[0][2] == multimodal.IMAGE_TOKENS and other.mm_items[0][0] != id1
    with pytest.raises(APIError, match=r"messages\[0\].content\[1\].image_url"):
        api.parse_chat({"messages": chat({"type": "image_url", "image_url": {}}), "max_tokens": 2}, served)


def test_mm_block_keys_follow_vllms_rule():
    items = [("img", 20, 40)]  # placeholders 20..59, blocks of 16
    assert mm_block_keys(0, 16, items) == []
    assert mm_block_keys(16, 32, items) == [("img", 4)]
    assert mm_block_keys(48, 64, items) == [("img", -28)]  # began in an earlier block
    assert mm_block_keys(64, 80, items) == []
    assert block_extra_keys(1, "s", "lora", [("img", 4)]) == (("lora", "lora"), ("img", 4))
    h = BlockHasher(16)
    toks = list(range(64))
    a, b = h.hash_blocks(toks, mm_items=[("a", 20, 40)]), h.hash_blocks(toks, mm_items=[("b", 20, 40)])
    assert a[0] == b[0] and a[1] != b[1]  # the block before the image is shared, the image's blocks are not
    memo = BlockHasher(16, memo_blocks=100)
    assert memo.hash_blocks(toks, mm_items=[("a", 20, 40)]) == a


def _first_token_s(eng: SimEngine, req: EngineRequest) -> float:
    clock = VirtualClock()
    eng.add_request(req)
    for _ in range(1000):
        res = eng.step(clock.now())
        clock.advance(res.duration_s)
        if any(o.first_token for o in res.outputs):
            t = clock.now()
            while eng.has_unfinished():
                clock.advance(eng.step(clock.now()).duration_s)
            return t
    raise AssertionError("no first token")


def test_the_engine_encodes_new_items_once_and_never_shares_kv_across_images():
    eng = SimEngine(EngineConfig(latency=H100_8B, num_gpu_blocks=2000))
    prompt = [7] * 20 + [31999] * 576 + [8] * 20
    cat, dog = [("cat", 20, 576)], [("dog", 20, 576)]
    base = _first_token_s(eng, EngineRequest("text", [9] * 616, 1))
    first = _first_token_s(eng, EngineRequest("cat1", prompt, 1, mm_items=cat))
    assert first - base == pytest.approx(multimodal.encode_time(H100_8B, 576), rel=0.05)
    again = _first_token_s(eng, EngineRequest("cat2", prompt, 1, mm_items=cat))
    assert again < first / 2  # the image's KV is cached: neither encoder nor prefill runs again
    other = _first_token_s(eng, EngineRequest("dog", prompt, 1, mm_items=dog))
    assert other == pytest.approx(first, rel=0.05)  # same tokens, another image: nothing reused
    eng2 = SimEngine(EngineConfig(latency=H100_8B, num_gpu_blocks=2000))
    pulled = _first_token_s(eng2, EngineRequest("e", prompt, 1, mm_items=cat, mm_encode=False))
    assert pulled == pytest.approx(base, rel=0.05)  # embeddings from an encode pod: no encoder here


def _prefill_sum(base: str) -> float:
    """vLLM's prefill-time histogram sum, read fresh: the page reuses its per-request histograms for up to
    SLOW_PAGE_MAX_AGE_S, so wait that long first."""
    time.sleep(SLOW_PAGE_MAX_AGE_S + 0.05)
    text = httpx.get(base + "/metrics").text
    samples = promtext.parse(text, ("vllm:request_prefill_time_seconds_sum",))
    return sum(v for name, _, v in samples if name == "vllm:request_prefill_time_seconds_sum")


def test_encode_pod_answers_ec_params_and_the_prefill_pod_skips_its_encoder():
    msgs = chat(image(png(1344, 896)))  # 48 x 32 = 1536 tokens
    with sim_server("--time-scale", "0", "--role", "encode") as enc, sim_server("--time-scale", "0") as pd:
        body = {"model": "sim-model", "messages": msgs, "max_tokens": 1}
        r = httpx.post(enc.base + "/v1/chat/completions", json=body, timeout=10)
        assert r.status_code == 200
        ec = r.json()["ec_transfer_params"]
        assert ec["num_encoder_tokens"] == 1536 and len(ec["mm_hashes"]) == 1
        assert ec["embedding_bytes"] == 1536 * 4096 * 2 and ec["remote_port"] == enc.port
        assert r.json()["usage"]["completion_tokens"] == 0
        m = httpx.post(pd.base + "/v1/chat/completions", json=body, timeout=10)
        assert m.status_code == 200
        local = _prefill_sum(pd.base)
        salted = {**body, "cache_salt": "fresh", "ec_transfer_params": ec}  # salt: no prefix hit from the first
        assert httpx.post(pd.base + "/v1/chat/completions", json=salted, timeout=10).status_code == 200
        remote = _prefill_sum(pd.base) - local
        assert local - remote == pytest.approx(multimodal.encode_time(H100_8B, 1536), rel=0.1)
        bad = httpx.post(pd.base + "/v1/chat/completions", json={**body, "ec_transfer_params": [1]}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "ec_transfer_params"
