"""queue-scorer: fewer waiting requests score higher, min-max normalised over the candidates.

score = (max_q - q) / (max_q - min_q); every candidate scores 1.0 when all queues are equal (llm-d/GIE).
"""

from __future__ import annotations

from router_lite.plugins import Scorer
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


def min_max_inverse(values: dict[str, float]) -> dict[str, float]:
    """Lower is better: (max - v) / (max - min), 1.0 for all when max == min."""
    lo, hi = min(values.values()), max(values.values())
    if hi == lo:
        return dict.fromkeys(values, 1.0)
    span = hi - lo
    return {k: (hi - v) / span for k, v in values.items()}


@register
class QueueScorer(Scorer):
    type_name = "queue-scorer"

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        return min_max_inverse({e.key: e.metrics.waiting_queue_size for e in endpoints})
