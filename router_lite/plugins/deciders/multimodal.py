"""always-disagg-multimodal-decider (llm-d): encode on an encoder pod whenever the request carries media.

llm-d's encode-stage decider: disaggregate encode when the chat messages hold any `image_url`, `video_url` or
`input_audio` content part (`LLMRequest.multimodal`, counted by the gateway); text-only requests skip the
encode stage. disagg-profile-handler asks it after picking the decode endpoint (`deciders.encode`).
"""

from __future__ import annotations

from router_lite.plugins import Decider
from router_lite.registry import register
from router_lite.types import LLMRequest, ProfileRunResult


@register
class AlwaysDisaggMultimodalDecider(Decider):
    type_name = "always-disagg-multimodal-decider"

    def disaggregate(self, request: LLMRequest, decode: ProfileRunResult) -> tuple[bool, str]:
        n = request.multimodal
        return (True, f"{n} multimodal item(s)") if n else (False, "no multimodal items")
