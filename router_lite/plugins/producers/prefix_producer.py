"""The shared shape of prefix-match producers: a producer owning a prefix scorer's engine.

llm-d splits prefix scoring into a producer (keeps the index, computes each request's match) and scorers
that read the match by producer name (`prefixMatchInfoProducerName`). Here the producer wraps the same
engine the stand-alone scorer uses, so both shapes score identically.
"""

from __future__ import annotations

from typing import Any

from router_lite.plugins import Producer, Scorer
from router_lite.types import Endpoint, LLMRequest


class PrefixMatchProducer(Producer):
    reports_prefix = True
    Engine: type[Scorer]

    def __init__(self, name: str, params: Any, ctx: Any) -> None:
        super().__init__(name, params, ctx)
        self.engine: Scorer = self.Engine(name, params, ctx)

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        return self.engine.score(request, endpoints)

    def prefix_match(
        self, request: LLMRequest, endpoints: list[Endpoint] | None = None
    ) -> tuple[dict[str, int], int] | None:
        return self.engine.prefix_match(request, endpoints)

    def on_routed(self, request: LLMRequest, endpoint: Endpoint, profile: str) -> None:
        self.engine.on_routed(request, endpoint, profile)
