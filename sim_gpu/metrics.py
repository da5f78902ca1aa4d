"""Prometheus metrics for one simulated pod/rank, under vLLM's names, labels and histogram buckets.

Routers (llm-d's EPP, router_lite) scrape `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`,
`vllm:cache_config_info` and friends; using vLLM's exact names lets them read the simulator as they read vLLM.
Gauges and token counters are read from the engine at scrape time (no per-step bookkeeping); latency
histograms are observed per request. Everything carries `model_name` and `engine` labels. Metrics that
vLLM does not have are prefixed `llmd_sim:` so nobody mistakes them for vLLM's. Like vLLM's /metrics
(prometheus_client's ASGI app), the exposition follows the scrape's Accept header: OpenMetrics for Prometheus
(counter TYPE lines without `_total`, `_created` inline), the classic text format otherwise; process_*,
python_* and the HTTP server's http_* families are there as on a vLLM pod.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's bucket boundaries (v1 PrometheusStatLogger).
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)

ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
N_BUCKETS = (1, 2, 5, 10, 20)

_LABELS = ("model_name", "engine")


def build_1_2_5_buckets(max_value: int) -> tuple[int, ...]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50, ... up to `max_value`."""
    out, scale = [], 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_value:
                return tuple(out)
            out.append(m * scale)
        scale *= 10


@dataclass
class FinishedRequest:
    """One finished request's figures, in the units of vLLM's per-request histograms (seconds, tokens)."""

    e2e_s: float
    queue_s: float
    prefill_s: float
    decode_s: float
    inference_s: float
    prompt_tokens: int
    generation_tokens: int
    cached_tokens: int
    max_tokens: int
    n: int = 0  # the request's n, on its first choice only (vLLM observes it once per request)
    num_preemptions: int = 0


REQUEST_NUM_PREEMPTIONS_BUCKETS = (1, 2, 3, 4, 5, 10, 20)  # vLLM's (v1/metrics/buckets.py)


@dataclass(frozen=True)
class PerfModel:
    """Per-GPU costs behind vLLM's estimated_flops / read_bytes / write_bytes counters (its MFU figures): the
    roofline's own terms, so the counters agree with the simulated timing."""

    flops_per_token: float  # 2 x active parameters per GPU
    weight_bytes_per_step: float  # every step reads the weights once
    kv_bytes_per_token: float  # each computed token writes (and later steps read) its KV

    @classmethod
    def of(cls, latency: Any) -> "PerfModel":
        m = latency.model
        return cls(
            2.0 * m.active_params_b * 1e9 / max(1, latency.tp),
            latency.weight_bytes_per_gpu(),
            latency.kv_bytes_per_token_per_gpu(),
        )


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
            c.add_metric(lv, value, created=pm.created)  # vLLM's counters exist from start-up: _created = then
            return c

        tiers = pm.tiers_fn() if pm.tiers_fn is not None else None
        ext_hits = pm.remote_tokens  # the engine reports tier loads and P/D transfers alike (num_remote_tokens)
        ext_queries = s.prefix_cache_queries_tokens if (tiers is not None or pm.remote_tokens) else 0
        cached = s.prefix_cache_hits_tokens + ext_hits
        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", s.num_running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", s.num_waiting)
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", s.kv_cache_usage)
        yield counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            s.prefix_cache_queries_tokens,
        )
        yield counter(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            s.prefix_cache_hits_tokens,
        )
        yield counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", s.num_preemptions)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens_total)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.", s.generation_tokens_total)
        # A KV connector's hits (vLLM: offloading / P/D connectors): here tier loads and remote prefills.
        yield counter(
            "vllm:external_prefix_cache_queries",
            "External prefix cache queries from KV connector "
            "cross-instance cache sharing, in terms of number of queried tokens.",
            ext_queries,
        )
        yield counter(
            "vllm:external_prefix_cache_hits",
            "External prefix cache hits from KV connector "
            "cross-instance cache sharing, in terms of number of cached tokens.",
            ext_hits,
        )
        yield counter("vllm:mm_cache_queries", "Multi-modal cache queries, in terms of number of queried items.", 0)
        yield counter("vllm:mm_cache_hits", "Multi-modal cache hits, in terms of number of cached items.", 0)
        yield counter("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).", cached)
        by_source = CounterMetricFamily(
            "vllm:prompt_tokens_by_source", "Number of prompt tokens by source.", labels=[*_LABELS, "source"]
        )
        for source, v in (
            ("local_compute", max(0, s.prompt_tokens_total - cached)),
            ("local_cache_hit", s.prefix_cache_hits_tokens),
            ("external_kv_transfer", ext_hits),
        ):
            by_source.add_metric([*lv, source], v, created=pm.created)
        yield by_source
        cached_by = CounterMetricFamily(
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them.",
            labels=[*_LABELS, "source"],
        )
        # Tier loads and P/D transfers reach the engine alike (num_remote_tokens): one external source.
        for source, v in (
            ("device", s.prefix_cache_hits_tokens),
            ("host", 0),
            ("p2p", 0),
            ("disk", 0),
            ("external_unspecified", ext_hits),
        ):
            cached_by.add_metric([*lv, source], v, created=pm.created)
        yield cached_by
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting_by_reason", "Number of waiting requests by reason.", labels=[*_LABELS, "reason"]
        )
        deferred = getattr(s, "num_waiting_for_remote_kv", 0)  # waiting on a KV transfer: vLLM's "deferred"
        waiting.add_metric([*lv, "capacity"], max(0, s.num_waiting - deferred))
        waiting.add_metric([*lv, "deferred"], deferred)
        yield waiting
        sleep = GaugeMetricFamily("vllm:engine_sleep_state", "Engine sleep state.", labels=[*_LABELS, "sleep_state"])
        for state, v in (("awake", 1), ("weights_offloaded", 0), ("discard_all", 0)):  # the simulator never sleeps
            sleep.add_metric([*lv, state], v)
        yield sleep
        rejected = CounterMetricFamily(
            "vllm:admission_rejections",
            "Number of admission attempts rejected by a queue limit, by reason.",
            labels=["model_name", "reason"],
        )
        for reason in ("max_num_queued_reqs", "max_num_queued_tokens"):  # no queue limits: never rejected
            rejected.add_metric([pm.model_name, reason], 0, created=pm.created)
        yield rejected
        if pm.perf is not None:
            computed = max(0, s.prompt_tokens_total - s.prefix_cache_hits_tokens) + s.generation_tokens_total
            p = pm.perf
            yield counter(
                "vllm:estimated_flops_per_gpu",
                "Estimated number of floating point operations per GPU.",
                p.flops_per_token * computed,
            )
            yield counter(
                "vllm:estimated_read_bytes_per_gpu",
                "Estimated number of bytes read from memory per GPU.",
                p.weight_bytes_per_step * pm.steps + p.kv_bytes_per_token * s.generation_tokens_total,
            )
            yield counter(
                "vllm:estimated_write_bytes_per_gpu",
                "Estimated number of bytes written to memory per GPU.",
                p.kv_bytes_per_token * computed,
            )

        info = GaugeMetricFamily(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            labels=list(pm.cache_info) + list(_LABELS),
        )
        info.add_metric(list(pm.cache_info.values()) + lv, 1.0)
        yield info

        yield gauge(
            "llmd_sim:num_requests_waiting_for_remote_kv",
            "Simulator extension: decode requests waiting for a P/D KV transfer.",
            getattr(s, "num_waiting_for_remote_kv", 0),
        )
        if tiers is not None:
            yield from _tier_families(tiers, lv)


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

    yield per_medium(
        CounterMetricFamily(
            "llmd_sim:kv_tier_hits",
            "llm-d extension: prompt tokens loaded from a KV tier below the GPU instead of recomputed, by medium.",
            labels=labels,
        ),
        f.hit_tokens,
    )
    yield per_medium(
        GaugeMetricFamily(
            "llmd_sim:kv_tier_blocks",
            "llm-d extension: KV blocks held in a tier below the GPU (DISK: the shared directory, every pod's blocks).",
            labels=labels,
        ),
        f.blocks,
    )
    yield per_medium(
        GaugeMetricFamily(
            "llmd_sim:kv_tier_capacity_blocks", "llm-d extension: capacity of a KV tier in blocks.", labels=labels
        ),
        f.capacity,
    )
    yield per_medium(
        GaugeMetricFamily(
            "llmd_sim:kv_tier_usage_perc",
            "llm-d extension: occupancy of a KV tier below the GPU. 1 means 100 percent.",
            labels=labels,
        ),
        {m: (f.blocks.get(m, 0) / c if c else 0.0) for m, c in f.capacity.items()},
    )
    yield per_medium(
        CounterMetricFamily(
            "llmd_sim:kv_tier_stored_blocks",
            "llm-d extension: blocks written into a KV tier (offload, demotion, promotion, replication).",
            labels=labels,
        ),
        f.stored,
    )
    yield per_medium(
        CounterMetricFamily(
            "llmd_sim:kv_tier_evicted_blocks", "llm-d extension: blocks a full KV tier gave up.", labels=labels
        ),
        f.evicted,
    )

    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        c = CounterMetricFamily(name, doc, labels=_LABELS)
        c.add_metric(lv, value)
        return c

    yield counter(
        "llmd_sim:kv_tier_load_seconds",
        "llm-d extension: simulated seconds spent loading KV blocks from tiers below the GPU.",
        f.load_s,
    )
    yield counter("llmd_sim:kv_tier_loads", "llm-d extension: requests that loaded KV blocks from a tier.", f.loads)
    yield counter(
        "llmd_sim:kv_tier_dropped_blocks",
        "llm-d extension: offloads a tier refused (full of pinned blocks, disk full, I/O error).",
        f.dropped,
    )
    yield counter(
        "llmd_sim:kv_tier_skipped_blocks",
        "llm-d extension: blocks the GPU evicted that a typed policy "
        "kept out of the lower tiers (evict_on_finish: a finished reasoning scratchpad).",
        f.skipped,
    )
    yield counter(
        "llmd_sim:kv_tier_bad_reads",
        "llm-d extension: tier lookups whose verified read failed (then a miss, recomputed).",
        f.bad_reads,
    )
    if f.fs:
        fam = CounterMetricFamily(
            "llmd_sim:kv_tier_fs_errors",
            "llm-d extension: shared filesystem tier problems by "
            "kind (corrupt and truncated files are removed, never served; enospc pauses offload).",
            labels=[*_LABELS, "kind"],
        )
        for kind, v in sorted(f.fs.items()):
            fam.add_metric([*lv, kind], v)
        yield fam
        g = GaugeMetricFamily(
            "llmd_sim:kv_tier_fs_offload_paused",
            "llm-d extension: 1 while offload to the shared filesystem is paused (disk full); serving continues.",
            labels=_LABELS,
        )
        g.add_metric(lv, 1.0 if f.fs_paused else 0.0)
        yield g


SLOW_PAGE_MAX_AGE_S = 0.25


class _Union:
    """Collects two registries as one (the OpenMetrics page is rendered whole: it ends with one `# EOF`)."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.registries = registries

    def collect(self):  # noqa: ANN201 - prometheus_client protocol
        for r in self.registries:
            yield from r.collect()


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
        max_model_len: int = 32768,
        perf: PerfModel | None = None,
    ) -> None:
        self.model_name = model_name
        self.engine = str(engine_index)
        self.stats_fn = stats_fn
        self.tiers_fn = tiers_fn  # -> sim_gpu.tiers.TierFigures, read at scrape time; None: no KV tiers
        self.cache_info = {k: str(v) for k, v in (cache_info or {}).items()}
        self.created = time.time()
        self.remote_tokens = 0
        self.perf = perf  # None: no estimated_* counters (no latency model to estimate from)
        self.steps = 0  # engine steps that scheduled tokens
        self._lora_info: Gauge | None = None  # vllm:lora_requests_info, with LoRA enabled (enable_lora)
        self._max_lora = ""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_EngineCollector(self))
        # The rest of vLLM's page (per-request histograms, process_*, python_*, http_*) is 4x the lines of the
        # families routers read 20 times a second per rank: kept in its own registry, whose classic-text
        # rendering is reused for up to SLOW_PAGE_MAX_AGE_S (wide-EP stacks lost their pods to scrape timeouts
        # when every scrape rendered it all).
        self.slow = CollectorRegistry(auto_describe=False)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):  # process_*, python_* as on vLLM
            self.slow.register(collector)
        self._slow_page = b""
        self._slow_at = -1e9
        self._all = CollectorRegistry(auto_describe=False)
        self._all.register(_Union(self.registry, self.slow))
        r, lv = self.registry, (model_name, self.engine)

        def hist(name: str, doc: str, buckets: tuple, registry: CollectorRegistry = self.slow) -> Any:
            return Histogram(name, doc, _LABELS, registry=registry, buckets=buckets).labels(*lv)

        tokens = build_1_2_5_buckets(max_model_len)
        self._queue = hist(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self._inference = hist(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self._prefill = hist(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self._decode = hist(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self._tpot = hist(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS,
        )
        self._prompt_tokens = hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens)
        self._gen_tokens = hist("vllm:request_generation_tokens", "Number of generation tokens processed.", tokens)
        self._kv_computed = hist(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            tokens,
        )
        self._max_gen = hist(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            tokens,
        )
        self._max_tokens = hist(
            "vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", tokens
        )
        self._n = hist("vllm:request_params_n", "Histogram of the n request parameter.", N_BUCKETS)
        self._preempted = hist(
            "vllm:request_num_preemptions",
            "Histogram of the number of times a request was preempted.",
            REQUEST_NUM_PREEMPTIONS_BUCKETS,
        )
        self._iteration = hist(
            "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", ITERATION_TOKEN_BUCKETS
        )
        self._ttft = hist(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS, r
        )
        self._itl = hist(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS, r
        )
        self._e2e = hist(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS,
            r,
        )
        self._success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*_LABELS, "finished_reason"],
            registry=r,
        )
        for reason in ("stop", "length", "abort", "error"):  # vLLM creates one series per FinishReason up front
            self._success.labels(model_name, self.engine, reason)
        self._remote_tokens = Counter(
            "llmd_sim:remote_prefill_hits",
            "Simulator extension: prompt tokens whose KV arrived from a remote prefill pod.",
            _LABELS,
            registry=r,
        ).labels(*lv)
        self._remote_requests = Counter(
            "llmd_sim:remote_prefill_requests",
            "Simulator extension: decode requests served from a remote prefill.",
            _LABELS,
            registry=r,
        ).labels(*lv)
        self._failures = Counter(
            "llmd_sim:injected_failures",
            "Simulator extension: injected failures by type.",
            [*_LABELS, "failure_type"],
            registry=r,
        )

    def observe_ttft(self, seconds: float) -> None:
        self._ttft.observe(max(0.0, seconds))

    def observe_itl(self, seconds: float, count: int = 1) -> None:
        for _ in range(count):
            self._itl.observe(max(0.0, seconds))

    def observe_finished(self, e2e_s: float, reason: str | None, req: FinishedRequest | None = None) -> None:
        self._e2e.observe(max(0.0, e2e_s))
        self._success.labels(self.model_name, self.engine, reason or "abort").inc()
        if req is None:
            return
        for h, v in (
            (self._queue, req.queue_s),
            (self._prefill, req.prefill_s),
            (self._decode, req.decode_s),
            (self._inference, req.inference_s),
            (self._prompt_tokens, req.prompt_tokens),
            (self._gen_tokens, req.generation_tokens),
            (self._kv_computed, max(0, req.prompt_tokens - req.cached_tokens)),
        ):
            h.observe(max(0.0, v))
        if req.generation_tokens > 1:
            self._tpot.observe(max(0.0, req.decode_s) / (req.generation_tokens - 1))
        self._preempted.observe(req.num_preemptions)
        if req.max_tokens:
            self._max_tokens.observe(req.max_tokens)
        if req.n:
            self._n.observe(req.n)
            self._max_gen.observe(req.max_tokens)

    def observe_iteration(self, tokens: int) -> None:
        """Tokens one engine step scheduled (prefill chunks + decodes), as vLLM's iteration_tokens_total."""
        self._iteration.observe(tokens)
        if tokens:
            self.steps += 1

    def enable_lora(self, max_lora: int) -> None:
        """Export vllm:lora_requests_info, which vLLM has only with --enable-lora: one series per (max_lora,
        waiting, running) seen, valued at the wall-clock time it was last current (readers take the newest)."""
        self._max_lora = str(max_lora)
        self._lora_info = Gauge(
            "vllm:lora_requests_info",
            "Running stats on lora requests.",
            ["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
            registry=self.registry,
        )

    def observe_lora(self, running: list[str], waiting: list[str]) -> None:
        """After an engine step: the adapters of its running and waiting requests (comma-separated, as vLLM)."""
        if self._lora_info is not None:
            self._lora_info.labels(self._max_lora, ",".join(waiting), ",".join(running)).set_to_current_time()

    def count_remote_prefill(self, tokens: int) -> None:
        self._remote_requests.inc()
        self._remote_tokens.inc(tokens)
        self.remote_tokens += tokens

    def count_failure(self, failure_type: str) -> None:
        self._failures.labels(self.model_name, self.engine, failure_type).inc()

    def render(self) -> bytes:
        """The classic Prometheus text exposition of this pod (the slow part at most SLOW_PAGE_MAX_AGE_S old)."""
        now = time.monotonic()
        if now - self._slow_at > SLOW_PAGE_MAX_AGE_S:
            self._slow_page, self._slow_at = generate_latest(self.slow), now
        return generate_latest(self.registry) + self._slow_page

    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        """This pod's exposition and its content type, chosen from the scrape's Accept header as vLLM's
        /metrics (prometheus_client's ASGI app) chooses it; no header: the classic text format."""
        if not accept:
            return self.render(), CONTENT_TYPE
        encoder, content_type = choose_encoder(accept)
        if encoder is generate_latest:
            return self.render(), content_type
        return encoder(self._all), content_type
