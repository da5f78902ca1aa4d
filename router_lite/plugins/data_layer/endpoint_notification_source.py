"""endpoint-notification-source (llm-d): tell extractors when endpoints join or leave the pool.

router_lite's data layer already drives the KV-event subscriber from membership changes (a pod that leaves
is unsubscribed and dropped from the index), which is what this source gives the precise scorer upstream.
Its extractors must be plugins that follow endpoints (the precise prefix-cache scorer or producer).
"""

from __future__ import annotations

from router_lite.plugins import DataSource
from router_lite.registry import register


@register
class EndpointNotificationSource(DataSource):
    type_name = "endpoint-notification-source"

    @classmethod
    def accepts(cls, extractor: type) -> bool:
        return bool(getattr(extractor, "endpoint_extractor", False))
