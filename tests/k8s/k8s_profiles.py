"""Profiles built in the k8s tests, independent of the shipped YAMLs."""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from llmdctl.profile import Profile

ROUTER = {
    "apiVersion": "llm-d.ai/v1alpha1",
    "kind": "EndpointPickerConfig",
    "plugins": [{"type": "queue-scorer"}, {"type": "max-score-picker"}, {"type": "single-profile-handler"}],
    "schedulingProfiles": [
        {"name": "default", "plugins": [{"pluginRef": "queue-scorer", "weight": 2}, {"pluginRef": "max-score-picker"}]}
    ],
}


def make_profile(name: str = "t-agg", pools: list[dict[str, Any]] | None = None, **top: Any) -> Profile:
    """A Profile from a plain document, bypassing the router-config check (the router's concern, not ours)."""
    doc = {
        "name": name,
        "description": "test",
        "pools": pools or [{"name": "pod", "replicas": 2}],
        "router": {"config": copy.deepcopy(ROUTER)},
        **top,
    }
    return msgspec.convert(doc, Profile)


def built_profiles() -> dict[str, Profile]:
    return {
        "aggregated": make_profile("t-agg"),
        "pd": make_profile(
            "t-pd",
            [
                {"name": "prefill", "role": "prefill", "replicas": 1},
                {"name": "decode", "role": "decode", "replicas": 3},
            ],
        ),
        "wide-ep": make_profile(
            "t-wide-ep", [{"name": "ep", "replicas": 2, "data_parallel_size": 8, "model_profile": "DeepSeek-R1"}]
        ),
        "offload": make_profile("t-offload", kv_tiers={"cpu_blocks": 64, "filesystem": {"path": "kv"}}),
        "vllm": make_profile(
            "t-vllm",
            [
                {
                    "name": "gpu",
                    "replicas": 1,
                    "tensor_parallel_size": 2,
                    "labels": {"tier": "gold"},
                    "env": {"VLLM_SERVER_DEV_MODE": "1"},
                }
            ],
            engine="vllm",
            model="Qwen/Qwen3-0.6B",
        ),
        "no-events": make_profile("t-quiet", [{"name": "pod", "replicas": 1, "kv_events": False}]),
    }
