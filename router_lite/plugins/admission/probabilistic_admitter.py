"""probabilistic-admitter (llm-d): shed sheddable requests with a probability that grows with saturation.

Requests with priority >= 0 are always admitted; so is every request when there are no endpoints.
    saturation = mean over endpoints of max(waiting / queueDepthThreshold, kv usage / kvCacheUtilThreshold)
(an endpoint without fresh metrics counts 1.0), and a sheddable request is rejected with probability
    p = min(saturation ** power * k, 1).
With the defaults (power 5, k 300) nothing is shed below ~0.1 and everything from ~0.34.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.plugins import Admitter
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest


@dataclass
class ProbabilisticAdmitterParams:
    queue_depth_threshold: float = 5
    kv_cache_util_threshold: float = 0.8
    power: float = 5.0
    k: float = 300.0

    def validate(self) -> str | None:
        for key, v in (
            ("queueDepthThreshold", self.queue_depth_threshold),
            ("kvCacheUtilThreshold", self.kv_cache_util_threshold),
            ("power", self.power),
            ("k", self.k),
        ):
            if v <= 0:
                return f"{key}: expected a positive number, got {v}"
        return None


def saturation(endpoints: list[Endpoint], qd: float, kv: float) -> float:
    def one(e: Endpoint) -> float:
        m = e.metrics
        if not m.updated_at:
            return 1.0
        return max(m.waiting_queue_size / qd, m.kv_cache_usage_percent / kv)

    return sum(one(e) for e in endpoints) / len(endpoints)


def shed_probability(sat: float, power: float, k: float) -> float:
    return min(sat**power * k, 1.0)


@register
class ProbabilisticAdmitter(Admitter):
    type_name = "probabilistic-admitter"
    Params = ProbabilisticAdmitterParams

    def reject(self, request: LLMRequest, endpoints: list[Endpoint]) -> str | None:
        if request.priority >= 0 or not endpoints:
            return None
        p = self.params
        sat = saturation(endpoints, p.queue_depth_threshold, p.kv_cache_util_threshold)
        prob = shed_probability(sat, p.power, p.k)
        if prob > 0 and self.ctx.rng.random() < prob:
            return f"sheddable request shed by {self.name} (pool saturation {sat:.2f}, shed probability {prob:.2f})"
        return None
