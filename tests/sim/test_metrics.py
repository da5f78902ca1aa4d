"""/metrics of a real simulator process, read with Prometheus' own text parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.sim.simproc import sim_server

_client = httpx.Client(timeout=20)


def _scrape(url: str) -> dict[str, list]:
    text = _client.get(url + "/metrics", timeout=5).text
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _value(metrics: dict, name: str, **labels: str) -> float:
    matches = [s.value for s in metrics[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, f"{name} {labels}: {metrics.get(name)}"
    return matches[0]


def test_vllm_metric_names_labels_and_movement():
    with sim_server(
        "--model", "m1", "--time-scale", "0", "--block-size", "16", "--num-gpu-blocks", "500", "--pods", "2", ports=2
    ) as s:
        before = _scrape(s.base)
        for name in (
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc",
            "vllm:prefix_cache_queries_total",
            "vllm:prefix_cache_hits_total",
            "vllm:num_preemptions_total",
            "vllm:prompt_tokens_total",
            "vllm:generation_tokens_total",
            "vllm:cache_config_info",
            "vllm:time_to_first_token_seconds_count",
            "vllm:inter_token_latency_seconds_count",
            "vllm:e2e_request_latency_seconds_count",
        ):
            assert name in before, name
            assert all(x.labels["model_name"] == "m1" and x.labels["engine"] == "0" for x in before[name])
        info = before["vllm:cache_config_info"][0].labels
        assert info["block_size"] == "16" and info["num_gpu_blocks"] == "500"
        assert info["prefix_caching_hash_algo"] == "sha256" and info["enable_prefix_caching"] == "True"
        assert "vllm:prompt_tokens_created" in before  # as a live vLLM 0.32 pod exposes them (issue 17)
        assert "vllm:lora_requests_info" not in before  # vLLM exports it only with LoRA enabled
        assert _value(before, "vllm:prompt_tokens_total") == 0

        prompt = list(range(1000, 1064))  # 4 full blocks
        for i in range(3):
            r = _client.post(
                s.base + "/v1/completions",
                timeout=10,
                json={"prompt": prompt + [7 + i], "max_tokens": 4, "ignore_eos": True},
            )
            assert r.status_code == 200, r.text
        after = _scrape(s.base)
        assert _value(after, "vllm:prompt_tokens_total") == 3 * 65
        assert _value(after, "vllm:generation_tokens_total") == 12
        assert _value(after, "vllm:prefix_cache_queries_total") == 3 * 65
        assert _value(after, "vllm:prefix_cache_hits_total") == 2 * 64  # the repeated prefix hits
        assert _value(after, "vllm:time_to_first_token_seconds_count") == 3
        assert _value(after, "vllm:e2e_request_latency_seconds_count") == 3
        assert _value(after, "vllm:inter_token_latency_seconds_count") == 9
        assert _value(after, "vllm:request_success_total", finished_reason="length") == 3
        assert _value(after, "vllm:num_requests_running") == 0
        assert _value(after, "vllm:kv_cache_usage_perc") == 0  # finished requests' blocks are free (cached)
        buckets = [x for x in after["vllm:time_to_first_token_seconds_bucket"] if x.labels["le"] == "+Inf"]
        assert buckets[0].value == 3
        # the other pod counted nothing: registries are per pod
        other = _scrape(s.url(1))
        assert _value(other, "vllm:prompt_tokens_total") == 0
