"""precise-prefix-cache-producer (llm-d): the precise KV-event index as a producer.

Same parameters and the same index as precise-prefix-cache-scorer (tokenProcessorConfig, indexerConfig,
kvEventsConfig, speculativeIndexing); `prefix-cache-scorer` / `no-hit-lru-scorer` with
`prefixMatchInfoProducerName: <this>` score from its matches.
"""

from __future__ import annotations

from router_lite.plugins import Needs
from router_lite.plugins.producers.prefix_producer import PrefixMatchProducer
from router_lite.plugins.scorers.precise_prefix_cache import (
    PrecisePrefixCacheParams,
    PrecisePrefixCacheScorer,
    precise_needs,
)
from router_lite.registry import register
from router_lite.types import LLMRequest


@register
class PrecisePrefixCacheProducer(PrefixMatchProducer):
    type_name = "precise-prefix-cache-producer"
    Params = PrecisePrefixCacheParams
    Engine = PrecisePrefixCacheScorer
    uses_tokens = True
    endpoint_extractor = True

    def needs(self, raw_parameters: dict) -> Needs:
        return precise_needs(self.params, raw_parameters)

    def prefix_tiers(self, request: LLMRequest, endpoint_keys: list[str]) -> dict[str, dict[str, int]] | None:
        return self.engine.prefix_tiers(request, endpoint_keys)  # type: ignore[attr-defined]
