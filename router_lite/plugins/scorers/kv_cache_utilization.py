"""kv-cache-utilization-scorer: score = 1 - KV cache usage (0..1), so emptier caches score higher."""

from __future__ import annotations

from router_lite.plugins import Scorer
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@register
class KVCacheUtilizationScorer(Scorer):
    type_name = "kv-cache-utilization-scorer"
    aliases = ("kv-cache-scorer",)  # GIE's earlier name

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        return {e.key: 1.0 - e.metrics.kv_cache_usage_percent for e in endpoints}
