"""concurrency-detector (llm-d, requests mode): saturation from the router's own in-flight count, and a filter.

As the saturation detector (`flowControl.saturationDetector.pluginRef`): the pool is full when the requests
the router let through and that have not finished reach `maxConcurrency` per healthy endpoint — a count, never
a stale scrape (router_lite.saturation.ConcurrencyDetector). As a filter in a scheduling profile: endpoints
with `maxConcurrency * (1 + headroom)` requests in flight from this router are dropped, so the pool's free
seats are used before any pod queues; when every endpoint is at its limit all are kept (the flow-control gate,
not the filter, is what holds requests back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from router_lite.plugins import Filter
from router_lite.registry import ConfigError, register
from router_lite.types import Endpoint, LLMRequest


@dataclass
class ConcurrencyDetectorParams:
    max_concurrency: int = 100
    headroom: float = 0.0
    concurrency_mode: str = "requests"

    def validate(self) -> str | None:
        from router_lite.saturation import ConcurrencyConfig

        try:
            ConcurrencyConfig.from_dict(
                {
                    "maxConcurrency": self.max_concurrency,
                    "headroom": self.headroom,
                    "concurrencyMode": self.concurrency_mode,
                },
                where="parameters",
            )
        except ValueError as exc:
            return str(exc).removeprefix("parameters.")
        return None


@register
class ConcurrencyDetectorFilter(Filter):
    type_name = "concurrency-detector"
    Params = ConcurrencyDetectorParams
    detects_saturation: ClassVar[bool] = True  # may be named by saturationDetector.pluginRef

    @staticmethod
    def thresholds(raw: dict[str, Any], where: str) -> dict[str, Any]:
        """What admission builds its detector from (checked by the detector's own parser)."""
        from router_lite.saturation import ConcurrencyConfig

        try:
            ConcurrencyConfig.from_dict(raw, where=where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return {"detector": "concurrency", **raw}

    def filter(self, request: LLMRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        p: ConcurrencyDetectorParams = self.params
        limit = p.max_concurrency * (1.0 + p.headroom)
        load = self.ctx.inflight.load
        kept = [e for e in endpoints if load(e.key).requests < limit]
        return kept or endpoints
