"""The load this router has put on each endpoint, counted at the moment it acts (llm-d's in-flight load).

Why: scraped queue depth lags and, on vLLM, barely moves (requests go straight into the running batch), so a
router that only reads it piles a burst onto one pod. This tracker is updated when the router dispatches a
request, when its first token comes back and when it finishes, fails or is aborted, so it is never stale:

    requests   requests dispatched and not finished
    tokens     uncached prompt tokens not yet prefilled (the request's prompt minus its expected prefix hit)
    decoding   requests past their first token

It also measures each endpoint's prefill rate (uncached tokens ahead of and in a request, over its TTFT) so
TTFT estimates need no hand-calibrated `peakPrefillThroughput` (they use the pool's median rate by default).
For pools whose pods really differ in speed (mixed accelerators) it fits, per endpoint, TTFT against the
work and the decodes the request met (`EndpointTtftFit`): a plain tokens/TTFT ratio is biased towards busy
pods, whose fixed per-step costs are spread over more batched tokens, and blind to decodes that share the
steps; the fit's intercept and decode term take those out of the per-token slope.
Pure and synchronous: the gateway and the planner feed it through the scheduler's lifecycle hooks, each leg
keyed by (request id, endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from router_lite.latency_predictor import OnlineRegression


@dataclass
class InFlightLoad:
    """One endpoint's load as this router sees it."""

    requests: int = 0
    tokens: int = 0  # uncached prompt tokens dispatched and not yet past their first token
    decoding: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "tokens": self.tokens, "decoding": self.decoding}


@dataclass
class _Leg:
    key: str
    uncached: int
    tokens_ahead: int  # uncached tokens already in flight on the endpoint when this leg was dispatched
    decoding_ahead: int
    requests_ahead: int
    dispatched: float
    first_token: float | None = None
    load_at_first_token: tuple[int, int, int] | None = None


@dataclass
class TtftObservation:
    """What one request's first token taught: its TTFT and the load it met at dispatch."""

    request_id: str
    key: str
    uncached: int
    tokens_ahead: int
    decoding_at_dispatch: int
    requests_at_dispatch: int
    ttft_s: float


@dataclass
class TpotObservation:
    """What one finished leg's decode taught: its mean time per output token and the load on its endpoint
    (decoding requests, uncached prompt tokens, requests) when its first token came back."""

    request_id: str
    key: str
    decoding: int
    tokens: int
    requests: int
    tpot_s: float


@dataclass
class EndpointTtftFit:
    """One endpoint's TTFT as a line in what its requests met: ttft ~ a + b * work + c * decoding, where work is
    the uncached tokens ahead plus the request's own (thousands) and decoding the requests decoding there at
    dispatch. Recursive least squares with forgetting; it answers only once warm and only with a positive
    per-token cost (a slope fitted on too narrow a range of work is noise)."""

    warmup: int = 12
    forgetting: float = 0.99
    # Samples not yet folded into the model, oldest first: the fit is read only where a config asks for
    # per-endpoint TTFT, so the (numpy) updates wait until it is read, in the same order, to the same weights.
    # Bounded: folded at `_MAX_PENDING`.
    _model: OnlineRegression = field(init=False, repr=False)
    _pending: list[tuple[list[float], float]] = field(init=False, repr=False, default_factory=list)

    _MAX_PENDING = 4096

    def __post_init__(self) -> None:
        self._model = OnlineRegression(3, forgetting=self.forgetting, ridge=1e2, warmup=self.warmup)

    @property
    def model(self) -> OnlineRegression:
        """The regression with every sample so far."""
        self._fold()
        return self._model

    def _fold(self) -> None:
        for x, y in self._pending:
            self._model.update(x, y)
        self._pending.clear()

    def update(self, work: int, decoding: int, ttft_s: float) -> None:
        self._pending.append((self.features(work, decoding), ttft_s))
        if len(self._pending) >= self._MAX_PENDING:
            self._fold()

    def predict(self, work: int, decoding: float) -> float | None:
        if self.model.samples < self.warmup or self.model.weights[1] <= 0:
            return None
        return self.model.predict(self.features(work, decoding))

    @staticmethod
    def features(work: int, decoding: float) -> list[float]:
        return [1.0, work / 1000.0, float(decoding)]


@dataclass
class InFlightTracker:
    """Per-endpoint in-flight requests, uncached prefill tokens and decodes, plus measured prefill rates."""

    clock: Callable[[], float]
    rate_alpha: float = 0.2  # EWMA weight of a new prefill-rate sample
    _loads: dict[str, InFlightLoad] = field(default_factory=dict)
    _legs: dict[tuple[str, str], _Leg] = field(default_factory=dict)
    _rates: dict[str, float] = field(default_factory=dict)  # endpoint -> prefill tokens/s (EWMA)
    _fits: dict[str, EndpointTtftFit] = field(default_factory=dict)  # endpoint -> its own TTFT line
    listeners: list[Callable[[TtftObservation], None]] = field(default_factory=list)
    tpot_listeners: list[Callable[[TpotObservation], None]] = field(default_factory=list)

    def load(self, key: str) -> InFlightLoad:
        """The endpoint's current load (a zero load for an endpoint with nothing in flight)."""
        return self._loads.get(key) or InFlightLoad()

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        return {k: {**v.to_dict(), "prefill_tokens_per_s": self._rates.get(k)} for k, v in self._loads.items()}

    def prefill_rate(self, key: str) -> float | None:
        """Measured prefill tokens per second on `key` (None until one first token was seen there)."""
        return self._rates.get(key)

    def fitted_ttft_s(self, key: str, work: int, decoding: float, min_samples: int = 0) -> float | None:
        """TTFT on `key`'s own fitted line for `work` uncached tokens met and `decoding` requests decoding there
        (None until warm, or until `min_samples` first tokens were seen there): bias-free, the per-step overhead
        and the decodes sharing the steps priced apart."""
        fit = self._fits.get(key)
        if fit is None or fit.model.samples < min_samples:
            return None
        return fit.predict(work, decoding)

    def pool_prefill_rate(self) -> float | None:
        """Median measured rate across endpoints: the estimate for an endpoint not yet measured."""
        rates = sorted(self._rates.values())
        return rates[len(rates) // 2] if rates else None

    def ttft_estimate_s(
        self,
        key: str,
        uncached_tokens: int,
        peak_tokens_per_s: float,
        measured: bool = True,
        per_endpoint: bool = False,
    ) -> float:
        """Seconds until a request with `uncached_tokens` to prefill on `key` would see its first token: the
        prefill work in flight there plus its own, at a measured rate (`measured`) or at `peak_tokens_per_s`.

        The measured rate is the pool's (the median of the endpoints' rates): a pool's pods are replicas of one
        model server, and their separately measured rates drift apart by noise alone (up to 2x on a shared
        machine), which sent a request to the pod with more prefill queued whenever that pod's last samples
        were lucky. `per_endpoint` uses each endpoint's own fitted TTFT line (the pool rate until it is warm),
        for pools whose pods really differ in speed."""
        load = self.load(key)
        work = load.tokens + uncached_tokens
        if measured and per_endpoint and key in self._fits:
            fitted = self._fits[key].predict(work, load.decoding)
            if fitted is not None:
                return fitted
        rate = self.pool_prefill_rate() if measured else None
        return work / (rate or peak_tokens_per_s)

    def dispatch(self, request_id: str, key: str, uncached_tokens: int) -> None:
        """A leg of `request_id` went to `key`; idempotent (a re-sent hook never double-counts)."""
        leg_key = (request_id, key)
        if leg_key in self._legs:
            return
        load = self._loads.setdefault(key, InFlightLoad())
        uncached = max(0, int(uncached_tokens))
        self._legs[leg_key] = _Leg(key, uncached, load.tokens, load.decoding, load.requests, self.clock())
        load.requests += 1
        load.tokens += uncached

    def first_token(self, request_id: str, key: str) -> TtftObservation | None:
        """The leg's first token arrived: its prefill is done; it now decodes. Returns what was learned."""
        leg_key = (request_id, key)
        leg = self._legs.get(leg_key)
        if leg is None or leg.first_token is not None:
            return None
        now = self.clock()
        leg.first_token = now
        load = self._loads[key]
        load.tokens -= leg.uncached
        load.decoding += 1
        obs = TtftObservation(
            request_id,
            key,
            leg.uncached,
            leg.tokens_ahead,
            leg.decoding_ahead,
            leg.requests_ahead,
            now - leg.dispatched,
        )
        leg.load_at_first_token = (load.decoding, load.tokens, load.requests)
        work = leg.uncached + leg.tokens_ahead
        if work >= 64 and obs.ttft_s > 0:  # tiny prefills measure overheads, not a rate
            sample = work / obs.ttft_s
            old = self._rates.get(key)
            self._rates[key] = sample if old is None else old + self.rate_alpha * (sample - old)
        if obs.ttft_s > 0:
            fit = self._fits.get(key)
            if fit is None:  # (setdefault would build a fit, and its regression, on every first token)
                fit = self._fits[key] = EndpointTtftFit()
            fit.update(work, leg.decoding_ahead, obs.ttft_s)
        for listener in self.listeners:
            listener(obs)
        return obs

    def finish(self, request_id: str, key: str, output_tokens: int | None = None) -> None:
        """The leg ended on `key` (done, failed, aborted or retried elsewhere); idempotent. With the count of
        tokens it streamed, its mean time per output token is reported to `tpot_listeners`."""
        leg = self._legs.pop((request_id, key), None)
        if leg is None:
            return
        if output_tokens and output_tokens > 1 and leg.first_token is not None and leg.load_at_first_token:
            obs = TpotObservation(
                request_id, key, *leg.load_at_first_token, (self.clock() - leg.first_token) / (output_tokens - 1)
            )
            for listener in self.tpot_listeners:
                listener(obs)
        load = self._loads[key]
        load.requests -= 1
        if leg.first_token is None:
            load.tokens -= leg.uncached
        else:
            load.decoding -= 1
        if load.requests == 0:
            del self._loads[key]

    def in_flight(self) -> int:
        """Legs in flight over all endpoints."""
        return len(self._legs)
