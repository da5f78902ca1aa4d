"""precise-prefix-cache-scorer: llm-d's KV-event-driven prefix scorer over the global precise index.

The request's blocks are hashed exactly as the engine hashes them (vLLM's chained sha256 with the same
seed and block size; the gateway precomputes `request.block_hashes` and records their block size in
`request.state` BLOCK_SIZE, else they are derived here from `prompt_token_ids` with `blockSize`).
Each endpoint scores its longest consecutive cached prefix, tier-weighted, divided by the request's block
count (`scoreNormalization: fraction`), or llm-d's min-max over the endpoints with hits.
After routing, the chosen endpoint is credited speculatively until its own events confirm the blocks.

Parameters follow llm-d's shape where this router can honour them: `tokenProcessorConfig` (blockSize,
hashSeed), `indexerConfig.kvCacheBackendConfigs` (tier weights, e.g. [{name: gpu, weight: 1.0}, {name:
cpu, weight: 0.8}]), `indexerConfig.tokenizersPoolConfig` (model / local tokenizer), `kvEventsConfig`
(zmqEndpoint, topicFilter, discoverPods, podDiscoveryConfig.socketPort) for the subscriber. Anything else
is rejected by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kvtiers.hashing import HASH_ALGOS, BlockHasher, to_event_hash
from router_lite.cycle_state import StateKey
from router_lite.plugins import IndexSettings, Needs, Scorer
from router_lite.plugins.scorers.active_request import parse_duration
from router_lite.registry import register
from router_lite.types import BLOCK_SIZE, Endpoint, LLMRequest


@dataclass
class TokenProcessorConfig:
    block_size: int = 16
    hash_seed: str = ""  # the engines' PYTHONHASHSEED; "" = vLLM's default seed

    def validate(self) -> str | None:
        return None if self.block_size > 0 else f"blockSize: expected a positive integer, got {self.block_size}"


@dataclass
class BackendConfig:
    name: str = ""
    weight: float = 1.0

    def validate(self) -> str | None:
        if not self.name:
            return "name: required (a KV medium such as gpu, cpu, disk)"
        return None if self.weight >= 0 else f"weight: expected a non-negative number, got {self.weight}"


@dataclass
class InMemoryConfig:
    size: int = 100_000_000
    pod_cache_size: int = 10


@dataclass
class KVBlockIndexConfig:
    in_memory_config: InMemoryConfig | None = None
    enable_metrics: bool = False
    metrics_logging_interval: str | int = 0  # a duration ("1m0s") or nanoseconds, as llm-d accepts both


@dataclass
class LocalTokenizerConfig:
    model_tokenizer_map: dict[str, str] = field(default_factory=dict)
    auto_discovery_dir: str = ""


@dataclass
class UDSConfig:
    socket_file: str = ""


@dataclass
class HFTokenizerConfig:
    tokenizers_cache_dir: str = ""
    huggingface_token: str = ""
    enabled: bool = True


@dataclass
class TokenizersPoolConfig:
    """llm-d's internal tokenizer pool (its legacy fallback). router_lite tokenizes in the gateway (the
    engines' /tokenize, or --tokenizer), which yields the same token ids; these keys are validated only."""

    model: str = ""  # tokenizer name or local directory
    model_name: str = ""  # llm-d's current key for the same thing
    workers_count: int = 1
    local_tokenizer_config: LocalTokenizerConfig | None = None
    uds: UDSConfig | None = None
    hf: HFTokenizerConfig | None = None


@dataclass
class PrefixStoreConfig:
    block_size: int = 16
    cache_size: int = 500_000


@dataclass
class IndexerConfig:
    tokenizers_pool_config: TokenizersPoolConfig | None = None
    kv_block_index_config: KVBlockIndexConfig | None = None
    kv_cache_backend_configs: list[BackendConfig] = field(default_factory=list)
    prefix_store_config: PrefixStoreConfig | None = None  # older llm-d shape; blocks come from tokenProcessorConfig
    token_processor_config: TokenProcessorConfig | None = None  # older llm-d shape: moved to the top level


@dataclass
class PodDiscoveryConfig:
    socket_port: int = 5557


@dataclass
class KVEventsConfig:
    zmq_endpoint: str = ""  # a central endpoint the router binds and pods connect to ("" = connect to pods)
    topic_filter: str = "kv@"
    concurrency: int = 4
    discover_pods: bool = True
    pod_discovery_config: PodDiscoveryConfig | None = None
    engine_type: Literal["vllm"] = "vllm"  # llm-d also reads sglang's events; router_lite decodes vLLM's

    @property
    def socket_port(self) -> int:
        return self.pod_discovery_config.socket_port if self.pod_discovery_config else 5557


@dataclass
class PrecisePrefixCacheParams:
    token_processor_config: TokenProcessorConfig = field(default_factory=TokenProcessorConfig)
    indexer_config: IndexerConfig = field(default_factory=IndexerConfig)
    kv_events_config: KVEventsConfig = field(default_factory=KVEventsConfig)
    # router_lite extensions (llm-d takes these from the engine config):
    hash_algo: Literal["sha256", "sha256_cbor"] = "sha256"  # the engines' --prefix-caching-hash-algo
    use_int_block_hashes: bool = True  # VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES
    speculative_indexing: bool = True
    speculative_ttl: str = "2s"
    max_prefix_blocks_to_match: int = 0  # 0 = all blocks
    score_normalization: Literal["fraction", "min-max"] = "fraction"
    # KV media every endpoint can load from (a filesystem shared by all pods: kvtiers' DISK tier), so a block
    # one pod offloaded there counts for all of them.
    shared_media: list[str] = field(default_factory=lambda: ["disk"])

    def __post_init__(self) -> None:
        # llm-d's older shape nested tokenProcessorConfig under indexerConfig: same meaning.
        nested = self.indexer_config.token_processor_config
        if nested is not None and self.token_processor_config == TokenProcessorConfig():
            self.token_processor_config = nested

    def declared_hashing(self, raw: dict) -> tuple[int | None, str | None, str | None]:
        """(blockSize, hashSeed, hashAlgo) this config states explicitly (None: left to flags / engines)."""
        tpc = raw.get("tokenProcessorConfig") or (raw.get("indexerConfig") or {}).get("tokenProcessorConfig") or {}
        bs = self.block_size if "blockSize" in tpc else None
        seed = str(tpc["hashSeed"]) if tpc.get("hashSeed") else None
        algo = self.hash_algo if "hashAlgo" in raw else None
        return bs, seed, algo

    def validate(self) -> str | None:
        d = parse_duration(self.speculative_ttl)
        if d is None:
            return f"speculativeTtl: expected a duration such as '2s' or '500ms', got {self.speculative_ttl!r}"
        if self.hash_algo not in HASH_ALGOS:
            return f"hashAlgo: expected one of {', '.join(HASH_ALGOS)}, got {self.hash_algo!r}"
        if self.max_prefix_blocks_to_match < 0:
            return "maxPrefixBlocksToMatch: expected 0 (all) or a positive integer"
        return None

    # -- what the gateway hashes with --
    @property
    def block_size(self) -> int:
        return self.token_processor_config.block_size

    @property
    def hash_seed(self) -> str:
        return self.token_processor_config.hash_seed or "vllm-none-hash"

    @property
    def tier_weights(self) -> dict[str, float]:
        return {b.name.upper(): b.weight for b in self.indexer_config.kv_cache_backend_configs}

    @property
    def speculative_ttl_s(self) -> float:
        return parse_duration(self.speculative_ttl) or 0.0

    def hasher(self) -> BlockHasher:
        return BlockHasher(self.block_size, self.hash_algo, self.hash_seed)

    def block_hashes(
        self,
        token_ids: list[int],
        cache_salt: str | None = None,
        lora_name: str | None = None,
        hasher: BlockHasher | None = None,
    ) -> list[int | bytes]:
        """The engine's event hashes for `token_ids` (full blocks only)."""
        h = hasher or self.hasher()
        return [to_event_hash(d, self.use_int_block_hashes) for d in h.hash_blocks(token_ids, cache_salt, lora_name)]


def precise_needs(params: PrecisePrefixCacheParams, raw_parameters: dict) -> Needs:
    """The needs of a precise scorer or producer with `params` (one shared index, one hashing setup)."""
    block_size, seed, algo = params.declared_hashing(raw_parameters or {})
    index = IndexSettings(
        tier_weights=dict(params.tier_weights),
        speculative_ttl_s=params.speculative_ttl_s if params.speculative_indexing else None,
        shared_media=frozenset(m.upper() for m in params.shared_media),
    )
    return Needs(
        tokens=True,
        block_hashes=True,
        block_size=block_size,
        hash_algo=algo,
        hash_seed=seed,
        kv_events=params.kv_events_config,
        index=index,
    )


@register
class PrecisePrefixCacheScorer(Scorer):
    type_name = "precise-prefix-cache-scorer"
    Params = PrecisePrefixCacheParams
    reports_prefix = True
    uses_tokens = True
    endpoint_extractor = True  # its KV-event subscribers follow endpoint add/delete notifications
    aliases = ("kvcache-aware-scorer",)  # llm-d's earlier name

    def __init__(self, name, params: PrecisePrefixCacheParams, ctx) -> None:
        super().__init__(name, params, ctx)
        self.index = ctx.indexes.precise
        self._hasher = params.hasher()
        self._spec_ttl_s = params.speculative_ttl_s  # parsed once: on_routed runs per request
        self._hashes_key: StateKey[list] = StateKey(f"precise:{name}:hashes")
        self._match_key: StateKey[dict[str, tuple[int, float]]] = StateKey(f"precise:{name}:match", per_cycle=True)

    def needs(self, raw_parameters: dict) -> Needs:
        """Tokens; the hashing this config states; its KV-event source; the index's tier weights and sharing."""
        return precise_needs(self.params, raw_parameters)

    def block_size_of(self, request: LLMRequest) -> int:
        """Tokens per hash this scorer matches for `request`: the gateway's block size when it hashed the
        request (flags, then this scorer's blockSize, then the engines' cache_config_info), else this
        scorer's own. Cached-token counts (the P/D decider's) must use the same size as the hashes."""
        if request.block_hashes is not None:
            bs = request.state.get(BLOCK_SIZE)
            if isinstance(bs, int) and bs > 0:
                return bs
        return self.params.block_size

    def _hashes(self, request: LLMRequest) -> list:
        if request.block_hashes is not None:
            return request.block_hashes
        return request.state.setdefault(
            self._hashes_key,
            lambda: self.params.block_hashes(
                request.prompt_token_ids or [], request.cache_salt, request.lora_name, self._hasher
            ),
        )

    def _match(self, request: LLMRequest, endpoints: list[Endpoint] | None) -> dict[str, tuple[int, float]]:
        m = request.state.get(self._match_key)
        if m is None:
            keys = [e.key for e in endpoints] if endpoints is not None and self.index.shared_media else None
            mx = self.params.max_prefix_blocks_to_match or None
            m = request.state.set(self._match_key, self.index.match(self._hashes(request), keys, mx))
        return m

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        hashes = self._hashes(request)
        total = len(hashes)
        if self.params.max_prefix_blocks_to_match:
            total = min(total, self.params.max_prefix_blocks_to_match)
        if total == 0:
            return dict.fromkeys([e.key for e in endpoints], 0.0)
        m = self._match(request, endpoints)
        if self.params.score_normalization == "min-max":
            present = [m[e.key][1] for e in endpoints if e.key in m]
            if not present:
                return dict.fromkeys([e.key for e in endpoints], 0.0)
            lo, hi = min(present), max(present)
            out = {}
            for e in endpoints:
                r = m.get(e.key)
                out[e.key] = 0.0 if r is None else 1.0 if hi == lo else (r[1] - lo) / (hi - lo)
            return out
        out = {}
        for e in endpoints:
            r = m.get(e.key)
            out[e.key] = r[1] / total if r is not None else 0.0
        return out

    def prompt_blocks(self, request: LLMRequest) -> int:
        """Full blocks of the request's prompt (capped by maxPrefixBlocksToMatch), as `score` divides by."""
        n = len(self._hashes(request))
        mx = self.params.max_prefix_blocks_to_match
        return min(n, mx) if mx else n

    def prefix_match(
        self, request: LLMRequest, endpoints: list[Endpoint] | None = None
    ) -> tuple[dict[str, int], int] | None:
        m = self._match(request, endpoints)
        return {k: v[0] for k, v in m.items()}, self.block_size_of(request)

    def prefix_tiers(self, request: LLMRequest, endpoint_keys: list[str]) -> dict[str, dict[str, int]] | None:
        """Per endpoint, its prefix hit's blocks by medium (GPU / CPU / DISK), when events name tiers below
        the GPU; None otherwise (a GPU-only stack's decisions stay as they were)."""
        if not self.index.tiered:
            return None
        hashes = self._hashes(request)
        mx = self.params.max_prefix_blocks_to_match or None
        return {k: self.index.prefix_media(hashes, k, mx) for k in endpoint_keys}

    def on_routed(self, request: LLMRequest, endpoint: Endpoint, profile: str) -> None:
        if self.params.speculative_indexing:
            self.index.add_speculative(endpoint.key, self._hashes(request), self._spec_ttl_s)
