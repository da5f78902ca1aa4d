"""Each scorer's formula on hand-made endpoint states."""

from __future__ import annotations

import random

import pytest

from kvtiers.kvevents import BlockStored, KVEventBatch
from router_lite.plugins import PluginContext
from router_lite.prefix import PrecisePrefixIndex, PrefixIndexes
from router_lite.registry import lookup, parse_dataclass
from router_lite.types import BLOCK_SIZE, Endpoint, EndpointMetrics, LLMRequest


def ep(port: int, waiting=0, running=0, kv=0.0, role=None, **metrics) -> Endpoint:
    labels = {"llm-d.ai/role": role} if role else {}
    return Endpoint(
        "10.0.0.1",
        port,
        labels=labels,
        metrics=EndpointMetrics(
            waiting_queue_size=waiting, running_requests_size=running, kv_cache_usage_percent=kv, **metrics
        ),
    )


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(type_name: str, params: dict | None = None, ctx: PluginContext | None = None, name: str | None = None):
    pt = lookup(type_name)
    p = parse_dataclass(pt.cls.Params, params or {}, type_name)
    ctx = ctx or PluginContext(indexes=PrefixIndexes(), rng=random.Random(0))
    plugin = pt.cls.create(name or type_name, p, ctx)
    ctx.plugins[plugin.name] = plugin
    index = plugin.needs(params or {}).index
    if index is not None:  # what the Scheduler applies for the plugins it builds
        ctx.indexes.precise.configure(index.tier_weights, index.speculative_ttl_s, index.shared_media)
    return plugin


def req(rid="r", tokens=None, text=None, **kw) -> LLMRequest:
    return LLMRequest(rid, "m", prompt_token_ids=tokens, prompt_text=text, **kw)


def test_queue_scorer_min_max():
    eps = [ep(1, waiting=0), ep(2, waiting=5), ep(3, waiting=10)]
    assert make("queue-scorer").score(req(), eps) == {"10.0.0.1:1": 1.0, "10.0.0.1:2": 0.5, "10.0.0.1:3": 0.0}
    same = [ep(1, waiting=3), ep(2, waiting=3)]
    assert make("queue-scorer").score(req(), same) == {"10.0.0.1:1": 1.0, "10.0.0.1:2": 1.0}


def test_running_requests_size_scorer_min_max():
    eps = [ep(1, running=2), ep(2, running=6), ep(3, running=4)]
    assert make("running-requests-size-scorer").score(req(), eps) == {
        "10.0.0.1:1": 1.0,
        "10.0.0.1:2": 0.0,
        "10.0.0.1:3": 0.5,
    }


def test_kv_cache_utilization_scorer():
    eps = [ep(1, kv=0.0), ep(2, kv=0.25), ep(3, kv=1.0)]
    assert make("kv-cache-utilization-scorer").score(req(), eps) == {
        "10.0.0.1:1": 1.0,
        "10.0.0.1:2": 0.75,
        "10.0.0.1:3": 0.0,
    }


def test_load_aware_scorer_threshold():
    s = make("load-aware-scorer", {"threshold": 10})
    eps = [ep(1, waiting=0), ep(2, waiting=5), ep(3, waiting=10), ep(4, waiting=50)]
    assert s.score(req(), eps) == {"10.0.0.1:1": 0.5, "10.0.0.1:2": 0.25, "10.0.0.1:3": 0.0, "10.0.0.1:4": 0.0}
    default = make("load-aware-scorer")
    assert default.score(req(), [ep(1, waiting=64)]) == {"10.0.0.1:1": 0.25}  # default threshold 128


def test_active_request_scorer_reads_the_routers_in_flight_counts():
    """Counts come from the shared tracker (exact per leg: tests/router/test_inflight_load.py)."""
    ctx = PluginContext(indexes=PrefixIndexes(), clock=Clock())
    s = make("active-request-scorer", {"requestTimeout": "10s"}, ctx)  # accepted, ignored as upstream now does
    a, b, c = ep(1), ep(2), ep(3)
    assert s.score(req(), [a, b, c]) == {a.key: 1.0, b.key: 1.0, c.key: 1.0}
    for i in range(4):
        ctx.inflight.dispatch(f"a{i}", a.key, 0)
    ctx.inflight.dispatch("b0", b.key, 0)
    assert s.score(req(), [a, b, c]) == {a.key: 0.0, b.key: 0.75, c.key: 1.0}
    ctx.inflight.finish("a0", a.key)
    ctx.inflight.finish("a1", a.key)
    assert s.score(req(), [a, b, c]) == {a.key: 0.0, b.key: 0.5, c.key: 1.0}  # max is now 2
    assert s.counts == {a.key: 2, b.key: 1}


def test_prefix_cache_scorer_fraction_and_credit_on_route():
    s = make("prefix-cache-scorer", {"blockSizeTokens": 4, "autoTune": False})
    a, b = ep(1), ep(2)
    first = req("r1", tokens=list(range(16)))  # 4 blocks
    assert s.score(first, [a, b]) == {a.key: 0.0, b.key: 0.0}
    s.on_routed(first, a, "default")
    second = req("r2", tokens=list(range(8)) + [99] * 8)  # shares 2 of 4 blocks
    assert s.score(second, [a, b]) == {a.key: 0.5, b.key: 0.0}
    assert s.prefix_match(second) == ({a.key: 2}, 4)
    short = req("r3", tokens=[1, 2])  # under one block: nothing to match
    assert s.score(short, [a, b]) == {a.key: 0.0, b.key: 0.0}


def test_prefix_cache_scorer_text_fallback_and_auto_tune():
    s = make("prefix-cache-scorer", {"blockSize": 8})
    a, b = ep(1), ep(2)
    text = "system prompt shared by all requests " * 4  # 148 chars -> 18 blocks of 8
    s.on_routed(req("r1", text=text), b, "default")
    r = req("r2", text=text + " and a new question")
    scores = s.score(r, [a, b])
    assert scores[a.key] == 0.0 and scores[b.key] == pytest.approx(18 / 20)
    # auto-tune: tokens per block from the engine's reported block size
    t = make("prefix-cache-scorer", {}, name="p2")
    c = ep(3, block_size=32)
    r2 = req("r3", tokens=list(range(100)))
    t.score(r2, [c])
    assert t.prefix_match(r2)[1] == 32


def test_prefix_cache_scorer_max_blocks():
    s = make("prefix-cache-scorer", {"blockSizeTokens": 1, "maxPrefixBlocksToMatch": 5, "autoTune": False})
    a = ep(1)
    r = req("r", tokens=list(range(50)))
    s.on_routed(r, a, "default")
    assert s.score(req("r2", tokens=list(range(50))), [a]) == {a.key: 1.0}
    assert s.index.blocks_of(a.key) == 5


def _precise_ctx():
    clock = Clock()
    idx = PrefixIndexes(precise=PrecisePrefixIndex(clock=clock))
    return PluginContext(indexes=idx, rng=random.Random(0), clock=clock), idx


def test_precise_prefix_cache_scorer_tier_weighted_fraction():
    ctx, idx = _precise_ctx()
    s = make("precise-prefix-cache-scorer", {"tokenProcessorConfig": {"blockSize": 4}}, ctx)
    a, b, c = ep(1), ep(2), ep(3)
    r = req("r", tokens=list(range(16)))
    hashes = s.params.block_hashes(r.prompt_token_ids)
    assert len(hashes) == 4 and all(isinstance(h, int) for h in hashes)
    idx.precise.apply(
        a.key,
        0,
        KVEventBatch(0.0, [BlockStored(block_hashes=hashes, parent_block_hash=None, token_ids=[], block_size=4)]),
    )
    idx.precise.apply(
        b.key,
        0,
        KVEventBatch(
            0.0,
            [BlockStored(block_hashes=hashes[:2], parent_block_hash=None, token_ids=[], block_size=4, medium="CPU")],
        ),
    )
    scores = s.score(r, [a, b, c])
    assert scores == {a.key: 1.0, b.key: pytest.approx(0.4), c.key: 0.0}
    assert s.prefix_match(r) == ({a.key: 4, b.key: 2}, 4)
    # Gateway-precomputed hashes are used as given.
    r2 = req("r2", tokens=None, block_hashes=hashes[:1] + [12345])
    assert s.score(r2, [a, b]) == {a.key: 0.5, b.key: pytest.approx(0.4)}


def test_precise_prefix_cache_scorer_min_max_and_backend_weights():
    ctx, idx = _precise_ctx()
    s = make(
        "precise-prefix-cache-scorer",
        {
            "tokenProcessorConfig": {"blockSize": 4},
            "indexerConfig": {
                "kvCacheBackendConfigs": [{"name": "gpu", "weight": 1.0}, {"name": "cpu", "weight": 0.5}]
            },
            "scoreNormalization": "min-max",
        },
        ctx,
    )
    a, b, c = ep(1), ep(2), ep(3)
    r = req("r", tokens=list(range(16)))
    hashes = s.params.block_hashes(r.prompt_token_ids)
    idx.precise.apply(
        a.key,
        0,
        KVEventBatch(0.0, [BlockStored(block_hashes=hashes, parent_block_hash=None, token_ids=[], block_size=4)]),
    )
    idx.precise.apply(
        b.key,
        0,
        KVEventBatch(
            0.0, [BlockStored(block_hashes=hashes, parent_block_hash=None, token_ids=[], block_size=4, medium="CPU")]
        ),
    )
    assert idx.precise.match(hashes)[b.key] == (4, 2.0)  # cpu weight from kvCacheBackendConfigs
    assert s.score(r, [a, b, c]) == {a.key: 1.0, b.key: 0.0, c.key: 0.0}


def test_precise_scorer_speculative_credit_on_route():
    ctx, idx = _precise_ctx()
    s = make("precise-prefix-cache-scorer", {"tokenProcessorConfig": {"blockSize": 4}, "speculativeTtl": "1s"}, ctx)
    a, b = ep(1), ep(2)
    r = req("r", tokens=list(range(16)))
    s.on_routed(r, a, "default")
    r2 = req("r2", tokens=list(range(16)))
    assert s.score(r2, [a, b]) == {a.key: 1.0, b.key: 0.0}
    ctx.clock.t = 5.0
    assert s.score(req("r3", tokens=list(range(16))), [a, b]) == {a.key: 0.0, b.key: 0.0}


def test_precise_scorer_hashes_like_the_engine(capture):
    """The scorer's own hashes of a captured step's tokens equal the hashes real vLLM published."""
    import base64

    from kvtiers import decode_frames

    entry = capture["captures"][2]  # PYTHONHASHSEED=42
    seed = entry["config"]["PYTHONHASHSEED"]
    ctx, idx = _precise_ctx()
    s = make("precise-prefix-cache-scorer", {"tokenProcessorConfig": {"blockSize": 32, "hashSeed": seed}}, ctx)
    step = next(st for st in entry["steps"] if st["name"] == "chat")
    published = []
    for m in step["messages"]:
        published += decode_frames([base64.b64decode(f) for f in m["frames_b64"]])[2].events[0].block_hashes
    ours = s.params.block_hashes(step["prompt_token_ids"] + step["output_token_ids"])
    assert ours[: len(published)] == published and published


def _gateway_request(rid: str, tokens: list[int], block_size: int) -> LLMRequest:
    """A request as the gateway prepares it: tokens, block hashes at the gateway's block size, state BLOCK_SIZE."""
    import asyncio

    from router_lite.tokenization import HashSettings, RequestTokenizer

    r = req(rid)
    asyncio.run(
        RequestTokenizer(None, lambda: HashSettings(block_size)).prepare(
            r, "completions", {"model": "m", "prompt": tokens}
        )
    )
    assert r.state.get(BLOCK_SIZE) == block_size and len(r.block_hashes) == len(tokens) // block_size
    return r


def test_precise_scorer_reports_the_block_size_the_gateway_hashed_with():
    """The engines use 64-token blocks (cache_config_info) while the scorer's blockSize is left at 16: the
    matched blocks are the gateway's 64-token hashes, so cached tokens = blocks x 64."""
    ctx, idx = _precise_ctx()
    s = make("precise-prefix-cache-scorer", {}, ctx)
    assert s.params.block_size == 16
    a, b = ep(1), ep(2)
    r = _gateway_request("r", list(range(640)), 64)
    idx.precise.apply(
        a.key,
        0,
        KVEventBatch(
            0.0, [BlockStored(block_hashes=r.block_hashes[:6], parent_block_hash=None, token_ids=[], block_size=64)]
        ),
    )
    assert s.score(r, [a, b]) == {a.key: pytest.approx(0.6), b.key: 0.0}
    assert s.prefix_match(r) == ({a.key: 6}, 64)
    # Hashes the scorer derives itself (no gateway hashes) are at its own blockSize.
    own = req("own", tokens=list(range(640)))
    assert s.prefix_match(own)[1] == 16 and len(s._hashes(own)) == 40


def test_session_affinity_scorer():
    from router_lite.plugins.scorers.session_affinity import encode_session_token

    s = make("session-affinity-scorer")
    a, b = ep(1), ep(2)
    r = req(headers={"x-session-token": encode_session_token(b.key)})
    assert s.score(r, [a, b]) == {a.key: 0.0, b.key: 1.0}
    assert s.score(req(), [a, b]) == {a.key: 0.0, b.key: 0.0}
    assert s.score(req(headers={"x-session-token": "%%%not-base64"}), [a, b]) == {a.key: 0.0, b.key: 0.0}


def test_lora_affinity_scorer():
    s = make("lora-affinity-scorer")
    active = ep(1, active_models={"sql"}, max_active_models=2)
    waiting = ep(2, waiting_models={"sql"}, max_active_models=1)
    room = ep(3, active_models={"other"}, max_active_models=2)
    full = ep(4, active_models={"x", "y"}, max_active_models=2)
    scores = s.score(req(lora_name="sql"), [active, waiting, room, full])
    assert scores == {active.key: 1.0, waiting.key: 1.0, room.key: 0.8, full.key: 0.0}
    assert set(s.score(req(), [active, full]).values()) == {1.0}


def test_no_hit_lru_scorer_spreads_cold_requests():
    ctx = PluginContext(indexes=PrefixIndexes(), rng=random.Random(0))
    prefix = make("prefix-cache-scorer", {"blockSizeTokens": 4, "autoTune": False}, ctx)
    s = make("no-hit-lru-scorer", {}, ctx)
    s.bind()
    a, b, c = ep(1), ep(2), ep(3)
    cold = req("c1", tokens=list(range(100, 116)))
    assert s.score(cold, [a, b, c]) == {a.key: 1.0, b.key: 0.5, c.key: 0.0}  # all never used: list order
    s.on_routed(cold, a, "default")
    cold2 = req("c2", tokens=list(range(200, 216)))
    assert s.score(cold2, [a, b, c]) == {b.key: 1.0, c.key: 0.5, a.key: 0.0}  # a was used most recently
    s.on_routed(cold2, b, "default")
    cold3 = req("c3", tokens=list(range(300, 316)))
    assert s.score(cold3, [a, b, c]) == {c.key: 1.0, a.key: 0.5, b.key: 0.0}
    # A request with a prefix hit somewhere is neutral and does not move the LRU.
    prefix.on_routed(req("w", tokens=list(range(16))), c, "default")
    warm = req("w2", tokens=list(range(16)))
    assert s.score(warm, [a, b, c]) == {a.key: 0.5, b.key: 0.5, c.key: 0.5}
    s.on_routed(warm, a, "default")
    assert list(s.lru) == [a.key, b.key]


def test_every_scorer_returns_a_score_per_endpoint_in_range():
    eps = [ep(i, waiting=i, running=i * 2, kv=i / 10) for i in range(1, 6)]
    ctx = PluginContext(indexes=PrefixIndexes(), rng=random.Random(0))
    names = [
        "queue-scorer",
        "running-requests-size-scorer",
        "kv-cache-utilization-scorer",
        "load-aware-scorer",
        "active-request-scorer",
        "prefix-cache-scorer",
        "precise-prefix-cache-scorer",
        "session-affinity-scorer",
        "lora-affinity-scorer",
        "no-hit-lru-scorer",
    ]
    for n in names:
        s = make(n, {}, ctx)
        s.bind()
        out = s.score(req(tokens=list(range(64))), eps)
        assert set(out) == {e.key for e in eps}, n
        assert all(0.0 <= v <= 1.0 for v in out.values()), n
