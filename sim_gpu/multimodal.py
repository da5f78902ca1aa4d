"""Multimodal inputs as token cost: image / video / audio parts of chat messages, their encoder, their embeddings.

The simulator has no vision tower; what it keeps of a multimodal item is what changes serving: the placeholder
tokens it adds to the prompt (where the part sits), an identifier (vLLM's mm hash: one per distinct item, in
the block hashes' extra keys as `(identifier, offset - block start)`), the encoder's time on the roofline
model, and the bytes of its embeddings (what an encode pod ships to the prefill pod in E/P/D).

Token counts: a PNG given as a data URL counts as Qwen2-VL counts it (one token per 28x28 pixels: 14-pixel
patches merged 2x2); any other image `IMAGE_TOKENS` (LLaVA's 576); a video `VIDEO_TOKENS`, an audio clip
`AUDIO_TOKENS` (30 s through a Whisper-style encoder). The encoder is a ViT of `ENCODER_PARAMS_B` billion
parameters over 4 patches per placeholder token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any

from kvtiers.hashing import MMItem
from sim_gpu.hw_profiles import load_network
from sim_gpu.latency import DEFAULT_NETWORK, LatencyModel

PART_KINDS = {"image_url": "image", "video_url": "video", "input_audio": "audio"}  # OpenAI part type -> kind
IMAGE_TOKENS = 576
VIDEO_TOKENS = 4 * IMAGE_TOKENS
AUDIO_TOKENS = 750
MAX_ITEM_TOKENS = 16384
ENCODER_PARAMS_B = 0.6  # a Qwen2.5-VL-sized vision tower
PATCHES_PER_TOKEN = 4  # 2x2 patch merge
MARKER = "<|sim_mm|>"  # stands for one item while the text is templated and tokenized


class MMError(ValueError):
    """A multimodal part that is not well-formed; `param` names the field."""

    def __init__(self, message: str, param: str = "messages") -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class MMInput:
    kind: str
    identifier: str
    num_tokens: int


def _png_tokens(url: str) -> int | None:
    """Placeholder tokens of a base64 PNG data URL from its IHDR size, or None when it is not one."""
    if not url.startswith("data:image/png;base64,"):
        return None
    try:
        head = base64.b64decode(url[22:54] + "=" * (-len(url[22:54]) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return image_tokens(width, height)


def image_tokens(width: int, height: int) -> int:
    """Placeholder tokens of a `width` x `height` image as Qwen2-VL counts them: one per 28x28 pixels (14-pixel
    patches merged 2x2), between 4 and `MAX_ITEM_TOKENS` (its min_pixels 3136 / max_pixels 12845056)."""
    return max(4, min(MAX_ITEM_TOKENS, math.ceil(width / 28) * math.ceil(height / 28)))


def _item(part: dict[str, Any], where: str) -> MMInput:
    ptype = part["type"]
    kind = PART_KINDS[ptype]
    value = part.get(ptype)
    if ptype == "input_audio":
        if not isinstance(value, dict) or not isinstance(value.get("data"), str):
            raise MMError(f"{where}.input_audio: expected an object with a base64 'data' string")
        source, tokens = value["data"], AUDIO_TOKENS
    else:
        url = value.get("url") if isinstance(value, dict) else value
        if not isinstance(url, str) or not url:
            raise MMError(f"{where}.{ptype}: expected an object with a non-empty 'url' string")
        source = url
        tokens = (_png_tokens(url) or IMAGE_TOKENS) if kind == "image" else VIDEO_TOKENS
    ident = hashlib.sha256(f"{kind}:{source}".encode()).hexdigest()
    return MMInput(kind, ident, tokens)


def extract(messages: Any) -> tuple[Any, list[MMInput]]:
    """Messages with every multimodal part replaced by a text marker, and the items in prompt order.
    Messages without such parts come back as they are (the same object)."""
    if not isinstance(messages, list):
        return messages, []
    items: list[MMInput] = []
    out: list[Any] = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list) or not any(
            isinstance(p, dict) and p.get("type") in PART_KINDS for p in content
        ):
            out.append(m)
            continue
        parts = []
        for j, p in enumerate(content):
            if isinstance(p, dict) and p.get("type") in PART_KINDS:
                items.append(_item(p, f"messages[{i}].content[{j}]"))
                parts.append({"type": "text", "text": MARKER})
            else:
                parts.append(p)
        out.append({**m, "content": parts})
    return (out, items) if items else (messages, [])


def expand(
    ids: list[int], marker_ids: list[int], items: list[MMInput], placeholder: int
) -> tuple[list[int], list[MMItem]]:
    """Replace each marker's tokens by the item's placeholder tokens; returns the prompt and each item's
    (identifier, offset, length). Markers the tokenizer merged away put their items at the prompt's end."""
    out: list[int] = []
    spans: list[MMItem] = []
    k, n, i = 0, len(marker_ids), 0
    while i < len(ids):
        if k < len(items) and n and ids[i : i + n] == marker_ids:
            spans.append((items[k].identifier, len(out), items[k].num_tokens))
            out.extend([placeholder] * items[k].num_tokens)
            k += 1
            i += n
            continue
        out.append(ids[i])
        i += 1
    for item in items[k:]:
        spans.append((item.identifier, len(out), item.num_tokens))
        out.extend([placeholder] * item.num_tokens)
    return out, spans


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
