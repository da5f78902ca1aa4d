"""Passive health from proxied answers (Envoy's outlier detection, as gateways in front of llm-d run it).

Scrapes and `/health` say whether a pod is up; they cannot see a pod that answers them but fails every
request (a 503 storm) or one that accepts a request and then sends nothing (a hung engine). The proxy
reports every answer here: `consecutive_errors` failures in a row (a 502/504, or a timeout) eject the pod —
and a 503 at once (`consecutive_unavailable`, 1): a 503 is the pod saying it cannot serve (vLLM answers it
when its engine is gone or it is scaling), which no request can make it say, and a pod that storms 503s
while the router's affinity sends it one request in a few would otherwise stay in rotation for seconds —
for `base_ejection_s`, doubled for each ejection in a row (capped at `max_ejection_s`); when the time is
up it returns to rotation on probation (its next failure ejects it again), and its first good answer clears
the record. Not one timeout alone, and not a 500: a client can cause those (a huge prompt to tokenize, an
input that trips the engine), and one client must not be able to take pods out of rotation. Pure: no I/O,
the caller owns time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Outcome(str, Enum):
    """What one proxied attempt showed about its pod."""

    OK = "ok"  # an answer that is not a server error (a 4xx is the request's fault, not the pod's)
    ERROR = "error"  # a 502/504 answer: the pod, or something in front of it, cannot serve now
    UNAVAILABLE = "unavailable"  # a 503: the pod itself says it cannot serve
    TIMEOUT = "timeout"  # nothing (or nothing more) arrived in time: the pod is hung


@dataclass
class _Record:
    consecutive: int = 0
    unavailable: int = 0  # 503s in a row
    ejections: int = 0  # ejections in a row without a good answer in between
    until: float = 0.0  # monotonic time the current ejection ends (0: not ejected)
    reason: str = ""


@dataclass
class OutlierDetector:
    """Per-endpoint error streaks and ejections."""

    consecutive_errors: int = 3
    consecutive_unavailable: int = 1  # 503s in a row that eject, whatever else came before
    base_ejection_s: float = 5.0
    max_ejection_s: float = 60.0
    _records: dict[str, _Record] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.consecutive_errors < 1 or self.consecutive_unavailable < 1:
            raise ValueError(
                f"consecutive_errors, consecutive_unavailable: expected >= 1, got {self.consecutive_errors}, "
                f"{self.consecutive_unavailable}"
            )
        if not 0 < self.base_ejection_s <= self.max_ejection_s:
            raise ValueError(
                f"ejection times: expected 0 < base ({self.base_ejection_s}) <= max ({self.max_ejection_s})"
            )

    def record(self, key: str, outcome: Outcome, now: float, detail: str = "") -> bool:
        """Count one outcome; True when it ejects `key` now (it was not ejected before)."""
        rec = self._records.setdefault(key, _Record())
        if outcome is Outcome.OK:
            if rec.until <= now:  # a late success from before an ejection does not cancel it
                rec.consecutive = 0
                rec.unavailable = 0
                rec.ejections = 0
            return False
        rec.consecutive += 1
        rec.unavailable = rec.unavailable + 1 if outcome is Outcome.UNAVAILABLE else 0
        if rec.until > now:
            return False
        # Back from an ejection without a good answer since (half-open): one more failure ejects again.
        if (
            rec.consecutive >= self.consecutive_errors
            or rec.unavailable >= self.consecutive_unavailable
            or rec.ejections
        ):
            rec.ejections += 1
            rec.until = now + min(self.max_ejection_s, self.base_ejection_s * 2 ** (rec.ejections - 1))
            rec.consecutive = 0
            if rec.ejections > 1:
                what = "failed again after an ejection"
            elif rec.unavailable >= self.consecutive_unavailable:
                what = "it answered 503 (cannot serve)"
            else:
                what = f"{self.consecutive_errors} failures in a row"
            rec.unavailable = 0
            rec.reason = f"ejected for {rec.until - now:g}s: {what}" + (f" ({detail})" if detail else "")
            return True
        return False

    def ejected(self, key: str, now: float) -> bool:
        rec = self._records.get(key)
        return rec is not None and rec.until > now

    def reason(self, key: str) -> str:
        rec = self._records.get(key)
        return rec.reason if rec else ""

    def until(self, key: str) -> float:
        rec = self._records.get(key)
        return rec.until if rec else 0.0

    def forget(self, key: str) -> None:
        self._records.pop(key, None)
