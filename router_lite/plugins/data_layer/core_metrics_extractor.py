"""core-metrics-extractor (GIE/llm-d): turn scraped metrics into queue, running, KV-usage, LoRA and cache info.

router_lite's scraper reads vLLM's names (vllm:num_requests_waiting, vllm:num_requests_running,
vllm:kv_cache_usage_perc, vllm:lora_requests_info, vllm:cache_config_info). `engineConfigs` may restate
them; a spec naming a different metric is rejected, since the scraper would not read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from router_lite.plugins import Extractor
from router_lite.registry import register

VLLM_SPECS = {
    "queuedRequestsSpec": "vllm:num_requests_waiting",
    "runningRequestsSpec": "vllm:num_requests_running",
    "kvUsageSpec": "vllm:kv_cache_usage_perc",
    "loraSpec": "vllm:lora_requests_info",
    "cacheInfoSpec": "vllm:cache_config_info",
}


@dataclass
class EngineConfig:
    name: str = "vllm"
    queued_requests_spec: str = VLLM_SPECS["queuedRequestsSpec"]
    running_requests_spec: str = VLLM_SPECS["runningRequestsSpec"]
    kv_usage_spec: str = VLLM_SPECS["kvUsageSpec"]
    lora_spec: str = VLLM_SPECS["loraSpec"]
    cache_info_spec: str = VLLM_SPECS["cacheInfoSpec"]

    def validate(self) -> str | None:
        given = {
            "queuedRequestsSpec": self.queued_requests_spec,
            "runningRequestsSpec": self.running_requests_spec,
            "kvUsageSpec": self.kv_usage_spec,
            "loraSpec": self.lora_spec,
            "cacheInfoSpec": self.cache_info_spec,
        }
        for key, value in given.items():
            if value not in ("", VLLM_SPECS[key]):  # "" turns an optional metric off
                return f"{key}: router_lite reads {VLLM_SPECS[key]!r}, got {value!r}"
        return None


@dataclass
class CoreMetricsParams:
    default_engine: str = "vllm"
    engine_configs: list[EngineConfig] = field(default_factory=list)

    def validate(self) -> str | None:
        names = {e.name for e in self.engine_configs} | {"vllm"}
        if self.default_engine not in names:
            return f"defaultEngine: {self.default_engine!r} is not among engineConfigs ({', '.join(sorted(names))})"
        return None


@register
class CoreMetricsExtractor(Extractor):
    type_name = "core-metrics-extractor"
    Params = CoreMetricsParams
