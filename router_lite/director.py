"""The one request flow (llm-d's Director), shared by the live gateway and the offline planners.

    start:     schedule -> shed? -> on_routed -> PreRequest plugins (headers for the pods)
    prefill:   [P/D] the prefill leg ran (ok, or failed: fall back to decode-only)
    dispatch:  sent ok, or failed -> next candidate (retry) or give up
    stream:    first token -> finished (exactly once, however the request ends)

The director does no I/O and keeps no clock: the gateway calls it around HTTP (proxy, SSE relay), the planner
around engine submissions on its virtual clock. So the accounting of in-flight load, the plugins' feedback, the
retry order and the P/D fall-back are written once and are the same live and planned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router_lite.failures import Failure
from router_lite.types import ENCODE_TARGET, SHED, Endpoint, LLMRequest, SchedulingResult

if TYPE_CHECKING:
    from router_lite.metrics import RouterMetrics
    from router_lite.scheduler import Scheduler

__all__ = ["Director", "Flow", "NoEndpoint", "Shed"]


class NoEndpoint(Exception):
    """No endpoint can take the request now (none healthy, or the filters left none): answered with 503."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class Shed(Exception):
    """A sheddable request no endpoint can serve within its SLO: answered with 429."""


@dataclass(eq=False)
class Flow:
    """One request on its way through the router: where it is, where it was tried, what is still owed."""

    request: LLMRequest
    result: SchedulingResult
    scheduler: "Scheduler"  # the one it started on: a config swap does not move requests in flight
    candidates: list[Endpoint]
    target: Endpoint
    prefill: Endpoint | None
    headers: dict[str, str] = field(default_factory=dict)  # what PreRequest plugins tell the decode pod
    attempts: list[dict[str, Any]] = field(default_factory=list)
    pd: dict[str, Any] | None = None  # {"prefill": key, "fallback": reason or None} for the decision record
    encode: Endpoint | None = None  # E/P/D: the encoder pod (its leg runs first)
    epd: dict[str, Any] | None = None  # {"encode": key, "fallback": reason or None, "ms": leg time}
    _tried: set[str] = field(default_factory=set)
    _ranked: list[Endpoint] | None = None
    _open: bool = True  # the current target still holds this request (in-flight accounting)
    _prefill_open: bool = False  # the prefill pod still holds it (P/D, before prefill_done)

    @property
    def retries(self) -> int:
        return max(0, len(self.attempts) - 1)


class Director:
    """Drives flows through the current scheduler; `metrics` is None where nobody exports them (the planner)."""

    def __init__(
        self,
        scheduler: Callable[[], "Scheduler"],
        *,
        max_retries: int = 2,
        report_failure: Callable[[str, str], None] | None = None,
        metrics: "RouterMetrics | None" = None,
    ) -> None:
        self._scheduler = scheduler
        self.max_retries = max(0, max_retries)
        self._report_failure = report_failure
        self.metrics = metrics

    # ---- start ---------------------------------------------------------------------------------------
    def start(self, request: LLMRequest, candidates: list[Endpoint]) -> Flow:
        """Schedule `request` among the healthy `candidates` and route it; raises NoEndpoint or Shed."""
        if not candidates:
            raise NoEndpoint("no healthy model server endpoint is available", "no_healthy_endpoint")
        scheduler = self._scheduler()
        result = scheduler.schedule(request, candidates)
        m = self.metrics
        if m is not None:
            m.scheduled(result)
        if result.target is None:
            raise NoEndpoint(f"no endpoint can serve this request: {result.reason}", "no_endpoint")
        shed = request.state.get(SHED)
        if shed:  # a plugin (latency-scorer) found no endpoint that meets this sheddable request's SLO
            if m is not None:
                m.shed.labels("slo").inc()
            raise Shed(f"request shed: {shed}")
        scheduler.on_routed(request, result)
        if result.prefill_unavailable and m is not None:
            m.pd_fallbacks.labels("no_prefill_endpoint").inc()  # the decider wanted P/D: never silent
        prefill = result.prefill
        if prefill is not None and prefill.key == result.target.key:
            prefill = None  # a prefill on the decode pod itself is the ordinary request: one leg does both
        flow = Flow(request, result, scheduler, candidates, result.target, prefill)
        if flow.prefill is not None:
            flow.pd = {"prefill": flow.prefill.key, "fallback": None}
            flow._prefill_open = True
        if result.encode is not None:
            flow.encode = result.encode
            flow.epd = {"encode": result.encode.key, "fallback": None, "ms": None}
            request.state.set(ENCODE_TARGET, result.encode)
        flow.headers = scheduler.pre_request(request, flow.target, flow.prefill)
        return flow

    # ---- E/P/D encode leg ----------------------------------------------------------------------------
    def encode_done(self, flow: Flow, seconds: float, failure: Failure | None = None) -> None:
        """The encode leg ended: on failure the prefill (or decode) pod encodes the items itself."""
        encode = flow.encode
        if encode is None or flow.epd is None:
            return
        flow.epd["ms"] = round(seconds * 1000.0, 3)
        if failure is None:
            return
        flow.epd["fallback"] = failure.message
        result = flow.result
        result.reason = (result.reason + "; " if result.reason else "") + (
            f"encode on {encode.key} failed ({failure.message}): the target encodes"
        )
        if failure.kind.pod_down:
            self._pod_down(encode.key, failure.message)
        flow.encode = None
        flow.request.state.pop(ENCODE_TARGET)
        flow.headers = flow.scheduler.pre_request(flow.request, flow.target, flow.prefill)

    # ---- P/D prefill leg -----------------------------------------------------------------------------
    def prefill_done(self, flow: Flow, failure: Failure | None = None) -> None:
        """The prefill leg ended: on failure the request goes on decode-only (the decode pod prefills)."""
        prefill = flow.prefill
        if prefill is None or not flow._prefill_open:
            return
        flow._prefill_open = False
        flow.scheduler.on_finished(flow.request, prefill)  # the prefill leg is over, whatever its outcome
        m = self.metrics
        if failure is None:
            if m is not None:
                m.pd_disaggregated.inc()
            return
        assert flow.pd is not None
        flow.pd["fallback"] = failure.message
        result = flow.result
        result.reason = (result.reason + "; " if result.reason else "") + (
            f"prefill on {prefill.key} failed ({failure.message}): fell back to decode-only"
        )
        if m is not None:
            m.pd_fallbacks.labels(failure.kind.fallback_label).inc()
        if failure.kind.pod_down:
            self._pod_down(prefill.key, failure.message)
        flow.prefill = None
        flow.headers = flow.scheduler.pre_request(flow.request, flow.target, None)

    # ---- dispatch ------------------------------------------------------------------------------------
    def dispatched(self, flow: Flow) -> None:
        """The current target accepted the request (its first byte, or the engine took it)."""
        flow._tried.add(flow.target.key)
        flow.attempts.append({"endpoint": flow.target.key, "outcome": "ok"})
        m = self.metrics
        if m is not None:
            m.decisions.labels(flow.target.key, flow.target.role).inc()
            if flow.prefill is not None:
                m.decisions.labels(flow.prefill.key, "prefill").inc()
            m.prefix_hit(flow.result, flow.target)

    def dispatch_failed(self, flow: Flow, failure: Failure) -> Endpoint | None:
        """The current target failed before answering: the next endpoint to try (already routed there and
        its headers set), or None when the request has failed for good."""
        target = flow.target
        flow._tried.add(target.key)
        flow.attempts.append({"endpoint": target.key, "outcome": failure.kind.value, "error": failure.message})
        self._release(flow)
        if failure.kind.pod_down:
            self._pod_down(target.key, failure.message)
        nxt = None
        if failure.kind.retryable and len(flow.attempts) <= self.max_retries:
            nxt = next((e for e in self._retry_order(flow) if e.key not in flow._tried and e.healthy), None)
        m = self.metrics
        if nxt is None:
            if m is not None:
                m.errors.labels("upstream").inc()
            return None
        if m is not None:
            m.retries.inc()
        flow.target = nxt
        flow._open = True
        flow.scheduler.on_routed(flow.request, flow.result, nxt)
        flow.headers = flow.scheduler.pre_request(flow.request, nxt, flow.prefill)
        return nxt

    def _retry_order(self, flow: Flow) -> list[Endpoint]:
        """The profile's candidates best first, then any endpoint of the same role a filter set aside (a
        sticky-affinity filter may have kept only the pod that just died)."""
        if flow._ranked is None:
            ranked = flow.result.ranked()
            role = flow.target.role
            ranked += [e for e in flow.candidates if e not in ranked and e.role in (role, "both")]
            flow._ranked = ranked
        return flow._ranked

    # ---- response ------------------------------------------------------------------------------------
    def first_token(self, flow: Flow) -> None:
        """The first token came back: the request's prefill on its target is over."""
        flow.scheduler.on_first_token(flow.request, flow.target)

    def finished(self, flow: Flow, output_tokens: int | None = None) -> None:
        """The request ended on its target (success, failure, client gone, even mid-prefill); later calls do
        nothing."""
        if flow._prefill_open and flow.prefill is not None:
            flow._prefill_open = False
            flow.scheduler.on_finished(flow.request, flow.prefill)
        self._release(flow, output_tokens)

    def _release(self, flow: Flow, output_tokens: int | None = None) -> None:
        if flow._open:
            flow._open = False
            flow.scheduler.on_finished(flow.request, flow.target, output_tokens=output_tokens)

    def _pod_down(self, key: str, message: str) -> None:
        if self._report_failure is not None:
            self._report_failure(key, message)

    # ---- record --------------------------------------------------------------------------------------
    @staticmethod
    def decision(flow: Flow, status: int, served_by: str | None) -> Callable[[], dict[str, Any]]:
        """The decision record of `flow`, rendered only when someone reads the decision stream."""
        result, attempts, pd, epd = flow.result, list(flow.attempts), flow.pd, flow.epd

        def render() -> dict[str, Any]:
            d = result.to_decision_dict()
            d["served_by"] = served_by
            d["status"] = status
            d["attempts"] = attempts
            d["retries"] = max(0, len(attempts) - 1)
            if pd is not None:
                d["pd"] = pd
            if epd is not None:
                d["epd"] = epd
            return d

        return render
