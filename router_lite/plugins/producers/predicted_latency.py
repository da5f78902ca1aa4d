"""predicted-latency-producer (llm-d): per candidate, this request's predicted TTFT and TPOT.

The models (router_lite.latency_predictor) learn online from the router's own observations: each first
token teaches TTFT given the load the request met at dispatch; each finish teaches TPOT. Predictions for the
chosen endpoint are kept until the actual values arrive, so predicted-vs-actual error is reported after a
warm-up (`stats()` in `/debug/endpoints`: TTFT and TPOT median and p90 of |pred - actual| / actual, and the
last requests' predicted and actual values, which the TUI's decision view shows beside the decision's
`predicted`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from router_lite.inflight import TpotObservation, TtftObservation
from router_lite.latency_predictor import (
    OnlineRegression,
    PredictionErrors,
    tpot_features,
    ttft_features,
)
from router_lite.plugins import (
    PluginContext,
    Producer,
    find_prefix_plugin,
    uncached_tokens,
)
from router_lite.registry import ConfigError, register
from router_lite.types import PREDICTIONS, Endpoint, LLMRequest

RECENT = 64  # predicted-vs-actual outcomes kept for /debug/endpoints and the TUI


@dataclass
class PredictedLatencyParams:
    prefix_match_info_producer_name: str = ""
    warmup_samples: int = 20  # observations before a model predicts at all
    forgetting: float = 0.998  # per-sample weight decay of old observations

    def validate(self) -> str | None:
        if self.warmup_samples < 1:
            return f"warmupSamples: expected an integer >= 1, got {self.warmup_samples}"
        if not 0.9 <= self.forgetting <= 1.0:
            return f"forgetting: expected a number in [0.9, 1], got {self.forgetting}"
        return None


@register
class PredictedLatencyProducer(Producer):
    type_name = "predicted-latency-producer"
    Params = PredictedLatencyParams

    @classmethod
    def upstream_form(cls, parameters: dict) -> dict:
        """llm-d's producer calls its predictor sidecars; the in-process model's knobs are router_lite's."""
        return {k: v for k, v in parameters.items() if k not in ("warmupSamples", "forgetting")}

    def __init__(self, name: str, params: PredictedLatencyParams, ctx: PluginContext) -> None:
        super().__init__(name, params, ctx)
        self.ttft = OnlineRegression(5, forgetting=params.forgetting, warmup=params.warmup_samples)
        self.tpot = OnlineRegression(4, forgetting=params.forgetting, warmup=params.warmup_samples)
        self.ttft_errors = PredictionErrors()
        self.tpot_errors = PredictionErrors()
        self._pending: dict[tuple[str, str], dict[str, float | None]] = {}  # (request, endpoint) -> outcome so far
        self.recent: deque[dict[str, float | str | None]] = deque(maxlen=RECENT)  # completed predicted-vs-actual
        ctx.inflight.listeners.append(self._observe_ttft)
        ctx.inflight.tpot_listeners.append(self._observe_tpot)

    def bind(self) -> None:
        wanted = self.params.prefix_match_info_producer_name
        self.prefix = find_prefix_plugin(self.ctx, wanted)
        if wanted and self.prefix is None:
            raise ConfigError(f"{self.name}: prefixMatchInfoProducerName {wanted!r} names no prefix plugin")

    def close(self) -> None:
        """Stop learning (a config swap replaced this plugin; the tracker lives on)."""
        inflight = self.ctx.inflight
        if self._observe_ttft in inflight.listeners:
            inflight.listeners.remove(self._observe_ttft)
        if self._observe_tpot in inflight.tpot_listeners:
            inflight.tpot_listeners.remove(self._observe_tpot)

    def predict(self, request: LLMRequest, endpoints: list[Endpoint]) -> dict[str, tuple[float | None, float | None]]:
        """Endpoint key -> (TTFT s, TPOT s), None where a model is still warming up. Recorded on the request."""
        mine = uncached_tokens(self.ctx, request, endpoints, self.prefix)
        out: dict[str, tuple[float | None, float | None]] = {}
        record = request.state.setdefault(PREDICTIONS, dict)
        for e in endpoints:
            load = self.ctx.inflight.load(e.key)
            ttft = self.ttft.predict(ttft_features(mine[e.key], load.tokens, load.decoding, load.requests))
            tpot = self.tpot.predict(tpot_features(load.decoding + 1, load.tokens, load.requests + 1))
            out[e.key] = (ttft, tpot)
            record[e.key] = {
                "ttft_ms": None if ttft is None else round(ttft * 1e3, 2),
                "tpot_ms": None if tpot is None else round(tpot * 1e3, 3),
            }
        return out

    def on_routed(self, request: LLMRequest, endpoint: Endpoint, profile: str) -> None:
        rec = (request.state.get(PREDICTIONS) or {}).get(endpoint.key)
        if rec and rec["ttft_ms"] is not None:
            self._pending[(request.request_id, endpoint.key)] = {
                "request_id": request.request_id,
                "endpoint": endpoint.key,
                "predicted_ttft_ms": rec["ttft_ms"],
                "ttft_ms": None,
                "predicted_tpot_ms": rec["tpot_ms"],
                "tpot_ms": None,
            }

    def on_finished(self, request: LLMRequest, endpoint: Endpoint) -> None:
        out = self._pending.pop((request.request_id, endpoint.key), None)
        if out is not None and out["ttft_ms"] is not None:
            self.recent.append(out)

    def _observe_ttft(self, obs: TtftObservation) -> None:
        self.ttft.update(
            ttft_features(obs.uncached, obs.tokens_ahead, obs.decoding_at_dispatch, obs.requests_at_dispatch),
            obs.ttft_s,
        )
        out = self._pending.get((obs.request_id, obs.key))
        if out is not None:
            out["ttft_ms"] = round(obs.ttft_s * 1e3, 2)
            self.ttft_errors.add(out["predicted_ttft_ms"] / 1e3, obs.ttft_s)

    def _observe_tpot(self, obs: TpotObservation) -> None:
        self.tpot.update(tpot_features(obs.decoding, obs.tokens, obs.requests), obs.tpot_s)
        out = self._pending.get((obs.request_id, obs.key))
        if out is not None and out["predicted_tpot_ms"] is not None:
            out["tpot_ms"] = round(obs.tpot_s * 1e3, 3)
            self.tpot_errors.add(out["predicted_tpot_ms"] / 1e3, obs.tpot_s)

    def stats(self) -> dict[str, object]:
        return {
            "ttft_samples": self.ttft.samples,
            "tpot_samples": self.tpot.samples,
            "ttft_error_after_warmup": self.ttft_errors.summary(),
            "tpot_error_after_warmup": self.tpot_errors.summary(),
            "recent": list(self.recent),
        }
