"""load-aware-scorer (llm-d): an empty queue scores 0.5; a queue of q scores 0.5 x (1 - min(q, threshold)/threshold).

Capped at 0.5 so spare capacity can later score above it, as llm-d reserves.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins import Scorer
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@dataclass
class LoadAwareParams:
    threshold: int = 128  # queue length that scores 0

    def validate(self) -> str | None:
        return None if self.threshold > 0 else f"threshold: expected a positive integer, got {self.threshold}"


@register
class LoadAwareScorer(Scorer):
    type_name = "load-aware-scorer"
    Params = LoadAwareParams

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        t = float(self.params.threshold)
        out = {}
        for e in endpoints:
            q = e.metrics.waiting_queue_size
            out[e.key] = 0.5 if q <= 0 else 0.5 * (1.0 - min(q, t) / t)
        return out
