"""inflight-load-producer (llm-d): the router's own per-endpoint in-flight requests and uncached prompt tokens.

The counting itself lives in router_lite.inflight (always on, shared across config swaps, fed by the
scheduler's dispatch / first-token / finish hooks). This plugin is the configured face of it: it names the
prefix plugin whose match turns a prompt into each endpoint's uncached tokens, for the consumers
(`token-load-scorer`, `prefix-cache-affinity-filter`, `active-request-scorer`, `latency-scorer`).
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins import PluginContext, Producer, Scorer, find_prefix_plugin, uncached_tokens
from router_lite.registry import ConfigError, register
from router_lite.types import Endpoint, LLMRequest


@dataclass
class InFlightLoadParams:
    prefix_match_info_producer_name: str = ""  # default: the first configured prefix scorer
    add_estimated_output_tokens: bool = False  # accepted for llm-d configs; output tokens are not counted here

    def validate(self) -> str | None:
        return None


@register
class InFlightLoadProducer(Producer):
    type_name = "inflight-load-producer"
    Params = InFlightLoadParams

    def __init__(self, name: str, params: InFlightLoadParams, ctx: PluginContext) -> None:
        super().__init__(name, params, ctx)
        self.prefix: Scorer | None = None

    def bind(self) -> None:
        wanted = self.params.prefix_match_info_producer_name
        self.prefix = find_prefix_plugin(self.ctx, wanted)
        if wanted and self.prefix is None:
            raise ConfigError(f"{self.name}: prefixMatchInfoProducerName {wanted!r} names no configured prefix plugin")

    def uncached(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, int]:
        """This request's uncached prompt tokens per endpoint."""
        return uncached_tokens(self.ctx, request, endpoints, self.prefix)
