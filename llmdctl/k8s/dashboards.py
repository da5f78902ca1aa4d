"""Grafana dashboards (JSON in a ConfigMap) built on EPP's metric names and vLLM's, so the same panels read
router_lite, llm-d's upstream EPP and the model servers. The ConfigMap carries `grafana_dashboard: "1"`, the
label Grafana's dashboard sidecar loads from."""

from __future__ import annotations

import json
from typing import Any

# (title, [(panel title, PromQL, unit)]) per dashboard; every query names a metric the router or vLLM serves.
DASHBOARDS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "router": (
        "llm-d router (EPP)",
        [
            ("Requests / s by model", "sum by (model_name) (rate(inference_objective_request_total[5m]))", "reqps"),
            (
                "Error rate",
                "sum(rate(inference_objective_request_error_total[5m])) / "
                "clamp_min(sum(rate(inference_objective_request_total[5m])), 1e-9)",
                "percentunit",
            ),
            (
                "Request latency p99",
                "histogram_quantile(0.99, sum by (le) (rate(inference_objective_request_duration_seconds_bucket[5m])))",
                "s",
            ),
            (
                "TTFT p90",
                "histogram_quantile(0.9, sum by (le) (rate(inference_objective_request_ttft_seconds_bucket[5m])))",
                "s",
            ),
            (
                "NTPOT p90",
                "histogram_quantile(0.9, sum by (le) "
                "(rate(inference_objective_normalized_time_per_output_token_seconds_bucket[5m])))",
                "s",
            ),
            ("Running requests", "sum by (model_name) (inference_objective_running_requests)", "short"),
            (
                "Scheduling latency p99",
                "histogram_quantile(0.99, sum by (le) "
                "(rate(inference_extension_scheduler_e2e_duration_seconds_bucket[5m])))",
                "s",
            ),
            (
                "Plugin latency p99",
                "histogram_quantile(0.99, sum by (le, plugin_type) "
                "(rate(inference_extension_plugin_duration_seconds_bucket[5m])))",
                "s",
            ),
            (
                "Prefix hit ratio (mean)",
                "sum(rate(inference_extension_prefix_indexer_hit_ratio_sum[5m])) / "
                "clamp_min(sum(rate(inference_extension_prefix_indexer_hit_ratio_count[5m])), 1e-9)",
                "percentunit",
            ),
            ("Prefix index size", "sum(inference_extension_prefix_indexer_size)", "short"),
        ],
    ),
    "pool": (
        "llm-d inference pool",
        [
            ("Ready pods", "inference_pool_ready_pods", "short"),
            ("Average KV-cache utilization", "inference_pool_average_kv_cache_utilization", "percentunit"),
            ("Average queue size", "inference_pool_average_queue_size", "short"),
            ("Queue per pod", "inference_pool_per_pod_queue_size", "short"),
        ],
    ),
    "vllm": (
        "vLLM model servers",
        [
            ("Running requests", "sum by (pod) (vllm:num_requests_running)", "short"),
            ("Waiting requests", "sum by (pod) (vllm:num_requests_waiting)", "short"),
            ("KV-cache usage", "max by (pod) (vllm:kv_cache_usage_perc)", "percentunit"),
            (
                "TTFT p90",
                "histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))",
                "s",
            ),
            ("Generation tokens / s", "sum by (pod) (rate(vllm:generation_tokens_total[5m]))", "short"),
            (
                "Prefix-cache hit rate",
                "sum(rate(vllm:prefix_cache_hits_total[5m])) / "
                "clamp_min(sum(rate(vllm:prefix_cache_queries_total[5m])), 1e-9)",
                "percentunit",
            ),
        ],
    ),
}


def dashboard(uid: str, title: str, panels: list[tuple[str, str, str]]) -> dict[str, Any]:
    out = []
    for i, (ptitle, expr, unit) in enumerate(panels):
        out.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": ptitle,
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"refId": "A", "expr": expr}],
            }
        )
    return {
        "uid": f"llmd-{uid}",
        "title": title,
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "tags": ["llm-d", "llmdctl"],
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": out,
    }


def dashboards_json() -> dict[str, str]:
    """File name -> dashboard JSON (sorted keys: the same bytes every render)."""
    return {
        f"llmd-{k}.json": json.dumps(dashboard(k, t, p), indent=1, sort_keys=True) for k, (t, p) in DASHBOARDS.items()
    }


def dashboards_configmap(stack: str, namespace: str) -> dict[str, Any]:
    from llmdctl.k8s.render import dns_label

    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": dns_label(f"{stack}-dashboards", 63),
            "namespace": namespace,
            "labels": {"grafana_dashboard": "1"},
        },
        "data": dashboards_json(),
    }
