"""prefix-based-pd-decider (llm-d): disaggregate when the uncached part of the prompt is long enough.

non-cached = prompt tokens - tokens cached on the chosen decode endpoint (matched prefix blocks x block
size, from the decode profile's prefix scorer). Disaggregate when non-cached >= `nonCachedTokens`;
`nonCachedTokens: 0` disaggregates every request, as llm-d does.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins import Decider
from router_lite.registry import register
from router_lite.types import LLMRequest, ProfileRunResult


@dataclass
class PrefixBasedParams:
    non_cached_tokens: int = 0

    def validate(self) -> str | None:
        n = self.non_cached_tokens
        return None if n >= 0 else f"nonCachedTokens: expected a non-negative integer, got {n}"


@register
class PrefixBasedPDDecider(Decider):
    type_name = "prefix-based-pd-decider"
    Params = PrefixBasedParams
    uses_tokens = True  # counts prompt tokens

    def disaggregate(self, request: LLMRequest, decode: ProfileRunResult) -> tuple[bool, str]:
        threshold = self.params.non_cached_tokens
        if threshold <= 0:
            return True, "nonCachedTokens is 0: always disaggregate"
        prompt = request.prompt_tokens
        cached = min(decode.cached_tokens(), prompt)
        uncached = prompt - cached
        if uncached >= threshold:
            return (
                True,
                f"{uncached} non-cached prompt tokens >= nonCachedTokens {threshold} ({cached} of {prompt} cached on "
                "decode)",
            )
        return (
            False,
            f"{uncached} non-cached prompt tokens < nonCachedTokens {threshold} ({cached} of {prompt} cached on "
            "decode)",
        )
