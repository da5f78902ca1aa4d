"""predicted-latency-producer (llm-d): per candidate, this request's predicted TTFT and TPOT.

The models (router_lite.latency_predictor) learn online from the router's own observations: each first
token teaches TTFT given the load the request met at dispatch; each finish teaches TPOT. Predictions for the
chosen endpoint are kept until its first token, so predicted-vs-actual error is reported (`stats()`, the
decision record's `predicted`, `/debug/endpoints`) after a warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from router_lite.inflight import TtftObservation
from router_lite.latency_predictor import OnlineRegression, PredictionErrors, tpot_features, ttft_features
from router_lite.plugins import PluginContext, Producer, find_prefix_plugin, uncached_tokens
from router_lite.registry import ConfigError, register
from router_lite.types import PREDICTIONS, Endpoint, LLMRequest


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
        self._pending: dict[tuple[str, str], float] = {}  # (request, endpoint) -> predicted TTFT s
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
            record[e.key] = {"ttft_ms": None if ttft is None else round(ttft * 1e3, 2),
                             "tpot_ms": None if tpot is None else round(tpot * 1e3, 3)}
        return out

    def on_routed(self, request: LLMRequest, endpoint: Endpoint, profile: str) -> None:
        rec = (request.state.get(PREDICTIONS) or {}).get(endpoint.key)
        if rec and rec["ttft_ms"] is not None:
            self._pending[(request.request_id, endpoint.key)] = rec["ttft_ms"] / 1e3

    def on_finished(self, request: LLMRequest, endpoint: Endpoint) -> None:
        self._pending.pop((request.request_id, endpoint.key), None)

    def _observe_ttft(self, obs: TtftObservation) -> None:
        self.ttft.update(ttft_features(obs.uncached, obs.tokens_ahead, obs.decoding_at_dispatch, obs.requests_at_dispatch), obs.ttft_s)
        predicted = self._pending.pop((obs.request_id, obs.key), None)
        if predicted is not None:
            self.ttft_errors.add(predicted, obs.ttft_s)

    def _observe_tpot(self, decoding: int, tokens: int, requests: int, tpot_s: float) -> None:
        self.tpot.update(tpot_features(decoding, tokens, requests), tpot_s)

    def stats(self) -> dict[str, object]:
        return {"ttft_samples": self.ttft.samples, "tpot_samples": self.tpot.samples,
                "ttft_error_after_warmup": self.ttft_errors.summary()}
