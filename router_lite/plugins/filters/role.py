"""decode-filter and prefill-filter: keep endpoints by llm-d's `llm-d.ai/role` label.

decode-filter keeps `decode` and `both` (an unlabeled pod is `both`); prefill-filter keeps `prefill` only,
as llm-d's role filters do.
"""

from __future__ import annotations

from router_lite.plugins import Filter
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@register
class DecodeFilter(Filter):
    type_name = "decode-filter"

    def filter(self, request: LLMRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        return [e for e in endpoints if e.role != "prefill"]


@register
class PrefillFilter(Filter):
    type_name = "prefill-filter"

    def filter(self, request: LLMRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        return [e for e in endpoints if e.role == "prefill"]
