"""Turning a pod's Prometheus exposition (vLLM's metric names) into `EndpointMetrics`.

A vLLM `/metrics` page is large (histograms); `router_lite.promtext.parse` picks out the few families the
scheduler needs before anything is parsed, which keeps a 50 ms scrape of many pods cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router_lite import promtext
from router_lite.types import EndpointMetrics

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"  # vLLM < 0.10
CACHE_INFO = "vllm:cache_config_info"
LORA_INFO = "vllm:lora_requests_info"
_WANTED = (WAITING, RUNNING, KV_USAGE, KV_USAGE_OLD, CACHE_INFO, LORA_INFO)


@dataclass
class CacheInfo:
    """The engine's prefix-cache settings from `vllm:cache_config_info` (None where a label is absent)."""

    block_size: int | None = None
    num_gpu_blocks: int | None = None
    hash_algo: str | None = None


def _int(v: Any) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _split(v: str | None) -> set[str]:
    return {x.strip() for x in (v or "").split(",") if x.strip()}


def parse_vllm_metrics(text: str, dp_rank: int | None = None, now: float = 0.0) -> tuple[EndpointMetrics, CacheInfo]:
    """Metrics and cache settings from one exposition.

    Several engines behind one server (data parallel, label `engine`): with `dp_rank` the matching engine's
    samples are used; otherwise gauges are summed and usage takes the maximum.
    """
    samples: dict[str, list[tuple[dict[str, str], float]]] = {n: [] for n in _WANTED}
    for name, labels, value in promtext.parse(text, _WANTED):
        if name in samples:  # a prefix match may be a longer name
            samples[name].append((labels, value))
    if dp_rank is not None:
        rank = str(dp_rank)
        for name, items in samples.items():
            mine = [x for x in items if x[0].get("engine") == rank]
            if mine:
                samples[name] = mine

    def total(name: str) -> float:
        return sum(v for _, v in samples[name])

    usage = samples[KV_USAGE] or samples[KV_USAGE_OLD]
    m = EndpointMetrics(
        waiting_queue_size=int(total(WAITING)),
        running_requests_size=int(total(RUNNING)),
        kv_cache_usage_percent=max((v for _, v in usage), default=0.0),
        updated_at=now,
    )
    m.base_models = {lb["model_name"] for lb, _ in samples[RUNNING] if lb.get("model_name")}
    info = CacheInfo()
    if samples[CACHE_INFO]:
        labels = samples[CACHE_INFO][0][0]
        info = CacheInfo(
            block_size=_int(labels.get("block_size")),
            num_gpu_blocks=_int(labels.get("num_gpu_blocks")),
            hash_algo=labels.get("prefix_caching_hash_algo") or None,
        )
        m.block_size = info.block_size
        m.num_gpu_blocks = info.num_gpu_blocks
    if samples[LORA_INFO]:
        # Several series can exist over time; the newest (value = timestamp) is the current one.
        labels = max(samples[LORA_INFO], key=lambda x: x[1])[0]
        m.active_models = _split(labels.get("running_lora_adapters"))
        m.waiting_models = _split(labels.get("waiting_lora_adapters"))
        m.max_active_models = _int(labels.get("max_lora")) or 0
    return m, info
