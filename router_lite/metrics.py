"""The router's own Prometheus metrics, in a registry per app so several routers can live in one process."""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Scheduling is sub-millisecond, so the buckets start at 25 us.
_SCHED_BUCKETS = (25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RouterMetrics:
    """Counters, gauges and histograms the gateway updates; `render()` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "llmd_router_"
        self.requests = Counter(p + "requests", "Requests answered, by route and HTTP status", ["route", "status"], registry=r)
        self.decisions = Counter(p + "decisions", "Scheduling decisions, by chosen endpoint and role", ["endpoint", "role"], registry=r)
        self.scheduling_latency = Histogram(
            p + "scheduling_latency_seconds", "Time to run the scheduler for one request", buckets=_SCHED_BUCKETS, registry=r
        )
        self.request_latency = Histogram(
            p + "request_duration_seconds", "Time from request arrival to the last byte sent", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.first_byte_latency = Histogram(
            p + "time_to_first_byte_seconds", "Time from request arrival to the first response byte", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.prefix_hit_blocks = Counter(p + "prefix_hit_blocks", "Prompt blocks found cached on the chosen endpoint", registry=r)
        self.prompt_blocks = Counter(p + "prompt_blocks", "Full prompt blocks of scheduled requests", registry=r)
        self.errors = Counter(p + "errors", "Errors, by kind", ["kind"], registry=r)
        self.retries = Counter(p + "retries", "Requests re-sent to the next-best endpoint before the first byte", registry=r)
        self.shed = Counter(p + "shed_requests", "Requests rejected with 429 while saturated or queue full", ["reason"], registry=r)
        self.queue_size = Gauge(p + "queue_size", "Requests waiting in the flow-control queue", registry=r)
        self.inflight = Gauge(p + "inflight_requests", "Requests being proxied now", registry=r)
        self.pd_disaggregated = Counter(p + "pd_disaggregated", "Requests served with a remote prefill", registry=r)
        self.pd_fallbacks = Counter(p + "pd_fallbacks", "Disaggregated requests that fell back to decode-only", ["reason"], registry=r)
        self.kv_events = Counter(p + "kv_event_batches", "KV event batches applied to the index", ["endpoint"], registry=r)
        self.kv_event_errors = Counter(p + "kv_event_errors", "KV event messages that could not be decoded or applied", ["endpoint"], registry=r)
        self.endpoint_healthy = Gauge(p + "endpoint_healthy", "1 when the endpoint is in the candidate set", ["endpoint"], registry=r)
        self.scrape_errors = Counter(p + "scrape_errors", "Failed /metrics scrapes", ["endpoint"], registry=r)
        self.decision_drops = Counter(p + "decision_stream_drops", "Decisions dropped for slow /debug/decisions readers", registry=r)
        self.config_swaps = Counter(p + "config_swaps", "Scheduling configs switched live", registry=r)

    def watch_inflight(self, tracker: Any) -> None:
        """Export the router's own in-flight load per endpoint (router_lite.inflight), read at scrape time."""
        self.registry.register(_InFlightCollector(tracker))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _InFlightCollector:
    """`llmd_router_endpoint_inflight_{requests,prefill_tokens,decodes}` and the measured prefill rate."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        p = "llmd_router_endpoint_"
        fams = {
            "requests": GaugeMetricFamily(p + "inflight_requests", "Requests this router dispatched and not finished", labels=["endpoint"]),
            "tokens": GaugeMetricFamily(p + "inflight_prefill_tokens", "Uncached prompt tokens dispatched, before their first token", labels=["endpoint"]),
            "decoding": GaugeMetricFamily(p + "inflight_decodes", "Requests past their first token, not finished", labels=["endpoint"]),
            "prefill_tokens_per_s": GaugeMetricFamily(p + "prefill_tokens_per_second", "Prefill rate measured from TTFTs", labels=["endpoint"]),
        }
        for key, load in self.tracker.snapshot().items():
            for name, fam in fams.items():
                if load.get(name) is not None:
                    fam.add_metric([key], float(load[name]))
        yield from fams.values()
