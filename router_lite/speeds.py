"""Each endpoint's relative speed, for a router that weighs load by capacity on a mixed fleet.

Told: an endpoint label, `llmd.ai/relative-speed` (a pod labelled "2" is twice as fast as one labelled "1"); a
pool's pods carry their pool's labels. Learned: the inverse of the TTFT each endpoint's own fitted line
(`InFlightTracker.fitted_ttft_s`: per-step overhead, prefill per token and decodes sharing the steps, fitted
apart) gives one reference request, pooled by a group label (`llm-d.ai/pool`) since a pool's pods are replicas
whose separate fits differ by noise alone. Not prefill speed alone: on an 8B model Gaudi3 prefills fastest of
H100 / MI300X / Gaudi3 but decodes slowest, and once decodes fill the steps it is the slowest to a first token. Told wins where every candidate is told; else learned, a group not yet learned taking
the median of those that are; else every speed is equal.

Speeds come back relative to the fastest candidate (1.0): a load divided by them is unchanged on the fastest
pod and doubled on one at half its speed, and on a fleet of equal pods every speed is exactly 1.0, so a
speed-aware score reduces to the speed-blind one.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from typing import Protocol

from router_lite.types import Endpoint

SPEED_LABEL = "llmd.ai/relative-speed"
GROUP_LABEL = "llm-d.ai/pool"

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
    if value > 0 and value != float("inf"):
        return value
    if (endpoint.key, text) not in _warned:
        _warned.add((endpoint.key, text))
        log.warning("endpoint %s: label %s=%r ignored; expected a positive number", endpoint.key, label, text)
    return None


class SpeedSource(Protocol):
    """What the router measures per endpoint (router_lite.inflight.InFlightTracker)."""

    def fitted_ttft_s(self, key: str, work: int, decoding: float) -> float | None: ...

    def prefill_rate(self, key: str) -> float | None: ...


def relative_speeds(
    endpoints: Sequence[Endpoint],
    measured: SpeedSource,
    work: int,
    decoding: float,
    label: str = SPEED_LABEL,
    group_label: str = GROUP_LABEL,
) -> dict[str, float]:
    """Speed per endpoint key relative to the fastest candidate.

    Learned speed is 1 / the TTFT each group's fitted line gives a reference request, `work` uncached tokens met
    while `decoding` requests decode there (the caller passes the fleet's current typical values, so prefill
    speed counts where prefills dominate and decode speed where decodes do). Until every group's line is warm
    (12 first tokens), the groups' measured prefill rates stand in: a router places a new prefix group on the
    pod it picks then and the group stays there, so speeds must be known from the first seconds."""
    told = {e.key: told_speed(e, label) for e in endpoints}
    if endpoints and all(v is not None for v in told.values()):
        speeds: dict[str, float] = {k: v for k, v in told.items() if v is not None}
    else:
        groups: dict[str, list[str]] = {}
        for e in endpoints:
            groups.setdefault(e.labels.get(group_label) or e.key, []).append(e.key)
        ttft = _per_group(groups, lambda k: measured.fitted_ttft_s(k, work, decoding))
        rate = _per_group(groups, measured.prefill_rate)
        if len(ttft) == len(groups):
            by_group = {g: 1.0 / t for g, t in ttft.items()}
        elif len(rate) == len(groups):
            by_group = rate
        else:
            by_group = dict.fromkeys(groups, 1.0)
        speeds = {k: by_group[g] for g, keys in groups.items() for k in keys}
    top = max(speeds.values(), default=1.0)
    return {k: v / top for k, v in speeds.items()}


def _per_group(groups: dict[str, list[str]], value: Callable[[str], float | None]) -> dict[str, float]:
    """The median of the members' known positive values, per group that has one."""
    out: dict[str, float] = {}
    for name, keys in groups.items():
        known = [v for v in map(value, keys) if v is not None and v > 0]
        if known:
            out[name] = statistics.median(known)
    return out
