"""token-load-scorer (llm-d): less prompt work queued on an endpoint scores higher.

    load  = uncached prompt tokens in flight there + this request's uncached tokens there
    score = 1 - min(load, queueThresholdTokens) / queueThresholdTokens

Both terms come from the in-flight load producer (router_lite.inflight and the configured prefix plugin), so
a pod that already holds the prompt's prefix is charged only for the tail it must still compute.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins import Scorer, find_plugin, find_prefix_plugin, uncached_tokens
from router_lite.plugins.producers.inflight_load import InFlightLoadProducer
from router_lite.registry import ConfigError, register
from router_lite.types import Endpoint, LLMRequest

DEFAULT_QUEUE_THRESHOLD_TOKENS = 4_194_304  # llm-d's default: 128 requests of 32k tokens


@dataclass
class TokenLoadParams:
    queue_threshold_tokens: int = DEFAULT_QUEUE_THRESHOLD_TOKENS
    in_flight_load_producer_name: str = ""

    def validate(self) -> str | None:
        if self.queue_threshold_tokens <= 0:
            return f"queueThresholdTokens: expected a positive integer, got {self.queue_threshold_tokens}"
        return None


@register
class TokenLoadScorer(Scorer):
    type_name = "token-load-scorer"
    Params = TokenLoadParams

    def bind(self) -> None:
        name = self.params.in_flight_load_producer_name
        self.producer = find_plugin(self.ctx, InFlightLoadProducer, name)
        if name and self.producer is None:
            raise ConfigError(f"{self.name}: inFlightLoadProducerName {name!r} names no inflight-load-producer")
        self.prefix = None if self.producer is not None else find_prefix_plugin(self.ctx)

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        mine = (
            self.producer.uncached(request, endpoints)
            if self.producer
            else uncached_tokens(self.ctx, request, endpoints, self.prefix)
        )
        cap = float(self.params.queue_threshold_tokens)
        load = self.ctx.inflight.load
        return {e.key: 1.0 - min(load(e.key).tokens + mine[e.key], cap) / cap for e in endpoints}
