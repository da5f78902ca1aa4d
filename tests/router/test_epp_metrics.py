"""Router /metrics under EPP's names, types and labels (GIE's metrics guide), next to the llmd_router_*
extras; prefix-hit accounting under the default (approximate) prefix scorer, not only under precise."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.router.procs import MODEL, router, sim_pods, wait_until, words

pytestmark = pytest.mark.timeout(120)

# name -> (type, label names) as GIE documents them (histograms/counters: family name without suffixes)
EPP_FAMILIES = {
    "inference_objective_request": ("counter", {"model_name", "target_model_name"}),
    "inference_objective_request_error": ("counter", {"model_name", "target_model_name", "error_code"}),
    "inference_objective_request_duration_seconds": ("histogram", {"model_name", "target_model_name"}),
    "inference_objective_request_ttft_seconds": ("histogram", {"model_name", "target_model_name"}),
    "inference_objective_request_sizes": ("histogram", {"model_name", "target_model_name"}),
    "inference_objective_response_sizes": ("histogram", {"model_name", "target_model_name"}),
    "inference_objective_input_tokens": ("histogram", {"model_name", "target_model_name"}),
    "inference_objective_output_tokens": ("histogram", {"model_name", "target_model_name"}),
    "inference_objective_normalized_time_per_output_token_seconds": ("histogram", {"model_name", "target_model_name"}),
    "inference_objective_running_requests": ("gauge", {"model_name"}),
    "inference_pool_average_kv_cache_utilization": ("gauge", {"name"}),
    "inference_pool_average_queue_size": ("gauge", {"name"}),
    "inference_pool_per_pod_queue_size": ("gauge", {"model_server_pod", "name"}),
    "inference_pool_ready_pods": ("gauge", {"name"}),
    "inference_extension_scheduler_e2e_duration_seconds": ("histogram", set()),
    "inference_extension_scheduler_attempts": ("counter", {"status"}),
    "inference_extension_plugin_duration_seconds": ("histogram", {"extension_point", "plugin_type", "plugin_name"}),
    "inference_extension_prefix_indexer_size": ("gauge", set()),
    "inference_extension_prefix_indexer_hit_ratio": ("histogram", set()),
    "inference_extension_prefix_indexer_hit_bytes": ("histogram", set()),
    "inference_extension_info": ("gauge", {"commit", "build_ref"}),
}


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _labels(family) -> set[str]:
    out: set[str] = set()
    for s in family.samples:
        out |= set(s.labels) - {"le"}
    return out


def _value(family, suffix: str = "", **labels) -> float:
    return sum(
        s.value
        for s in family.samples
        if s.name.endswith(suffix) and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_epp_metric_names_types_labels_and_default_prefix_hits():
    with sim_pods(2) as pods, router(pods.endpoint_entries(), None, ["--pool-name", "my-pool"]) as rt, rt.client() as c:
        prompt = words("shared", 300)
        for i in range(3):
            r = c.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 3})
            assert r.status_code == 200, r.text
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": words("s", 40)}],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with c.stream("POST", "/v1/chat/completions", json=body) as s:
            assert s.status_code == 200
            s.read()
        assert c.post("/v1/completions", json={"prompt": "no model"}).status_code == 400

        def scraped():
            fam = _families(c.get("/metrics").text)
            return fam if _value(fam["inference_objective_request_duration_seconds"], "_count") >= 4 else None

        wait_until(scraped, timeout=10)
        fam = scraped()
        for name, (kind, labels) in EPP_FAMILIES.items():
            assert name in fam, name
            assert fam[name].type == kind, (name, fam[name].type)
            if fam[name].samples and labels:
                assert _labels(fam[name]) == labels, (name, _labels(fam[name]))
        assert _value(fam["inference_objective_request"], "_total", model_name=MODEL, target_model_name=MODEL) == 4
        assert _value(fam["inference_objective_request_error"], "_total") == 1
        assert _value(fam["inference_objective_output_tokens"], "_sum") == 3 * 3 + 4  # usage from bodies and the stream
        assert _value(fam["inference_pool_ready_pods"], name="my-pool") == 2
        assert _value(fam["inference_extension_scheduler_attempts"], "_total", status="success") == 4
        assert (
            _value(fam["inference_extension_plugin_duration_seconds"], "_count", plugin_type="prefix-cache-scorer") == 4
        )
        assert _value(fam["inference_objective_running_requests"]) == 0  # every started request finished
        # Default profile (approximate prefix-cache-scorer): the repeats hit what the first request left.
        hit = _value(fam["llmd_router_prefix_hit_blocks"], "_total")
        total = _value(fam["llmd_router_prompt_blocks"], "_total")
        assert hit > 0.6 * total  # requests 2 and 3 hit their whole prompt; 1 and the chat are cold
        ratio = fam["inference_extension_prefix_indexer_hit_ratio"]
        assert _value(ratio, "_count") == 4 and _value(ratio, "_sum") == pytest.approx(2.0)
        assert _value(fam["inference_extension_prefix_indexer_size"]) > 0
        assert "llmd_router_requests" in fam and "llmd_router_kv_event_batches" in fam  # the extras stay
