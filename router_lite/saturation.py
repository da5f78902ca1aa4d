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


@dataclass
class ConcurrencyConfig:
    """llm-d's concurrency-detector (requests mode): `maxConcurrency` requests per endpoint is its ideal load;
    `headroom` the burst above it the scheduling filter still allows one endpoint (a fraction, >= 0)."""

    max_concurrency: int = 100
    headroom: float = 0.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, where: str = "concurrency-detector") -> "ConcurrencyConfig":
        cfg = cls()
        for key, value in (raw or {}).items():
            if key == "maxConcurrency":
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ValueError(f"{where}.maxConcurrency: expected a positive integer, got {value!r}")
                cfg.max_concurrency = value
            elif key == "headroom":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"{where}.headroom: expected a number >= 0 (a fraction), got {value!r}")
                cfg.headroom = float(value)
            elif key == "concurrencyMode":
                if value != "requests":
                    raise ValueError(
                        f"{where}.concurrencyMode: router_lite counts requests only; expected 'requests', got {value!r}"
                    )
            else:
                raise ValueError(f"{where}: unknown key {key!r}; accepted: maxConcurrency, headroom, concurrencyMode")
        return cfg


class ConcurrencyDetector:
    """Saturation from the router's own count of requests it let through and that have not finished: never
    stale, unlike scraped queue depth, so a burst cannot pass between two scrapes and pile up in the pods'
    queues, where priority can no longer reorder it."""

    def __init__(self, config: ConcurrencyConfig | None = None) -> None:
        self.config = config or ConcurrencyConfig()

    def saturation(self, endpoints: list[Endpoint], active: int) -> float:
        """Requests in flight over the pool's ideal capacity (maxConcurrency per healthy endpoint)."""
        n = sum(1 for e in endpoints if e.healthy)
        return active / (self.config.max_concurrency * n) if n else 1.0

    def endpoint_limit(self) -> float:
        return self.config.max_concurrency * (1.0 + self.config.headroom)


def utilization_saturation(detector: SaturationDetector, endpoints: list[Endpoint]) -> float:
    """The utilization detector's pool saturation: the fraction of endpoints without capacity (1.0: none has
    any, the pool is saturated)."""
    if not endpoints:
        return 1.0
    now = detector.clock()
    return sum(1 for e in endpoints if not detector.has_capacity(e, now)) / len(endpoints)


@dataclass
class UsageLimit:
    """Admission ceiling per priority (llm-d's UsageLimitPolicy): a request is dispatched while the pool's
    saturation is below its ceiling. Static (`static-usage-limit-policy`): one `threshold` for all. Priority
    holdback (`priority-holdback-policy`): ceilings spread linearly from `min_ceiling` (lowest priority band)
    to `max_ceiling` (highest), by rank or by value, so lower bands stop short and leave the last of the
    capacity to the higher ones."""

    min_ceiling: float = 1.0
    max_ceiling: float = 1.0
    domain: str = "rank"  # rank | value

    def ceilings(self, priorities: list[int]) -> dict[int, float]:
        levels = sorted(set(priorities))
        if len(levels) < 2 or self.min_ceiling == self.max_ceiling:
            return {p: self.max_ceiling for p in levels}
        span = self.max_ceiling - self.min_ceiling
        if self.domain == "value":
            lo, hi = levels[0], levels[-1]
            return {p: self.min_ceiling + span * (p - lo) / (hi - lo) for p in levels}
        return {p: self.min_ceiling + span * i / (len(levels) - 1) for i, p in enumerate(levels)}

    def ceiling(self, priority: int, priorities: list[int]) -> float:
        """`priority`'s ceiling among the configured bands; a level between bands takes the next lower one's."""
        table = self.ceilings(priorities)
        if priority in table:
            return table[priority]
        below = [p for p in table if p < priority]
        return table[max(below)] if below else self.min_ceiling
