"""round-robin-picker: cycle through the candidates in a stable order, ignoring scores (the baseline).

Order is by endpoint key so the rotation is stable while the candidate set changes.
"""

from __future__ import annotations

from router_lite.plugins import Picker
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@register
class RoundRobinPicker(Picker):
    type_name = "round-robin-picker"
    synonyms = ("round-robin",)

    def __init__(self, name, params, ctx) -> None:
        super().__init__(name, params, ctx)
        self._next = 0

    def pick(self, request: LLMRequest, endpoints: list[Endpoint], totals: dict[str, float]) -> list[Endpoint]:
        if not endpoints:
            return []
        ordered = sorted(endpoints, key=lambda e: e.key)
        ep = ordered[self._next % len(ordered)]
        self._next += 1
        return [ep]
