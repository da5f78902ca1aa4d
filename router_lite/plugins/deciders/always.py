"""always-disagg-pd-decider (llm-d): every request gets a separate prefill."""

from __future__ import annotations

from router_lite.plugins import Decider
from router_lite.registry import register
from router_lite.types import LLMRequest, ProfileRunResult


@register
class AlwaysDisaggDecider(Decider):
    type_name = "always-disagg-pd-decider"

    def disaggregate(self, request: LLMRequest, decode: ProfileRunResult) -> tuple[bool, str]:
        return True, "always-disagg-pd-decider"
