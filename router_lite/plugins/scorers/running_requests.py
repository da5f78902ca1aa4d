"""running-requests-size-scorer: fewer running requests score higher, min-max normalised (as queue-scorer)."""

from __future__ import annotations

from router_lite.plugins import Scorer
from router_lite.plugins.scorers.queue import min_max_inverse
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@register
class RunningRequestsSizeScorer(Scorer):
    type_name = "running-requests-size-scorer"

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        return min_max_inverse({e.key: e.metrics.running_requests_size for e in endpoints})
