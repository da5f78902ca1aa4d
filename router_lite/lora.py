"""Which LoRA adapter a request names: its `model`, when that is not a base model the pool serves.

vLLM serves adapters as model names next to the base model, and labels every metric with the base model's
served name (`model_name`); the data layer records those per endpoint. A request for any other name is an
adapter request: lora-affinity-scorer looks for it in `vllm:lora_requests_info`, and block hashes carry it
(vLLM hashes the adapter name into every block, so the precise prefix index must too).
"""

from __future__ import annotations

from collections.abc import Iterable

from router_lite.types import Endpoint


def adapter_of(model: str, endpoints: Iterable[Endpoint]) -> str | None:
    """`model` when the endpoints report their base models and none of them is `model`; else None."""
    bases: set[str] = set()
    for e in endpoints:
        bases |= e.metrics.base_models
    return model if bases and model not in bases else None
