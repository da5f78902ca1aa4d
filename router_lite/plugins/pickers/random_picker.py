"""random-picker: uniform choice among the candidates, ignoring scores (`maxNumOfEndpoints` distinct)."""

from __future__ import annotations

from router_lite.plugins import Picker
from router_lite.plugins.pickers.max_score import MaxNumParams
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@register
class RandomPicker(Picker):
    type_name = "random-picker"
    Params = MaxNumParams

    def pick(self, request: LLMRequest, endpoints: list[Endpoint], totals: dict[str, float]) -> list[Endpoint]:
        n = min(self.params.max_num_of_endpoints, len(endpoints))
        return self.ctx.rng.sample(endpoints, n) if n else []
