"""Each endpoint's relative speed, for a router that weighs load by capacity on a mixed fleet.

Told: an endpoint label, `llmd.ai/relative-speed` (a pod labelled "2" is twice as fast as one labelled "1"); a
pool's pods carry their pool's labels. Learned, where any candidate is not told: 1 / the TTFT that each pod's
own fitted line (`InFlightTracker.fitted_ttft_s`: per-step overhead, prefill per token and the decodes sharing
its steps, fitted apart, so bias-free) gives this request's least uncached work at the pod's current decode
count, pooled per pool (`llm-d.ai/pool`: replicas whose separate fits differ by noise alone). Not a prefill rate
alone: for a request cached somewhere the first token waits on decode steps, where an 8B model's Gaudi3, which
prefills fastest of H100 / MI300X / Gaudi3, is the slowest. Until every pool's line has seen 40 first tokens
the pools' measured prefill rates stand in (a new prefix group stays on the pod it first lands on, so speeds
must count from the first seconds); with nothing measured every speed is equal.

Speeds come back relative to the fastest candidate (1.0): a load divided by them is unchanged on the fastest
pod and doubled on one at half its speed; on equal pods every speed is exactly 1.0, so a speed-aware score is
the speed-blind one. Speeds within a tolerance of the fastest count as 1.0: H100, MI300X and Gaudi3 are within
~15% on an 8B model and rank in opposite orders for prefill and decode, the learned figures wander by ~20%, and
acting on such a difference breaks every tie the same way, piling new prefix groups onto one pool.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Iterable, Sequence
from typing import Protocol

from router_lite.inflight import InFlightLoad
from router_lite.types import Endpoint

SPEED_LABEL = "llmd.ai/relative-speed"
GROUP_LABEL = "llm-d.ai/pool"
MIN_TTFT_S = 1e-3  # a fitted TTFT below this is the line's extrapolation, not a pod that fast
MIN_SPEED = 0.01  # no candidate is scored as more than 100x slower than the fastest (no division by ~0)
MIN_SAMPLES = 40  # first tokens a pod's line must have seen before its speed is read off it (12: ~20% noise)

log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()


def told_speed(endpoint: Endpoint, label: str = SPEED_LABEL) -> float | None:
    """The speed `endpoint`'s label tells, or None (absent, or not a positive number: warned once)."""
    text = endpoint.labels.get(label)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if 0 < value < float("inf"):
        return value
    if (endpoint.key, text) not in _warned:
        _warned.add((endpoint.key, text))
        log.warning("endpoint %s: label %s=%r ignored; expected a positive number", endpoint.key, label, text)
    return None


class SpeedSource(Protocol):
    """What the router measures per endpoint (router_lite.inflight.InFlightTracker)."""

    def fitted_ttft_s(self, key: str, work: int, decoding: float, min_samples: int = 0) -> float | None: ...

    def prefill_rate(self, key: str) -> float | None: ...

    def load(self, key: str) -> InFlightLoad: ...


def relative_speeds(
    endpoints: Sequence[Endpoint],
    measured: SpeedSource,
    work: int,
    label: str = SPEED_LABEL,
    group_label: str = GROUP_LABEL,
    tolerance: float = 0.0,
) -> dict[str, float]:
    """Speed per endpoint key relative to the fastest candidate, learned ones for a request meeting `work`
    uncached tokens; a speed within a factor (1 + `tolerance`) of the fastest counts as 1.0."""
    told = {e.key: told_speed(e, label) for e in endpoints}
    if endpoints and all(v is not None for v in told.values()):
        speeds: dict[str, float] = {k: v for k, v in told.items() if v is not None}
    else:
        speeds = _learned(endpoints, measured, work, group_label)
    top = max(speeds.values(), default=1.0)
    band = top / (1.0 + tolerance)
    return {k: 1.0 if v >= band else max(MIN_SPEED, v / top) for k, v in speeds.items()}


def _learned(endpoints: Sequence[Endpoint], measured: SpeedSource, work: int, group_label: str) -> dict[str, float]:
    pools: dict[str, list[str]] = {}
    for e in endpoints:
        pools.setdefault(e.labels.get(group_label) or e.key, []).append(e.key)
    fitted: dict[str, float] = {}
    rates: dict[str, float] = {}
    for name, keys in pools.items():
        decoding = sum(measured.load(k).decoding for k in keys) / len(keys)
        ttft = _positive(measured.fitted_ttft_s(k, work, decoding, MIN_SAMPLES) for k in keys)
        if ttft:  # a line fitted with a negative intercept can predict ~0 s for little work: floor it
            fitted[name] = 1.0 / max(MIN_TTFT_S, statistics.median(ttft))
        rate = _positive(measured.prefill_rate(k) for k in keys)
        if rate:
            rates[name] = statistics.median(rate)
    by_pool = fitted if len(fitted) == len(pools) else rates if len(rates) == len(pools) else dict.fromkeys(pools, 1.0)
    return {k: by_pool[name] for name, keys in pools.items() for k in keys}


def _positive(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None and v > 0]
