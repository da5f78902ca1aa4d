"""active-request-scorer (llm-d): requests this router has in flight per endpoint, counted from routing.

An endpoint with at most `idleThreshold` requests scores 1.0; a busier one
score = (max_count - count) / max_count x `maxBusyScore` (max over all tracked endpoints), as llm-d scores.
Entries expire after `requestTimeout` (e.g. "2m", "30s") so a lost completion cannot pin a count forever.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass

from router_lite.plugins import Scorer
from router_lite.registry import register
from router_lite.types import Endpoint, LLMRequest

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)(ms|s|m|h)\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Go-style duration ("500ms", "30s", "2m", "1h") in seconds, None if malformed."""
    m = _DURATION.match(text)
    return float(m.group(1)) * _UNIT[m.group(2)] if m else None


@dataclass
class ActiveRequestParams:
    request_timeout: str = "2m"
    idle_threshold: int = 0
    max_busy_score: float = 1.0

    def validate(self) -> str | None:
        if self.idle_threshold < 0:
            return f"idleThreshold: expected a non-negative integer, got {self.idle_threshold}"
        if not 0 <= self.max_busy_score <= 1:
            return f"maxBusyScore: expected a number in [0, 1], got {self.max_busy_score}"
        d = parse_duration(self.request_timeout)
        if d is None or d <= 0:
            return f"requestTimeout: expected a positive duration such as '30s' or '2m', got {self.request_timeout!r}"
        return None


@register
class ActiveRequestScorer(Scorer):
    type_name = "active-request-scorer"
    Params = ActiveRequestParams

    def __init__(self, name, params, ctx) -> None:
        super().__init__(name, params, ctx)
        self.timeout_s = parse_duration(params.request_timeout) or 120.0
        self.counts: dict[str, int] = {}
        self._inflight: dict[tuple[str, str], float] = {}  # (request id, endpoint) -> expiry
        self._by_request: dict[str, set[str]] = {}  # request id -> endpoints it holds
        self._expiries: list[tuple[float, str, str]] = []

    def _expire(self) -> None:
        now = self.ctx.clock()
        while self._expiries and self._expiries[0][0] <= now:
            exp, rid, key = heapq.heappop(self._expiries)
            if self._inflight.get((rid, key)) == exp:
                self._release(rid, key)

    def _release(self, rid: str, key: str) -> None:
        del self._inflight[(rid, key)]
        held = self._by_request.get(rid)
        if held is not None:
            held.discard(key)
            if not held:
                del self._by_request[rid]
        self._dec(key)

    def _dec(self, key: str) -> None:
        c = self.counts.get(key, 0)
        if c <= 1:
            self.counts.pop(key, None)
        else:
            self.counts[key] = c - 1

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        self._expire()
        counts = self.counts
        mx = max(counts.values(), default=0)
        if mx == 0:
            return {e.key: 1.0 for e in endpoints}
        idle, busy = self.params.idle_threshold, self.params.max_busy_score
        out = {}
        for e in endpoints:
            c = counts.get(e.key, 0)
            out[e.key] = 1.0 if c <= idle else (mx - c) / mx * busy
        return out

    def on_routed(self, request: LLMRequest, endpoint: Endpoint, profile: str) -> None:
        k = (request.request_id, endpoint.key)
        if k in self._inflight:
            return
        exp = self.ctx.clock() + self.timeout_s
        self._inflight[k] = exp
        heapq.heappush(self._expiries, (exp, request.request_id, endpoint.key))
        self._by_request.setdefault(request.request_id, set()).add(endpoint.key)
        self.counts[endpoint.key] = self.counts.get(endpoint.key, 0) + 1

    def on_finished(self, request: LLMRequest, endpoint: Endpoint) -> None:
        # Only this leg: a P/D request also holds its decode endpoint while the decode stream runs.
        if (request.request_id, endpoint.key) in self._inflight:
            self._release(request.request_id, endpoint.key)
