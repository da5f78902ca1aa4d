"""prefix-cache-scorer: llm-d's approximate prefix-cache scorer, fed by what this router routed where.

The prompt is cut into blocks (tokens when the gateway tokenized it, else `blockSize` characters, as llm-d
does for untokenized prompts), chained-hashed, and looked up in a per-endpoint LRU of blocks previously
sent there. score = consecutive matched blocks / total blocks. After routing, the chosen endpoint is
credited with every block of the request.

llm-d's split shape: with `prefixMatchInfoProducerName` the scorer reads the named producer's match instead
of keeping its own index (a precise-prefix-cache-producer makes it the precise scorer, fraction-normalised).
llm-d's older `mode: cache_tracking` shape (indexerConfig / kvEventsConfig on this scorer) meant the precise
scorer; `upgrade` rewrites it to precise-prefix-cache-scorer at load time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from router_lite.cycle_state import StateKey
from router_lite.plugins import Scorer
from router_lite.prefix.approximate import CHARS_PER_TOKEN, LazyBlockHashes
from router_lite.registry import ConfigError, register
from router_lite.types import Endpoint, LLMRequest


@dataclass
class PrefixCacheParams:
    block_size: int = 64  # characters per block when the prompt is not tokenized (GIE's blockSize)
    block_size_tokens: int = 16  # tokens per block when it is (vLLM's default block size)
    max_prefix_blocks_to_match: int = 256
    lru_capacity_per_server: int = 31250
    auto_tune: bool = True  # take tokens per block from the endpoints' reported cache_config_info block_size
    prefix_match_info_producer_name: str = ""  # read this producer's match instead of an own index
    mode: Literal["", "cache_tracking"] = ""  # "cache_tracking": llm-d's older precise shape (see upgrade)

    ALIASES = {"hashBlockSize": "blockSize"}  # llm-d's earlier name

    def validate(self) -> str | None:
        for name, v in (
            ("blockSize", self.block_size),
            ("blockSizeTokens", self.block_size_tokens),
            ("maxPrefixBlocksToMatch", self.max_prefix_blocks_to_match),
            ("lruCapacityPerServer", self.lru_capacity_per_server),
        ):
            if v <= 0:
                return f"{name}: expected a positive integer, got {v}"
        return None


@register
class PrefixCacheScorer(Scorer):
    type_name = "prefix-cache-scorer"
    aliases = ("prefix-cache",)
    Params = PrefixCacheParams
    reports_prefix = True

    _CACHE_TRACKING_KEYS = ("mode", "indexerConfig", "kvEventsConfig", "tokenProcessorConfig")

    def __init__(self, name, params: PrefixCacheParams, ctx) -> None:
        super().__init__(name, params, ctx)
        self._source: Any = None  # the producer named by prefixMatchInfoProducerName, once bound
        self.index = (
            None
            if params.prefix_match_info_producer_name
            else ctx.indexes.approximate_for(name, params.lru_capacity_per_server)
        )
        self._hashes_key: StateKey[tuple[LazyBlockHashes, int]] = StateKey(f"prefix-cache:{name}:hashes")
        self._match_key: StateKey[dict[str, int]] = StateKey(f"prefix-cache:{name}:match", per_cycle=True)

    @classmethod
    def upgrade(cls, raw: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """llm-d's `mode: cache_tracking` prefix-cache-scorer is the precise scorer: (new type, its parameters)."""
        if raw.get("mode") != "cache_tracking":
            return None
        out = {k: v for k, v in raw.items() if k != "mode"}
        return "precise-prefix-cache-scorer", out

    def bind(self) -> None:
        name = self.params.prefix_match_info_producer_name
        if not name:
            return
        p = self.ctx.plugins.get(name)
        if p is None:
            raise ConfigError(
                f"plugin {self.name!r} (prefix-cache-scorer): prefixMatchInfoProducerName {name!r} names no plugin"
            )
        if p.kind != "producer" or not getattr(p, "reports_prefix", False):
            raise ConfigError(
                f"plugin {self.name!r} (prefix-cache-scorer): prefixMatchInfoProducerName {name!r} is a {p.type_name}, "
                "expected a prefix producer (precise-prefix-cache-producer or approx-prefix-cache-producer)"
            )
        self._source = p
        if hasattr(p, "prefix_tiers"):
            self.prefix_tiers = p.prefix_tiers  # tiered decisions, as the precise scorer reports them

    def _hashes(self, request: LLMRequest, endpoints: list[Endpoint] | None = None) -> tuple[LazyBlockHashes, int]:
        """(lazy block hashes, tokens per block) for the request, memoised on it."""
        memo = request.state.get(self._hashes_key)
        if memo is not None:
            return memo
        p: PrefixCacheParams = self.params
        model = request.effective_model
        if request.prompt_token_ids is not None:
            bs = p.block_size_tokens
            if p.auto_tune and endpoints:
                for e in endpoints:
                    if e.metrics.block_size:
                        bs = e.metrics.block_size
                        break
            tokens = _items_in_place(request.prompt_token_ids, request.mm_items)
            hashes = LazyBlockHashes(model, tokens, bs, p.max_prefix_blocks_to_match)
        else:
            bs = max(1, p.block_size // CHARS_PER_TOKEN)
            hashes = LazyBlockHashes(model, request.prompt_text or "", p.block_size, p.max_prefix_blocks_to_match)
        return request.state.set(self._hashes_key, (hashes, bs))

    def _match(self, request: LLMRequest, endpoints: list[Endpoint] | None) -> dict[str, int]:
        m = request.state.get(self._match_key)
        if m is None:
            hashes, _ = self._hashes(request, endpoints)
            m = request.state.set(self._match_key, self.index.match(hashes))
        return m

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        if self._source is not None:
            return self._source.score(request, endpoints)
        hashes, _ = self._hashes(request, endpoints)
        total = len(hashes)
        if total == 0:
            return dict.fromkeys([e.key for e in endpoints], 0.0)
        matches = self._match(request, endpoints)
        if not matches:
            return dict.fromkeys([e.key for e in endpoints], 0.0)
        return {e.key: matches.get(e.key, 0) / total for e in endpoints}

    def prefix_match(
        self, request: LLMRequest, endpoints: list[Endpoint] | None = None
    ) -> tuple[dict[str, int], int] | None:
        if self._source is not None:
            return self._source.prefix_match(request, endpoints)
        return self._match(request, endpoints), self._hashes(request)[1]

    def prompt_blocks(self, request: LLMRequest) -> int:
        """Full blocks of the request's prompt, in the unit `prefix_match` counts."""
        if self._source is not None:
            return self._source.engine.prompt_blocks(request)
        return len(self._hashes(request)[0])

    def on_routed(self, request: LLMRequest, endpoint: Endpoint, profile: str) -> None:
        if self._source is not None:
            self._source.on_routed(request, endpoint, profile)
            return
        hashes, _ = self._hashes(request, [endpoint])
        if len(hashes):
            self.index.add(endpoint.key, hashes.all())


def _items_in_place(token_ids: list[int], mm_items: list[tuple[str, int, int]]) -> list:
    """Token ids with each multimodal item's placeholder run replaced by the item's identifier: two images of
    one size are runs of the same placeholder token, and would otherwise hash as one shared prefix (vLLM keys
    those blocks by the item's hash too)."""
    if not mm_items:
        return token_ids
    out: list = list(token_ids)
    for identifier, offset, count in mm_items:
        out[offset : offset + count] = [identifier] * count
    return out
