"""The router's Prometheus metrics, in a registry per app so several routers can live in one process.

Two sets: EPP's own names and semantics (inference_objective_*, inference_pool_*, inference_extension_*, as
the Gateway API Inference Extension defines them, so its Grafana dashboards and alert rules work unchanged),
and `llmd_router_*` extras EPP lacks (P/D, KV events, retries, decision stream).
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Scheduling is sub-millisecond, so the buckets start at 25 us.
_SCHED_BUCKETS = (25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# EPP's buckets (GIE pkg/epp/metrics), so quantiles compare across the two implementations.
_EPP_LATENCY = (
    0.005,
    0.025,
    0.05,
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    1.0,
    1.25,
    1.5,
    2,
    3,
    4,
    5,
    6,
    8,
    10,
    15,
    20,
    30,
    45,
    60,
    120,
    180,
    240,
    300,
    360,
    480,
    600,
    900,
    1200,
    1800,
    2700,
    3600,
)
_EPP_SCHED = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
_EPP_REQ_SIZES = tuple(2**i for i in range(6, 31))  # 64 B .. 1 GiB
_EPP_RESP_SIZES = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536)
_EPP_IN_TOKENS = (
    1,
    8,
    16,
    32,
    64,
    128,
    256,
    512,
    1024,
    2048,
    4096,
    8192,
    16384,
    32778,
    65536,
    131072,
    262144,
    524288,
    1048576,
)
_EPP_OUT_TOKENS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
_EPP_NTPOT = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_EPP_HIT_RATIO = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_EPP_HIT_BYTES = (0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_MT = ["model_name", "target_model_name"]
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


class RouterMetrics:
    """Counters, gauges and histograms the gateway updates; `render()` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "llmd_router_"
        self.requests = Counter(
            p + "requests", "Requests answered, by route and HTTP status", ["route", "status"], registry=r
        )
        self.decisions = Counter(
            p + "decisions", "Scheduling decisions, by chosen endpoint and role", ["endpoint", "role"], registry=r
        )
        self.scheduling_latency = Histogram(
            p + "scheduling_latency_seconds",
            "Time to run the scheduler for one request",
            buckets=_SCHED_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            p + "request_duration_seconds",
            "Time from request arrival to the last byte sent",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_byte_latency = Histogram(
            p + "time_to_first_byte_seconds",
            "Time from request arrival to the first response byte",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prefix_hit_blocks = Counter(
            p + "prefix_hit_blocks", "Prompt blocks found cached on the chosen endpoint (any prefix scorer)", registry=r
        )
        self.prompt_blocks = Counter(p + "prompt_blocks", "Full prompt blocks of scheduled requests", registry=r)
        self.errors = Counter(p + "errors", "Errors, by kind", ["kind"], registry=r)
        self.retries = Counter(
            p + "retries", "Requests re-sent to the next-best endpoint before the first byte", registry=r
        )
        self.shed = Counter(
            p + "shed_requests", "Requests rejected with 429 while saturated or queue full", ["reason"], registry=r
        )
        self.queue_size = Gauge(p + "queue_size", "Requests waiting in the flow-control queue", registry=r)
        self.inflight = Gauge(p + "inflight_requests", "Requests being proxied now", registry=r)
        self.pd_disaggregated = Counter(p + "pd_disaggregated", "Requests served with a remote prefill", registry=r)
        self.pd_fallbacks = Counter(
            p + "pd_fallbacks", "Disaggregated requests that fell back to decode-only", ["reason"], registry=r
        )
        self.kv_events = Counter(
            p + "kv_event_batches", "KV event batches applied to the index", ["endpoint"], registry=r
        )
        self.kv_event_errors = Counter(
            p + "kv_event_errors", "KV event messages that could not be decoded or applied", ["endpoint"], registry=r
        )
        self.endpoint_healthy = Gauge(
            p + "endpoint_healthy", "1 when the endpoint is in the candidate set", ["endpoint"], registry=r
        )
        self.scrape_errors = Counter(p + "scrape_errors", "Failed /metrics scrapes", ["endpoint"], registry=r)
        self.decision_drops = Counter(
            p + "decision_stream_drops", "Decisions dropped for slow /debug/decisions readers", registry=r
        )
        self.config_swaps = Counter(p + "config_swaps", "Scheduling configs switched live", registry=r)

        self._epp(r)

    def _epp(self, r: CollectorRegistry) -> None:
        """EPP's families, names, types and labels as GIE defines them."""
        o, pl, x = "inference_objective_", "inference_pool_", "inference_extension_"
        self.epp_requests = Counter(
            o + "request",
            "Counter of inference objective requests broken out for each model and target model.",
            _MT,
            registry=r,
        )
        self.epp_request_errors = Counter(
            o + "request_error",
            "Counter of inference objective requests errors broken out for each model and target model.",
            [*_MT, "error_code"],
            registry=r,
        )
        self.epp_duration = Histogram(
            o + "request_duration_seconds",
            "Inference objective response latency distribution in seconds for each model and target model.",
            _MT,
            buckets=_EPP_LATENCY,
            registry=r,
        )
        self.epp_ttft = Histogram(
            o + "request_ttft_seconds",
            "Inference model TTFT distribution in seconds for each model and target model.",
            _MT,
            buckets=_EPP_LATENCY,
            registry=r,
        )
        self.epp_request_sizes = Histogram(
            o + "request_sizes",
            "Inference objective requests size distribution in bytes for each model and target model.",
            _MT,
            buckets=_EPP_REQ_SIZES,
            registry=r,
        )
        self.epp_response_sizes = Histogram(
            o + "response_sizes",
            "Inference objective responses size distribution in bytes for each model and target model.",
            _MT,
            buckets=_EPP_RESP_SIZES,
            registry=r,
        )
        self.epp_input_tokens = Histogram(
            o + "input_tokens",
            "Inference objective input token count distribution for requests in each model.",
            _MT,
            buckets=_EPP_IN_TOKENS,
            registry=r,
        )
        self.epp_output_tokens = Histogram(
            o + "output_tokens",
            "Inference objective output token count distribution for requests in each model.",
            _MT,
            buckets=_EPP_OUT_TOKENS,
            registry=r,
        )
        self.epp_ntpot = Histogram(
            o + "normalized_time_per_output_token_seconds",
            "Inference objective latency divided by number of output tokens in seconds for each model and target "
            "model.",
            _MT,
            buckets=_EPP_NTPOT,
            registry=r,
        )
        self.epp_running = Gauge(
            o + "running_requests",
            "Inference objective number of running requests in each model.",
            ["model_name"],
            registry=r,
        )
        self.pool_kv = Gauge(
            pl + "average_kv_cache_utilization",
            "The average kv cache utilization for an inference server pool.",
            ["name"],
            registry=r,
        )
        self.pool_queue = Gauge(
            pl + "average_queue_size",
            "The average number of requests pending in the model server queue.",
            ["name"],
            registry=r,
        )
        self.pool_per_pod_queue = Gauge(
            pl + "per_pod_queue_size",
            "The total number of queue for each model server pod under the inference pool",
            ["model_server_pod", "name"],
            registry=r,
        )
        self.pool_ready = Gauge(
            pl + "ready_pods", "The number of ready pods in the inference server pool.", ["name"], registry=r
        )
        self.sched_e2e = Histogram(
            x + "scheduler_e2e_duration_seconds",
            "End-to-end scheduling latency distribution in seconds.",
            buckets=_EPP_SCHED,
            registry=r,
        )
        self.sched_attempts = Counter(
            x + "scheduler_attempts", "Total number of scheduling attempts.", ["status"], registry=r
        )
        self.plugin_duration = Histogram(
            x + "plugin_duration_seconds",
            "Plugin processing latency distribution in seconds for each extension point, plugin type and plugin name.",
            ["extension_point", "plugin_type", "plugin_name"],
            buckets=_EPP_SCHED,
            registry=r,
        )
        self.prefix_indexer_size = Gauge(x + "prefix_indexer_size", "Size of the prefix indexer.", registry=r)
        self.prefix_hit_ratio = Histogram(
            x + "prefix_indexer_hit_ratio",
            "Ratio of prefix length matched to total prefix length in the cache lookup.",
            buckets=_EPP_HIT_RATIO,
            registry=r,
        )
        self.prefix_hit_bytes = Histogram(
            x + "prefix_indexer_hit_bytes",
            "Length of the prefix match in number of bytes in the cache lookup.",
            buckets=_EPP_HIT_BYTES,
            registry=r,
        )
        self.info = Gauge(
            x + "info",
            "General information of the current build of Inference Extension.",
            ["commit", "build_ref"],
            registry=r,
        )
        self.info.labels("", "router_lite").set(1)

    # -- what the gateway reports, one call per step of a request ------------------------------------
    def request_received(self, req: Any, body_bytes: int) -> None:
        mt = (req.model, req.effective_model)
        self.epp_requests.labels(*mt).inc()
        self.epp_request_sizes.labels(*mt).observe(body_bytes)

    def request_failed(self, req: Any | None, error_code: str) -> None:
        """A request answered with an error (EPP counts these per model, with the error code)."""
        model, target = (req.model, req.effective_model) if req is not None else ("", "")
        self.epp_request_errors.labels(model, target, error_code).inc()

    def scheduled(self, result: Any) -> None:
        """One scheduling cycle: latency, outcome, per-plugin time, the (tokenized) prompt's length."""
        self.scheduling_latency.observe(result.scheduling_time_s)
        self.sched_e2e.observe(result.scheduling_time_s)
        self.sched_attempts.labels("success" if result.target is not None else "failure").inc()
        for pr in result.profile_results.values():
            for point, ptype, pname, secs in pr.plugin_durations:
                self.plugin_duration.labels(point, ptype, pname).observe(secs)
        req = result.request
        if req.prompt_token_ids:
            self.epp_input_tokens.labels(req.model, req.effective_model).observe(len(req.prompt_token_ids))

    def prefix_hit(self, result: Any, target: Any) -> None:
        """The prefix hit on the endpoint that served the request, for every prefix scorer (approximate or
        precise): blocks matched / full blocks in the prompt."""
        pr = result.profile_results.get(result.primary_profile)
        if pr is None or not pr.prefix_total_blocks:
            return
        hit = min(pr.prefix_blocks.get(target.key, 0), pr.prefix_total_blocks)
        self.prompt_blocks.inc(pr.prefix_total_blocks)
        self.prefix_hit_blocks.inc(hit)
        self.prefix_hit_ratio.observe(hit / pr.prefix_total_blocks)
        # EPP counts matched prompt characters; ~4 per token (CHARS_PER_TOKEN) when tokens are all we have.
        self.prefix_hit_bytes.observe(hit * (pr.prefix_block_size or 0) * 4)

    def first_byte(self, req: Any, elapsed_s: float) -> None:
        self.first_byte_latency.observe(elapsed_s)
        self.epp_ttft.labels(req.model, req.effective_model).observe(elapsed_s)
        self.epp_running.labels(req.model).inc()

    def completed(self, req: Any, elapsed_s: float, response_bytes: int, tail: bytes) -> None:
        """The response has been sent; `tail` is its end, where the usage object (output tokens) sits."""
        mt = (req.model, req.effective_model)
        self.request_latency.observe(elapsed_s)
        self.epp_running.labels(req.model).dec()
        self.epp_duration.labels(*mt).observe(elapsed_s)
        self.epp_response_sizes.labels(*mt).observe(response_bytes)
        found = _COMPLETION_TOKENS.findall(tail)
        if found:
            n = int(found[-1])
            if n > 0:
                self.epp_output_tokens.labels(*mt).observe(n)
                self.epp_ntpot.labels(*mt).observe(elapsed_s / n)

    def pool(self, name: str, endpoints: list[Any], index_stats: dict[str, dict[str, Any]]) -> None:
        """Pool gauges, computed when /metrics is read (EPP refreshes them on its own tick)."""
        n = len(endpoints)
        self.pool_ready.labels(name).set(n)
        self.pool_kv.labels(name).set(sum(e.metrics.kv_cache_usage_percent for e in endpoints) / n if n else 0.0)
        self.pool_queue.labels(name).set(sum(e.metrics.waiting_queue_size for e in endpoints) / n if n else 0.0)
        self.pool_per_pod_queue.clear()
        for e in endpoints:
            self.pool_per_pod_queue.labels(e.name or e.key, name).set(e.metrics.waiting_queue_size)
        self.prefix_indexer_size.set(sum(int(s.get("blocks", 0)) for s in index_stats.values()))

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
            "requests": GaugeMetricFamily(
                p + "inflight_requests", "Requests this router dispatched and not finished", labels=["endpoint"]
            ),
            "tokens": GaugeMetricFamily(
                p + "inflight_prefill_tokens",
                "Uncached prompt tokens dispatched, before their first token",
                labels=["endpoint"],
            ),
            "decoding": GaugeMetricFamily(
                p + "inflight_decodes", "Requests past their first token, not finished", labels=["endpoint"]
            ),
            "prefill_tokens_per_s": GaugeMetricFamily(
                p + "prefill_tokens_per_second", "Prefill rate measured from TTFTs", labels=["endpoint"]
            ),
        }
        for key, load in self.tracker.snapshot().items():
            for name, fam in fams.items():
                if load.get(name) is not None:
                    fam.add_metric([key], float(load[name]))
        yield from fams.values()
