"""lora-affinity-scorer (GIE): prefer endpoints that already have the request's LoRA adapter.

1.0 when the adapter is active or waiting on the endpoint, 0.8 when the endpoint has a free adapter slot
(active + waiting < max_lora), else 0.0. A request without an adapter scores 1.0 everywhere (neutral).
"""

from __future__ import annotations

from router_lite.plugins import Scorer
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest

AFFINITY, AVAILABLE, NONE = 1.0, 0.8, 0.0


@register
class LoraAffinityScorer(Scorer):
    type_name = "lora-affinity-scorer"

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        lora = request.lora_name
        if not lora:
            return {e.key: 1.0 for e in endpoints}
        out = {}
        for e in endpoints:
            m = e.metrics
            if lora in m.active_models or lora in m.waiting_models:
                out[e.key] = AFFINITY
            elif len(m.active_models) + len(m.waiting_models) < m.max_active_models:
                out[e.key] = AVAILABLE
            else:
                out[e.key] = NONE
        return out
