"""Multimodal chat parts as tokens: what the router and the simulated pods must agree on to hash alike.

An image / video / audio content part becomes a run of placeholder tokens where it sits in the templated
prompt, and an identifier (vLLM's mm hash: one per distinct item) that enters the block hashes' extra keys as
`(identifier, offset - block start)` for every block the run overlaps. vLLM hashes blocks this way; a router
that hashed the placeholders alone would see every image as one shared prefix.

Token counts: a PNG given as a data URL counts as Qwen2-VL counts it (one token per 28x28 pixels: 14-pixel
patches merged 2x2); any other image `IMAGE_TOKENS` (LLaVA's 576); a video `VIDEO_TOKENS`, an audio clip
`AUDIO_TOKENS` (30 s through a Whisper-style encoder). The placeholder token is the vocabulary's last id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvtiers.hashing import MMItem

PART_KINDS = {"image_url": "image", "video_url": "video", "input_audio": "audio"}  # OpenAI part type -> kind
IMAGE_TOKENS = 576
VIDEO_TOKENS = 4 * IMAGE_TOKENS
AUDIO_TOKENS = 750
MAX_ITEM_TOKENS = 16384
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
            isinstance(p, dict) and isinstance(p.get("type"), str) and p["type"] in PART_KINDS for p in content
        ):
            out.append(m)
            continue
        parts = []
        for j, p in enumerate(content):
            if isinstance(p, dict) and isinstance(p.get("type"), str) and p["type"] in PART_KINDS:
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


def placeholder_id(vocab_size: int) -> int:
    """The token a multimodal item's placeholders are made of (the simulated pods' choice: the last id)."""
    return vocab_size - 1


def expand_with(
    encode: Callable[[str], list[int]], vocab_size: int, ids: list[int], items: list[MMInput]
) -> tuple[list[int], list[MMItem]]:
    """`expand` with the marker tokenized by `encode` (text, no special tokens) and the vocabulary's placeholder."""
    if not items:
        return ids, []
    return expand(ids, encode(MARKER), items, placeholder_id(vocab_size))


def locate(ids: list[int], items: list[MMInput]) -> list[MMItem] | None:
    """Where a prompt already expanded by an engine (its `/tokenize` answer) holds `items`, in prompt order: each
    run of one repeated token that holds exactly the next item(s) (adjacent items share a run), every run of the
    same placeholder token. None when the prompt does not hold them all that way (hashes would be wrong)."""
    if not items:
        return []
    shortest = min(item.num_tokens for item in items)
    runs: list[tuple[int, int, int]] = []  # (start, length, token) of runs at least as long as the shortest item
    j, n = 0, len(ids)
    while j < n:
        end = j
        while end < n and ids[end] == ids[j]:
            end += 1
        if end - j >= shortest:
            runs.append((j, end - j, ids[j]))
        j = end
    spans: list[MMItem] = []
    k, placeholder = 0, None
    for start, length, token in runs:
        if k == len(items):
            break
        if placeholder is not None and token != placeholder:
            continue  # repeated text, not an item
        total, end = 0, k
        while end < len(items) and total < length:
            total += items[end].num_tokens
            end += 1
        if total != length:
            if placeholder is not None:
                return None  # the placeholder's run does not hold whole items: the counts disagree
            continue
        offset = start
        for item in items[k:end]:
            spans.append((item.identifier, offset, item.num_tokens))
            offset += item.num_tokens
        k, placeholder = end, token
    return spans if k == len(items) else None
