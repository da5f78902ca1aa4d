"""estimated-ttft-scorer: how soon would this request's first token come back from each endpoint?

    ttft(e) = (uncached prompt tokens in flight on e + this request's uncached tokens on e) / prefill rate(e)
    score(e) = min over candidates of ttft / ttft(e)        (the fastest scores 1.0)

The cache hit and the queue ahead are priced in one unit, seconds, so a warm pod wins exactly while its
queue costs less than the prefill it saves, and a burst of one prefix group spreads as soon as a cold
prefill elsewhere would be faster. The rate is the pool's, measured from observed TTFTs (router_lite.inflight;
`perEndpointRates: true` uses a TTFT line fitted on each endpoint's own first tokens, for pools whose pods
differ in speed), or
`peakPrefillThroughput` until one was seen (llm-d's prefix-cache-affinity-filter uses the same estimate with
a calibrated constant; this scorer needs none).
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins import Scorer, find_prefix_plugin, uncached_tokens
from router_lite.registry import ConfigError, register
from router_lite.types import Endpoint, LLMRequest


@dataclass
class EstimatedTTFTParams:
    peak_prefill_throughput: float = 15_928.0  # tokens/s before any measurement
    prefix_match_info_producer_name: str = ""
    per_endpoint_rates: bool = False

    def validate(self) -> str | None:
        if self.peak_prefill_throughput <= 0:
            return f"peakPrefillThroughput: expected tokens per second > 0, got {self.peak_prefill_throughput}"
        return None


@register
class EstimatedTTFTScorer(Scorer):
    type_name = "estimated-ttft-scorer"
    Params = EstimatedTTFTParams

    @classmethod
    def upstream_form(cls, parameters: dict) -> None:
        return None  # router_lite's own: llm-d's EPP has no such scorer

    def bind(self) -> None:
        wanted = self.params.prefix_match_info_producer_name
        self.prefix = find_prefix_plugin(self.ctx, wanted)
        if wanted and self.prefix is None:
            raise ConfigError(f"{self.name}: prefixMatchInfoProducerName {wanted!r} names no prefix plugin")

    def estimates(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        """Estimated seconds to first token per endpoint."""
        mine = uncached_tokens(self.ctx, request, endpoints, self.prefix)
        est = self.ctx.inflight.ttft_estimate_s
        peak, own = self.params.peak_prefill_throughput, self.params.per_endpoint_rates
        return {e.key: est(e.key, mine[e.key], peak, True, own) for e in endpoints}

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        ttft = self.estimates(request, endpoints)
        best = min(ttft.values(), default=0.0)
        return {k: 1.0 if v <= 0 else best / v for k, v in ttft.items()}
