"""active-request-scorer (llm-d): fewer requests this router has in flight on an endpoint score higher.

Counts come from the router's own in-flight load (router_lite.inflight, llm-d's `inflight-load-producer`),
updated at dispatch and finish, so they are never stale. With `count` per endpoint and `max` the largest:

    count <= idleThreshold   -> 1.0
    otherwise                -> (max - count) / max x maxBusyScore

`requestTimeout` is accepted for older configs and ignored, as upstream now does: a request's lifecycle
is tracked, not timed out.
"""

from __future__ import annotations

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
    idle_threshold: int = 0
    max_busy_score: float = 1.0
    request_timeout: str = "2m"  # deprecated upstream; validated, then ignored

    def validate(self) -> str | None:
        d = parse_duration(self.request_timeout)
        if d is None or d <= 0:
            return f"requestTimeout: expected a positive duration such as '30s' or '2m', got {self.request_timeout!r}"
        if self.idle_threshold < 0:
            return f"idleThreshold: expected an integer >= 0, got {self.idle_threshold}"
        if not 0.0 <= self.max_busy_score <= 1.0:
            return f"maxBusyScore: expected a number in [0, 1], got {self.max_busy_score}"
        return None


def active_request_scores(
    counts: dict[str, int], idle_threshold: int = 0, max_busy_score: float = 1.0
) -> dict[str, float]:
    """The formula above over `counts` (endpoint key -> requests in flight)."""
    mx = max(counts.values(), default=0)
    return {k: 1.0 if c <= idle_threshold or mx == 0 else (mx - c) / mx * max_busy_score for k, c in counts.items()}


@register
class ActiveRequestScorer(Scorer):
    type_name = "active-request-scorer"
    Params = ActiveRequestParams

    @property
    def counts(self) -> dict[str, int]:
        """Requests in flight per endpoint (only endpoints with some)."""
        return {k: v["requests"] for k, v in self.ctx.inflight.snapshot().items() if v["requests"]}

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        load = self.ctx.inflight.load
        counts = {e.key: load(e.key).requests for e in endpoints}
        return active_request_scores(counts, self.params.idle_threshold, self.params.max_busy_score)
