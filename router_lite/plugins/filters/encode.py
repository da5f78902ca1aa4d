"""encode-filter (llm-d): keep only endpoints labeled `llm-d.ai/role: encode`, the E/P/D encoder pods.

The encode profile of an E/P/D config runs it; the decode and prefill filters leave encode pods out.
"""

from __future__ import annotations

from router_lite.plugins import Filter
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@register
class EncodeFilter(Filter):
    type_name = "encode-filter"

    def filter(self, request: LLMRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        return [e for e in endpoints if e.role == "encode"]
