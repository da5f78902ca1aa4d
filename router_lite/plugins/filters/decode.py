"""decode-filter: keep endpoints that can decode, by llm-d's `llm-d.ai/role` label.

It keeps `decode` and `both` (an unlabeled pod is `both`), as llm-d's decode filter does.
"""

from __future__ import annotations

from router_lite.plugins import Filter
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@register
class DecodeFilter(Filter):
    type_name = "decode-filter"

    def filter(self, request: LLMRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        return [e for e in endpoints if e.role in ("decode", "both")]
