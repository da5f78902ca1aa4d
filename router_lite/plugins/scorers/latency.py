"""latency-scorer (llm-d's predicted-latency path): score candidates on predicted TTFT/TPOT headroom.

Predictions come from `predicted-latency-producer`; SLOs from the request headers `x-slo-ttft-ms` and
`x-slo-tpot-ms` (0 when absent, so every endpoint lands in the negative tier and the lowest predicted
latency wins). The steps follow llm-d's scorer:

1. Affinity gate: endpoints whose cached share of the prompt is >= `affinityGateTauGlobal` are kept alone,
   unless their best predicted TTFT trails the best other by more than `affinityMaxTTFTPenaltyMs` (a warm
   pod that is saturated loses its stickiness); skipped on `epsilonExploreSticky` of requests.
2. Tiers by headroom = SLO - predicted: positive (meets both) and negative. The positive tier is scored
   (the negative one on `epsilonExploreNeg` of requests); the other tier scores 0.
3. Positive tier: headrooms min-max normalised and blended (`ttftWeight`, `tpotWeight`); strategy `least`
   (default, bin-packing: least headroom scores highest) or `most`.
4. Negative tier: idle endpoints (nothing in flight) first; else the smallest weighted deficit scores highest.

A sheddable request (priority < 0) with SLO headers and no endpoint predicted to meet them is marked for
shedding (the gateway answers 429): llm-d's "shed or deprioritise". Until the models are warm, the scorer
falls back to the predicted-TTFT-free order: fewest uncached tokens in flight plus this request's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from router_lite.plugins import Scorer, find_plugin, find_prefix_plugin, uncached_tokens
from router_lite.plugins.producers.predicted_latency import PredictedLatencyProducer
from router_lite.plugins.scorers.queue import min_max_inverse
from router_lite.registry import ConfigError, register
from router_lite.types import SHED, Endpoint, LLMRequest

SLO_TTFT_HEADER = "x-slo-ttft-ms"
SLO_TPOT_HEADER = "x-slo-tpot-ms"


def _slo_ms(request: LLMRequest, header: str) -> float:
    try:
        return max(0.0, float(request.headers.get(header, "0") or 0))
    except ValueError:
        return 0.0


def _normalise(values: dict[str, float]) -> dict[str, float]:
    lo, hi = min(values.values()), max(values.values())
    return {k: 0.0 if hi == lo else (v - lo) / (hi - lo) for k, v in values.items()}


@dataclass
class LatencyScorerParams:
    ttft_weight: float = 0.8
    tpot_weight: float = 0.2
    neg_headroom_ttft_weight: float = 0.8
    neg_headroom_tpot_weight: float = 0.2
    affinity_gate_tau_global: float = 0.99
    epsilon_explore_sticky: float = 0.01
    epsilon_explore_neg: float = 0.01
    affinity_max_ttft_penalty_ms: float = field(default=5000.0, metadata={"key": "affinityMaxTTFTPenaltyMs"})
    headroom_selection_strategy: Literal["least", "most"] = "least"
    latency_prediction_info_producer_name: str = ""
    prefix_match_info_producer_name: str = ""

    def validate(self) -> str | None:
        for key, v in (
            ("ttftWeight", self.ttft_weight),
            ("tpotWeight", self.tpot_weight),
            ("negHeadroomTTFTWeight", self.neg_headroom_ttft_weight),
            ("negHeadroomTPOTWeight", self.neg_headroom_tpot_weight),
            ("affinityMaxTTFTPenaltyMs", self.affinity_max_ttft_penalty_ms),
        ):
            if v < 0:
                return f"{key}: expected a number >= 0, got {v}"
        for key, v in (
            ("affinityGateTauGlobal", self.affinity_gate_tau_global),
            ("epsilonExploreSticky", self.epsilon_explore_sticky),
            ("epsilonExploreNeg", self.epsilon_explore_neg),
        ):
            if not 0.0 <= v <= 1.0:
                return f"{key}: expected a number in [0, 1], got {v}"
        return None


@register
class LatencyScorer(Scorer):
    type_name = "latency-scorer"
    Params = LatencyScorerParams

    def bind(self) -> None:
        p = self.params
        self.producer = find_plugin(self.ctx, PredictedLatencyProducer, p.latency_prediction_info_producer_name)
        if self.producer is None:
            raise ConfigError(
                f"{self.name}: needs a predicted-latency-producer plugin"
                + (
                    f" named {p.latency_prediction_info_producer_name!r}"
                    if p.latency_prediction_info_producer_name
                    else ""
                )
            )
        self.prefix = find_prefix_plugin(self.ctx, p.prefix_match_info_producer_name)

    def score(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, float]:
        p, rng = self.params, self.ctx.rng
        preds = self.producer.predict(request, endpoints)
        mine = uncached_tokens(self.ctx, request, endpoints, self.prefix)
        load = self.ctx.inflight.load
        if any(t is None for t, _ in preds.values()):  # models warming up: least prefill work wins
            return min_max_inverse({e.key: float(load(e.key).tokens + mine[e.key]) for e in endpoints})
        ttft = {k: t for k, (t, _) in preds.items()}
        tpot = {k: (d if d is not None else 0.0) for k, (_, d) in preds.items()}
        pool = list(endpoints)
        total = request.prompt_tokens
        if total and p.affinity_gate_tau_global and rng.random() >= p.epsilon_explore_sticky:
            sticky = [e for e in pool if (total - mine[e.key]) / total >= p.affinity_gate_tau_global]
            if sticky and len(sticky) < len(pool):
                others = [e for e in pool if e not in sticky]
                penalty_s = min(ttft[e.key] for e in sticky) - min(ttft[e.key] for e in others)
                if penalty_s * 1000.0 <= p.affinity_max_ttft_penalty_ms:
                    pool = sticky
        slo_ttft, slo_tpot = _slo_ms(request, SLO_TTFT_HEADER) / 1e3, _slo_ms(request, SLO_TPOT_HEADER) / 1e3
        head_ttft = {e.key: slo_ttft - ttft[e.key] for e in pool}
        head_tpot = {e.key: (slo_tpot - tpot[e.key]) if slo_tpot else 0.0 for e in pool}
        positive = [e for e in pool if head_ttft[e.key] >= 0 and head_tpot[e.key] >= 0]
        negative = [e for e in pool if e not in positive]
        if (slo_ttft or slo_tpot) and not positive and request.priority < 0:
            request.state.set(
                SHED, f"no endpoint is predicted to meet the SLO (best TTFT {min(ttft.values()) * 1e3:.0f} ms)"
            )
        scores = dict.fromkeys((e.key for e in endpoints), 0.0)
        use_negative = not positive or (negative and rng.random() < p.epsilon_explore_neg)
        if not use_negative:
            scores.update(self._positive(positive, head_ttft, head_tpot))
        else:
            scores.update(self._negative(negative, head_ttft, head_tpot))
        return scores

    def _positive(
        self, tier: list[Endpoint], head_ttft: dict[str, float], head_tpot: dict[str, float]
    ) -> dict[str, float]:
        p = self.params
        keys = [e.key for e in tier]
        n_ttft = _normalise({k: head_ttft[k] for k in keys})
        n_tpot = _normalise({k: head_tpot[k] for k in keys})
        wt, wp = p.ttft_weight, p.tpot_weight
        if len(set(head_ttft[k] for k in keys)) == 1:
            wt, wp = 0.0, 1.0
        elif len(set(head_tpot[k] for k in keys)) == 1:
            wt, wp = 1.0, 0.0
        norm = (wt + wp) or 1.0
        combined = {k: (wt * n_ttft[k] + wp * n_tpot[k]) / norm for k in keys}
        return {k: (1.0 - c) if p.headroom_selection_strategy == "least" else c for k, c in combined.items()}

    def _negative(
        self, tier: list[Endpoint], head_ttft: dict[str, float], head_tpot: dict[str, float]
    ) -> dict[str, float]:
        p = self.params
        idle = [e for e in tier if self.ctx.inflight.load(e.key).requests == 0]
        if idle:
            tier = idle
        keys = [e.key for e in tier]
        deficit = {
            k: p.neg_headroom_ttft_weight * max(0.0, -head_ttft[k])
            + p.neg_headroom_tpot_weight * max(0.0, -head_tpot[k])
            for k in keys
        }
        return min_max_inverse(deficit)
