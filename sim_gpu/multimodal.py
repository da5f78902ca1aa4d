"""Multimodal inputs' serving cost in the simulator: the encoder on the roofline model and the embeddings
an encode pod ships (E/P/D). What an item is as tokens (placeholders, identifiers, counts) lives in
`kvtiers.multimodal`, shared with the router so both hash alike; it is re-exported here.

The encoder is a ViT of `ENCODER_PARAMS_B` billion parameters over 4 patches per placeholder token.
"""

from __future__ import annotations

from typing import Any

from kvtiers.multimodal import (  # noqa: F401  (re-exported: the simulator's callers name them here)
    AUDIO_TOKENS,
    IMAGE_TOKENS,
    MARKER,
    MAX_ITEM_TOKENS,
    PART_KINDS,
    VIDEO_TOKENS,
    MMError,
    MMInput,
    expand,
    extract,
    image_tokens,
)
from sim_gpu.hw_profiles import load_network
from sim_gpu.latency import DEFAULT_NETWORK, LatencyModel

ENCODER_PARAMS_B = 0.6  # a Qwen2.5-VL-sized vision tower
PATCHES_PER_TOKEN = 4  # 2x2 patch merge


def encode_time(latency: LatencyModel, num_tokens: int) -> float:
    """Seconds the vision/audio encoder takes for `num_tokens` placeholder tokens on this pod (roofline: the
    larger of its FLOPs at prefill efficiency and its weights over HBM, plus one step's overhead)."""
    if num_tokens <= 0:
        return 0.0
    hw, tp = latency.hardware, latency.tp
    flops = 2.0 * ENCODER_PARAMS_B * 1e9 * PATCHES_PER_TOKEN * num_tokens
    compute = flops / (hw.peak_tflops * 1e12 * hw.mfu * tp)
    weights = ENCODER_PARAMS_B * 1e9 * latency.model.dtype_bytes / (hw.hbm_tbps * 1e12 * hw.hbm_efficiency * tp)
    return max(compute, weights) + hw.step_overhead_ms * 1e-3


def embedding_bytes(latency: LatencyModel, num_tokens: int) -> int:
    """Bytes of the embeddings of `num_tokens` placeholder tokens (the LLM's hidden size, its dtype)."""
    return num_tokens * latency.model.hidden_size * latency.model.dtype_bytes


def transfer_time(latency: LatencyModel, nbytes: int) -> float:
    """Seconds to pull `nbytes` of embeddings from the encode pod over the pod's network profile."""
    if nbytes <= 0:
        return 0.0
    net = latency.network or load_network(DEFAULT_NETWORK)
    return nbytes / net.bytes_per_s + net.latency_us * 1e-6


def encode_params(inputs: list[MMInput], nbytes: int, host: str, port: int) -> dict[str, Any]:
    """What an encode pod answers with (`ec_transfer_params`), for the router to hand to the prefill pod. The
    simulator's stand-in for vLLM's EC connector lookup: it names the items, their size and where they are."""
    return {
        "mm_hashes": [i.identifier for i in inputs],
        "num_encoder_tokens": sum(i.num_tokens for i in inputs),
        "embedding_bytes": nbytes,
        "remote_host": host,
        "remote_port": port,
    }


def pulled_bytes(params: dict[str, Any] | None, inputs: list[MMInput]) -> int | None:
    """Embedding bytes to pull when `ec_transfer_params` cover every item of the request; None when absent or
    partial (the pod then runs the encoder itself, as a P/D pod without the embeddings would)."""
    if not params or not inputs:
        return None
    hashes = params.get("mm_hashes")
    nbytes = params.get("embedding_bytes")
    if not isinstance(hashes, list) or not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        return None
    return nbytes if {i.identifier for i in inputs} <= set(hashes) else None
