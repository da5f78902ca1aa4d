"""data-parallel-profile-handler (llm-d, deprecated upstream in favour of single-profile-handler).

One profile, run once, like single-profile-handler; the chosen endpoint is one data-parallel rank
(host:port). Upstream the EPP then sends the request to the pod's `primaryPort` with the rank in a header,
and llm-d's routing sidecar forwards it. router_lite proxies to the rank's port directly and still sets
`x-data-parallel-host-port` (its PreRequest hook), so a sidecar in front of the pod sees what it
expects. `targetPort` is the older name of `primaryPort`.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins.profile_handlers.single import SingleProfileHandler
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest

DP_HEADER = "x-data-parallel-host-port"


@dataclass
class DataParallelParams:
    primary_port: int = 8000

    ALIASES = {"targetPort": "primaryPort"}

    def validate(self) -> str | None:
        return (
            None
            if 1 <= self.primary_port <= 65535
            else f"primaryPort: expected a port 1-65535, got {self.primary_port}"
        )


@register
class DataParallelProfileHandler(SingleProfileHandler):
    type_name = "data-parallel-profile-handler"
    aliases = ()
    Params = DataParallelParams

    def pre_request(
        self, request: LLMRequest, target: Endpoint, prefill: Endpoint | None, headers: dict[str, str]
    ) -> None:
        headers[DP_HEADER] = target.key
