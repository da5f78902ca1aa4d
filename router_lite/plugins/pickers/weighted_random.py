"""weighted-random-picker: choose with probability proportional to total score (A-Res sampling, as GIE).

Each candidate draws key u^(1/w) with u uniform in (0, 1); the largest keys win. Candidates with zero
weight are chosen only when every candidate has zero weight (then uniformly).
"""

from __future__ import annotations

from router_lite.plugins import Picker
from router_lite.plugins.pickers.max_score import MaxNumParams
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@register
class WeightedRandomPicker(Picker):
    type_name = "weighted-random-picker"
    Params = MaxNumParams

    def pick(self, request: LLMRequest, endpoints: list[Endpoint], totals: dict[str, float]) -> list[Endpoint]:
        n = min(self.params.max_num_of_endpoints, len(endpoints))
        if n == 0:
            return []
        rng = self.ctx.rng
        positive = [e for e in endpoints if totals.get(e.key, 0.0) > 0.0]
        if not positive:
            return rng.sample(endpoints, n)
        keyed = sorted(positive, key=lambda e: -(max(rng.random(), 1e-300) ** (1.0 / totals[e.key])))
        chosen = keyed[:n]
        if len(chosen) < n:
            rest = [e for e in endpoints if e not in chosen]
            chosen += rng.sample(rest, n - len(chosen))
        return chosen
