"""prefix-cache-affinity-filter (llm-d's optimized baseline): sticky to cache-warm endpoints until they saturate.

An endpoint is sticky when its prefix hit covers at least `affinityThreshold` of the prompt. With sticky
endpoints the filter keeps only them, unless the best sticky endpoint's estimated TTFT exceeds the best
non-sticky one's by more than `maxTTFTPenaltyMs`: then stickiness breaks and every endpoint stays. TTFT is
estimated as (uncached prompt tokens in flight + this request's uncached tokens) / prefill throughput.

`ttftSource` picks the throughput: `prefill-throughput` (llm-d's: the calibrated `peakPrefillThroughput`),
`measured` (this router's pool rate learned from observed TTFTs, `peakPrefillThroughput` until the first
measurement: no calibration run needed) or `measured-per-endpoint` (a TTFT line learned per endpoint, for
pools whose pods differ in speed; on replicas it compares pods at rates that differ by noise).
`explorationProbability` skips the gate on that fraction of requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from router_lite.plugins import Filter, find_plugin, find_prefix_plugin, uncached_tokens
from router_lite.plugins.producers.inflight_load import InFlightLoadProducer
from router_lite.registry import ConfigError, register
from router_lite.types import Endpoint, LLMRequest


@dataclass
class PrefixCacheAffinityParams:
    affinity_threshold: float = 0.80
    max_ttft_penalty_ms: float = field(default=18_000.0, metadata={"key": "maxTTFTPenaltyMs"})
    peak_prefill_throughput: float = 15_928.0  # tokens/s; llm-d's default (Qwen3-32B, 2 x H100, TP2)
    ttft_source: Literal["prefill-throughput", "measured", "measured-per-endpoint"] = field(
        default="prefill-throughput", metadata={"key": "ttftSource"}
    )
    exploration_probability: float = 0.0
    prefix_match_info_producer_name: str = ""
    in_flight_load_producer_name: str = ""

    def validate(self) -> str | None:
        if not 0.0 <= self.affinity_threshold <= 1.0:
            return f"affinityThreshold: expected a number in [0, 1], got {self.affinity_threshold}"
        if self.max_ttft_penalty_ms < 0:
            return f"maxTTFTPenaltyMs: expected a number >= 0, got {self.max_ttft_penalty_ms}"
        if self.peak_prefill_throughput <= 0:
            return f"peakPrefillThroughput: expected tokens per second > 0, got {self.peak_prefill_throughput}"
        if not 0.0 <= self.exploration_probability <= 1.0:
            return f"explorationProbability: expected a number in [0, 1], got {self.exploration_probability}"
        return None


@register
class PrefixCacheAffinityFilter(Filter):
    type_name = "prefix-cache-affinity-filter"
    Params = PrefixCacheAffinityParams

    @classmethod
    def upstream_form(cls, parameters: dict) -> dict:
        """`ttftSource: measured[-per-endpoint]` is router_lite's: upstream estimates with `peakPrefillThroughput`."""
        return {k: v for k, v in parameters.items() if not (k == "ttftSource" and str(v).startswith("measured"))}

    def bind(self) -> None:
        p = self.params
        self.prefix = find_prefix_plugin(self.ctx, p.prefix_match_info_producer_name)
        if p.prefix_match_info_producer_name and self.prefix is None:
            raise ConfigError(
                f"{self.name}: prefixMatchInfoProducerName {p.prefix_match_info_producer_name!r} names no prefix plugin"
            )
        if (
            p.in_flight_load_producer_name
            and find_plugin(self.ctx, InFlightLoadProducer, p.in_flight_load_producer_name) is None
        ):
            raise ConfigError(
                f"{self.name}: inFlightLoadProducerName {p.in_flight_load_producer_name!r} names no "
                "inflight-load-producer"
            )

    def filter(self, request: LLMRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        p = self.params
        total = request.prompt_tokens
        if total <= 0 or len(endpoints) < 2:
            return endpoints
        if p.exploration_probability and self.ctx.rng.random() < p.exploration_probability:
            return endpoints
        uncached = uncached_tokens(self.ctx, request, endpoints, self.prefix)
        sticky = [e for e in endpoints if (total - uncached[e.key]) / total >= p.affinity_threshold]
        if not sticky or len(sticky) == len(endpoints):
            return endpoints
        measured, own = p.ttft_source.startswith("measured"), p.ttft_source == "measured-per-endpoint"
        ttft = {
            e.key: self.ctx.inflight.ttft_estimate_s(e.key, uncached[e.key], p.peak_prefill_throughput, measured, own)
            for e in endpoints
        }
        best_sticky = min(ttft[e.key] for e in sticky)
        best_other = min(ttft[e.key] for e in endpoints if e not in sticky)
        if (best_sticky - best_other) * 1000.0 > p.max_ttft_penalty_ms:
            return endpoints  # the warm endpoints are saturated: a cold prefill elsewhere is faster
        return sticky
