"""Prometheus metrics for one simulated pod/rank, under vLLM's names, labels and histogram buckets.

Routers (llm-d's EPP, router_lite) scrape `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`,
`vllm:cache_config_info` and friends; using vLLM's exact names lets them read the simulator as they read vLLM.
Gauges and token counters are read from the engine at scrape time (no per-step bookkeeping); latency
histograms are observed per request. Everything carries `model_name` and `engine` labels. Metrics that
vLLM does not have are prefixed `llmd_sim:` so nobody mistakes them for vLLM's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's bucket boundaries (v1 PrometheusStatLogger).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

_LABELS = ("model_name", "engine")


class _EngineCollector:
    """Reads EngineStats (and a few shell counters) at scrape time."""

    def __init__(self, pm: "PodMetrics") -> None:
        self._pm = pm

    def collect(self):  # noqa: ANN201 - prometheus_client protocol
        pm = self._pm
        s = pm.stats_fn()
        lv = [pm.model_name, pm.engine]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=_LABELS)
            g.add_metric(lv, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=_LABELS)
            c.add_metric(lv, value)
            return c

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", s.num_running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", s.num_waiting)
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", s.kv_cache_usage)
        yield counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                      s.prefix_cache_queries_tokens)
        yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
                      s.prefix_cache_hits_tokens)
        yield counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", s.num_preemptions)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens_total)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.", s.generation_tokens_total)

        info = GaugeMetricFamily("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
                                 labels=list(pm.cache_info) + list(_LABELS))
        info.add_metric(list(pm.cache_info.values()) + lv, 1.0)
        yield info

        # No vllm:lora_requests_info: vLLM exports it only with LoRA enabled, and the simulator serves no adapters.

        yield gauge("llmd_sim:num_requests_waiting_for_remote_kv",
                    "Simulator extension: decode requests waiting for a P/D KV transfer.",
                    getattr(s, "num_waiting_for_remote_kv", 0))
        if pm.tiers_fn is not None:
            yield from _tier_families(pm.tiers_fn(), lv)


def _tier_families(f: Any, lv: list[str]):  # noqa: ANN202 - yields metric families
    """KV tiers below the GPU (kvtiers), per `medium` as vLLM's KV events name them (CPU, DISK).

    llm-d extensions, not vLLM metrics: hits count prompt tokens loaded from a tier instead of recomputed
    (the unit of vllm:prefix_cache_hits); DISK occupancy is the whole shared directory, all pods' blocks.
    """
    labels = [*_LABELS, "medium"]

    def per_medium(family: Any, values: dict[str, float]) -> Any:
        for medium, v in sorted(values.items()):
            family.add_metric([*lv, medium], v)
        return family

    yield per_medium(CounterMetricFamily("llmd_sim:kv_tier_hits", "llm-d extension: prompt tokens loaded from a KV "
                                         "tier below the GPU instead of recomputed, by medium.", labels=labels), f.hit_tokens)
    yield per_medium(GaugeMetricFamily("llmd_sim:kv_tier_blocks", "llm-d extension: KV blocks held in a tier below the "
                                       "GPU (DISK: the shared directory, every pod's blocks).", labels=labels), f.blocks)
    yield per_medium(GaugeMetricFamily("llmd_sim:kv_tier_capacity_blocks", "llm-d extension: capacity of a KV tier "
                                       "in blocks.", labels=labels), f.capacity)
    yield per_medium(GaugeMetricFamily("llmd_sim:kv_tier_usage_perc", "llm-d extension: occupancy of a KV tier below "
                                       "the GPU. 1 means 100 percent.", labels=labels),
                     {m: (f.blocks.get(m, 0) / c if c else 0.0) for m, c in f.capacity.items()})
    yield per_medium(CounterMetricFamily("llmd_sim:kv_tier_stored_blocks", "llm-d extension: blocks written into a "
                                         "KV tier (offload, demotion, promotion, replication).", labels=labels), f.stored)
    yield per_medium(CounterMetricFamily("llmd_sim:kv_tier_evicted_blocks", "llm-d extension: blocks a full KV tier "
                                         "gave up.", labels=labels), f.evicted)

    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        c = CounterMetricFamily(name, doc, labels=_LABELS)
        c.add_metric(lv, value)
        return c

    yield counter("llmd_sim:kv_tier_load_seconds", "llm-d extension: simulated seconds spent loading KV blocks from "
                  "tiers below the GPU.", f.load_s)
    yield counter("llmd_sim:kv_tier_loads", "llm-d extension: requests that loaded KV blocks from a tier.", f.loads)
    yield counter("llmd_sim:kv_tier_dropped_blocks", "llm-d extension: offloads a tier refused (full of pinned "
                  "blocks, disk full, I/O error).", f.dropped)
    yield counter("llmd_sim:kv_tier_skipped_blocks", "llm-d extension: blocks the GPU evicted that a typed policy "
                  "kept out of the lower tiers (evict_on_finish: a finished reasoning scratchpad).", f.skipped)
    yield counter("llmd_sim:kv_tier_bad_reads", "llm-d extension: tier lookups whose verified read failed (then a "
                  "miss, recomputed).", f.bad_reads)
    if f.fs:
        fam = CounterMetricFamily("llmd_sim:kv_tier_fs_errors", "llm-d extension: shared filesystem tier problems by "
                                  "kind (corrupt and truncated files are removed, never served; enospc pauses offload).",
                                  labels=[*_LABELS, "kind"])
        for kind, v in sorted(f.fs.items()):
            fam.add_metric([*lv, kind], v)
        yield fam
        g = GaugeMetricFamily("llmd_sim:kv_tier_fs_offload_paused", "llm-d extension: 1 while offload to the shared "
                              "filesystem is paused (disk full); serving continues.", labels=_LABELS)
        g.add_metric(lv, 1.0 if f.fs_paused else 0.0)
        yield g


class PodMetrics:
    """The metric registry of one pod/rank."""

    def __init__(
        self,
        model_name: str,
        stats_fn: Callable[[], Any],
        *,
        engine_index: int = 0,
        cache_info: dict[str, Any] | None = None,
        tiers_fn: Callable[[], Any] | None = None,
    ) -> None:
        self.model_name = model_name
        self.engine = str(engine_index)
        self.stats_fn = stats_fn
        self.tiers_fn = tiers_fn  # -> sim_gpu.tiers.TierFigures, read at scrape time; None: no KV tiers
        self.cache_info = {k: str(v) for k, v in (cache_info or {}).items()}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_EngineCollector(self))
        r, lv = self.registry, (model_name, self.engine)
        self._ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                               _LABELS, registry=r, buckets=TTFT_BUCKETS).labels(*lv)
        self._itl = Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                              _LABELS, registry=r, buckets=ITL_BUCKETS).labels(*lv)
        self._e2e = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                              _LABELS, registry=r, buckets=REQUEST_LATENCY_BUCKETS).labels(*lv)
        self._success = Counter("vllm:request_success", "Count of successfully processed requests.",
                                [*_LABELS, "finished_reason"], registry=r)
        self._remote_tokens = Counter("llmd_sim:remote_prefill_hits",
                                      "Simulator extension: prompt tokens whose KV arrived from a remote prefill pod.",
                                      _LABELS, registry=r).labels(*lv)
        self._remote_requests = Counter("llmd_sim:remote_prefill_requests",
                                        "Simulator extension: decode requests served from a remote prefill.",
                                        _LABELS, registry=r).labels(*lv)
        self._failures = Counter("llmd_sim:injected_failures", "Simulator extension: injected failures by type.",
                                 [*_LABELS, "failure_type"], registry=r)

    def observe_ttft(self, seconds: float) -> None:
        self._ttft.observe(max(0.0, seconds))

    def observe_itl(self, seconds: float, count: int = 1) -> None:
        for _ in range(count):
            self._itl.observe(max(0.0, seconds))

    def observe_finished(self, e2e_s: float, reason: str | None) -> None:
        self._e2e.observe(max(0.0, e2e_s))
        self._success.labels(self.model_name, self.engine, reason or "abort").inc()

    def count_remote_prefill(self, tokens: int) -> None:
        self._remote_requests.inc()
        self._remote_tokens.inc(tokens)

    def count_failure(self, failure_type: str) -> None:
        self._failures.labels(self.model_name, self.engine, failure_type).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of this pod's registry."""
        return generate_latest(self.registry)
