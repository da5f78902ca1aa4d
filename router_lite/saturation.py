"""llm-d's utilization-based saturation detector, pure.

An endpoint has capacity when its metrics are fresh (updated within `metrics_staleness_threshold_s`), its
waiting queue is below `queue_depth_threshold` and its KV cache usage below `kv_cache_util_threshold`.
The pool is saturated when no candidate endpoint has capacity (stale metrics count as no capacity, so a
silent pool is treated as full). Sheddable requests (priority < 0) are rejected while saturated.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

from router_lite.types import Endpoint

__all__ = ["SaturationConfig", "SaturationDetector", "should_shed"]


@dataclass
class SaturationConfig:
    queue_depth_threshold: int = 5
    kv_cache_util_threshold: float = 0.8
    metrics_staleness_threshold_s: float = 0.2

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, where: str = "saturationDetector") -> "SaturationConfig":
        """From llm-d's camelCase keys (queueDepthThreshold, kvCacheUtilThreshold, metricsStalenessThreshold
        as a duration such as "200ms" or seconds); unknown keys and bad values raise ValueError."""
        from router_lite.plugins.scorers.active_request import parse_duration

        cfg = cls()
        for key, value in (raw or {}).items():
            if key == "queueDepthThreshold" and isinstance(value, int) and not isinstance(value, bool) and value > 0:
                cfg.queue_depth_threshold = value
            elif key == "kvCacheUtilThreshold" and isinstance(value, (int, float)) and 0 < value <= 1:
                cfg.kv_cache_util_threshold = float(value)
            elif key == "metricsStalenessThreshold":
                secs = parse_duration(value) if isinstance(value, str) else value
                if not isinstance(secs, (int, float)) or isinstance(secs, bool) or secs <= 0:
                    raise ValueError(f"{where}.{key}: expected a positive duration such as '200ms', got {value!r}")
                cfg.metrics_staleness_threshold_s = float(secs)
            elif key in ("queueDepthThreshold", "kvCacheUtilThreshold"):
                expected = "a positive integer" if key == "queueDepthThreshold" else "a number in (0, 1]"
                raise ValueError(f"{where}.{key}: expected {expected}, got {value!r}")
            else:
                raise ValueError(
                    f"{where}: unknown key {key!r}; accepted: queueDepthThreshold, kvCacheUtilThreshold, "
                    "metricsStalenessThreshold"
                )
        return cfg


class SaturationDetector:
    def __init__(self, config: SaturationConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or SaturationConfig()
        self.clock = clock

    def has_capacity(self, endpoint: Endpoint, now: float | None = None) -> bool:
        c = self.config
        m = endpoint.metrics
        now = self.clock() if now is None else now
        return (
            endpoint.healthy
            and now - m.updated_at <= c.metrics_staleness_threshold_s
            and m.waiting_queue_size < c.queue_depth_threshold
            and m.kv_cache_usage_percent < c.kv_cache_util_threshold
        )

    def is_saturated(self, endpoints: Iterable[Endpoint]) -> bool:
        now = self.clock()
        return not any(self.has_capacity(e, now) for e in endpoints)


def should_shed(priority: int, saturated: bool) -> bool:
    """llm-d sheds only sheddable (negative-priority) requests, and only when the pool is saturated."""
    return saturated and priority < 0
