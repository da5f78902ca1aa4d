"""Hand-made decision objects in router_lite's `/debug/decisions` shape, for the TUI's pure tests."""

from __future__ import annotations

from typing import Any


def cand(
    ep: str, blocks: int, total: float, profile: str = "default", role: str = "both", prefix: float | None = None
) -> dict[str, Any]:
    scores = {
        "queue-scorer": {"raw": 1.0, "weighted": 2.0},
        "kv-cache-utilization-scorer": {"raw": 0.99, "weighted": 1.98},
    }
    if prefix is not None:
        scores["precise-prefix-cache-scorer"] = {"raw": prefix, "weighted": round(prefix * 3, 6)}
    return {
        "endpoint": ep,
        "role": role,
        "scores": scores,
        "total": total,
        "prefix_match_blocks": blocks,
        "profile": profile,
    }


def decision(
    rid: str,
    served: str,
    cands: list[dict[str, Any]],
    prefill: str | None = None,
    ts: float = 1_700_000_000.0,
    tokens: int = 800,
) -> dict[str, Any]:
    return {
        "request_id": rid,
        "ts": ts,
        "model": "sim-model",
        "target_model": "sim-model",
        "prompt_tokens": tokens,
        "priority": 0,
        "profiles_run": sorted({c["profile"] for c in cands}),
        "candidates": cands,
        "chosen": {"decode": served, "prefill": prefill},
        "reason": "",
        "scheduling_ms": 0.123,
        "served_by": served,
        "status": 200,
        "attempts": [{"endpoint": served, "outcome": "ok"}],
        "retries": 0,
    }


PODS = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]


def endpoints_doc(keys: list[str] = PODS) -> dict[str, Any]:
    return {
        "endpoints": [
            {
                "endpoint": k,
                "name": f"pod-{i}",
                "role": "both",
                "dp_rank": None,
                "healthy": True,
                "running": 1,
                "waiting": 0,
                "kv_cache_usage": 0.1,
            }
            for i, k in enumerate(keys)
        ],
        "config": {"version": 1, "profiles": ["default"]},
        "kv_events": {"sockets": []},
    }


def pod_metrics(
    queries: float,
    hits: float,
    running: float = 2,
    waiting: float = 1,
    kv: float = 0.25,
    ttft: dict[str, float] | None = None,
    extra: str = "",
) -> str:
    lv = 'model_name="sim-model",engine="0"'
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{lv}}} {running}",
        f"vllm:num_requests_waiting{{{lv}}} {waiting}",
        f"vllm:kv_cache_usage_perc{{{lv}}} {kv}",
        f"vllm:prefix_cache_queries_total{{{lv}}} {queries}",
        f"vllm:prefix_cache_hits_total{{{lv}}} {hits}",
    ]
    for le, count in (ttft or {}).items():
        lines.append(f'vllm:time_to_first_token_seconds_bucket{{{lv},le="{le}"}} {count}')
    return "\n".join(lines) + "\n" + extra
