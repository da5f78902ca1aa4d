"""max-score-picker: the highest total wins; ties are broken at random (llm-d shuffles before sorting).

`maxNumOfEndpoints` > 1 returns that many, best first (fallback candidates for the gateway).
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins import Picker
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@dataclass
class MaxNumParams:
    max_num_of_endpoints: int = 1

    def validate(self) -> str | None:
        n = self.max_num_of_endpoints
        return None if n > 0 else f"maxNumOfEndpoints: expected a positive integer, got {n}"


@register
class MaxScorePicker(Picker):
    type_name = "max-score-picker"
    aliases = ("max-score",)
    Params = MaxNumParams

    def pick(self, request: LLMRequest, endpoints: list[Endpoint], totals: dict[str, float]) -> list[Endpoint]:
        n = self.params.max_num_of_endpoints
        if not endpoints:
            return []
        if n == 1:
            best = max(totals[e.key] for e in endpoints)
            tied = [e for e in endpoints if totals[e.key] >= best - 1e-12]
            return [tied[0] if len(tied) == 1 else self.ctx.rng.choice(tied)]
        shuffled = list(endpoints)
        self.ctx.rng.shuffle(shuffled)
        shuffled.sort(key=lambda e: -totals[e.key])  # stable: ties keep their random order
        return shuffled[:n]
