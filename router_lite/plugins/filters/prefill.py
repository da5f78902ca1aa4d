"""prefill-filter: keep only endpoints labeled `llm-d.ai/role: prefill`, as llm-d's prefill filter does."""

from __future__ import annotations

from router_lite.plugins import Filter
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@register
class PrefillFilter(Filter):
    type_name = "prefill-filter"

    def filter(self, request: LLMRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        return [e for e in endpoints if e.role == "prefill"]
