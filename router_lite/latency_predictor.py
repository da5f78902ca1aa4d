"""Online TTFT / TPOT models for predicted-latency scheduling (llm-d's latency predictor, in-process).

Why in-process: llm-d runs XGBoost in sidecars the EPP calls per candidate; a router in one Python process
needs predictions in microseconds, and the quantities that decide TTFT are nearly linear in what the router
already tracks. Each model is a ridge regression solved by recursive least squares with a forgetting factor,
so it follows a pool whose behaviour drifts (cache warms, load shifts) and costs O(features^2) per update.

    TTFT  ~ [1, this request's uncached tokens, uncached tokens in flight ahead, decoding requests, requests]
    TPOT  ~ [1, decoding requests, uncached tokens in flight, requests]

Predictions are clamped at zero; until `warmup` samples arrived a model says None and callers fall back.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class OnlineRegression:
    """Recursive least squares with exponential forgetting over a fixed feature vector."""

    n_features: int
    forgetting: float = 0.998
    ridge: float = 1e3  # initial P = ridge x I: a weak prior that the weights are zero
    warmup: int = 20
    samples: int = 0
    _w: np.ndarray = field(init=False, repr=False)
    _p: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._w = np.zeros(self.n_features)
        self._p = np.eye(self.n_features) * self.ridge

    def update(self, x: list[float], y: float) -> None:
        xv = np.asarray(x, dtype=float)
        px = self._p @ xv
        gain = px / (self.forgetting + xv @ px)
        self._w = self._w + gain * (y - xv @ self._w)
        self._p = (self._p - np.outer(gain, px)) / self.forgetting
        self.samples += 1

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(float(w) for w in self._w)

    def predict(self, x: list[float]) -> float | None:
        if self.samples < self.warmup:
            return None
        return max(0.0, float(np.asarray(x, dtype=float) @ self._w))


def ttft_features(uncached: int, tokens_ahead: int, decoding: int, requests: int) -> list[float]:
    # Token counts in thousands keep the normal equations well conditioned.
    return [1.0, uncached / 1000.0, tokens_ahead / 1000.0, float(decoding), float(requests)]


def tpot_features(decoding: int, tokens: int, requests: int) -> list[float]:
    return [1.0, float(decoding), tokens / 1000.0, float(requests)]


@dataclass
class PredictionErrors:
    """Relative errors |predicted - actual| / actual of recent predictions, after a warm-up."""

    skip: int = 20  # the first predictions after the model's own warm-up are not yet representative
    window: int = 2000
    seen: int = 0
    errors: deque = field(default_factory=deque)

    def add(self, predicted: float, actual: float) -> None:
        self.seen += 1
        if self.seen <= self.skip or actual <= 0:
            return
        self.errors.append(abs(predicted - actual) / actual)
        if len(self.errors) > self.window:
            self.errors.popleft()

    def summary(self) -> dict[str, float | int | None]:
        ordered = sorted(self.errors)
        if not ordered:
            return {"n": 0, "median": None, "p90": None}
        return {
            "n": len(ordered),
            "median": round(ordered[len(ordered) // 2], 4),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 4),
        }
