"""Typed (semantic) KV blocks: what kind of state each block of a request holds, derived from chat structure.

Agentic traffic mixes durable state (the system prompt), shared state (tool definitions), per-conversation
turns and throwaway reasoning. A cache that knows which is which can pin, replicate or drop blocks where
blind LRU cannot. Types are derived from an OpenAI chat request (system messages, ``tools``, assistant
reasoning / ``<think>`` content, user and tool turns) and can be overridden per request with the extension
field ``kv_block_type``.

Why a block takes the type of its *last* token: a prefix-cached block is reusable only when every token up
to its end matches, so a block that starts in the system prompt and ends in a user turn is exactly as
reusable as that user turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any


class BlockType(str, Enum):
    """The kind of state a KV block holds; the value is what users write in config and requests."""

    SYSTEM_PROMPT = "system_prompt"
    TOOL_DEFINITION = "tool_definition"
    CONVERSATION = "conversation"
    REASONING_BRANCH = "reasoning_branch"
    OTHER = "other"


BLOCK_TYPES: tuple[str, ...] = tuple(t.value for t in BlockType)
OVERRIDE_FIELD = "kv_block_type"
SEGMENT_KINDS: tuple[str, ...] = ("system", "tools", "user", "assistant", "reasoning", "tool")
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)


def parse_block_type(value: Any, where: str = OVERRIDE_FIELD) -> BlockType:
    """A BlockType from its name; a ValueError naming `where` and the accepted names otherwise."""
    try:
        return BlockType(value)
    except ValueError:
        raise ValueError(f"{where}: expected one of {', '.join(BLOCK_TYPES)}, got {value!r}") from None


@dataclass(frozen=True)
class Segment:
    """A run of prompt text of one kind (`system`, `tools`, `user`, `assistant`, `reasoning`, `tool`)."""

    kind: str
    type: BlockType
    text: str


@dataclass(frozen=True)
class Span:
    """Tokens [start, end) of the prompt that hold state of one type."""

    start: int
    end: int
    type: BlockType


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _assistant_segments(message: Mapping[str, Any]) -> list[Segment]:
    out: list[Segment] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        out.append(Segment("reasoning", BlockType.REASONING_BRANCH, _text(reasoning)))
    content = _text(message.get("content"))
    pos = 0
    for m in _THINK.finditer(content):
        if m.start() > pos:
            out.append(Segment("assistant", BlockType.CONVERSATION, content[pos : m.start()]))
        out.append(Segment("reasoning", BlockType.REASONING_BRANCH, m.group(0)))
        pos = m.end()
    if pos < len(content):
        out.append(Segment("assistant", BlockType.CONVERSATION, content[pos:]))
    if message.get("tool_calls"):
        out.append(Segment("assistant", BlockType.CONVERSATION, json.dumps(message["tool_calls"], sort_keys=True)))
    return out


def tools_text(tools: Sequence[Any]) -> str:
    """The text a chat prompt holds for `tools`: what the simulator's template renders and what typing counts."""
    return json.dumps(list(tools), sort_keys=True)


def chat_segments(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None) -> list[Segment]:
    """The prompt of a chat request as typed segments, in the order chat templates render them.

    Leading system/developer messages are the system prompt; tool definitions follow them (as Qwen- and
    Llama-style templates place them); a system message later in the conversation is conversation state.
    """
    segs: list[Segment] = []
    i = 0
    while i < len(messages) and messages[i].get("role") in ("system", "developer"):
        segs.append(Segment("system", BlockType.SYSTEM_PROMPT, _text(messages[i].get("content"))))
        i += 1
    if tools:
        segs.append(Segment("tools", BlockType.TOOL_DEFINITION, tools_text(tools)))
    for msg in messages[i:]:
        role = msg.get("role")
        if role == "assistant":
            segs.extend(_assistant_segments(msg))
        elif role == "tool":
            segs.append(Segment("tool", BlockType.CONVERSATION, _text(msg.get("content"))))
        else:
            segs.append(Segment("user", BlockType.CONVERSATION, _text(msg.get("content"))))
    return segs


def segment_spans(segments: Sequence[Segment], count_tokens: Callable[[str], int], start: int = 0) -> list[Span]:
    """Token spans of segments laid end to end, with `count_tokens` measuring each segment's text.

    This approximates the rendered template (its role markers fall into the neighbouring span); a caller
    with a tokenizer's character offsets can build exact spans and skip this.
    """
    spans: list[Span] = []
    pos = start
    for seg in segments:
        n = count_tokens(seg.text)
        if n > 0:
            spans.append(Span(pos, pos + n, seg.type))
            pos += n
    return spans


def block_types(spans: Sequence[Span], num_tokens: int, block_size: int) -> list[BlockType]:
    """The type of every full block of a `num_tokens` prompt: the type of the span holding its last token.

    Tokens outside every span (template markers after the last span) take the type of the span before them.
    """
    if block_size <= 0:
        raise ValueError(f"block_size: expected a positive integer, got {block_size!r}")
    ordered = sorted(spans, key=lambda s: s.start)
    out: list[BlockType] = []
    j = 0
    current = BlockType.OTHER
    for b in range(num_tokens // block_size):
        last = (b + 1) * block_size - 1
        while j < len(ordered) and ordered[j].start <= last:
            current = ordered[j].type
            j += 1
        # `current` is the latest span starting at or before `last`; it holds `last` or precedes it.
        out.append(current)
    return out


def apply_override(segments: list[Segment], override: Any) -> tuple[list[Segment], list[BlockType] | None]:
    """Apply a request's `kv_block_type` override.

    Accepted forms: a type name (every block), a map from segment kind to type name (e.g.
    ``{"reasoning": "conversation"}``), or a list of type names, one per block (returned separately).
    """
    if override is None:
        return segments, None
    if isinstance(override, str):
        t = parse_block_type(override)
        return [Segment(s.kind, t, s.text) for s in segments], None
    if isinstance(override, Mapping):
        mapping: dict[str, BlockType] = {}
        for kind, name in override.items():
            if kind not in SEGMENT_KINDS:
                raise ValueError(
                    f"{OVERRIDE_FIELD}: unknown segment kind {kind!r}; expected one of {', '.join(SEGMENT_KINDS)}"
                )
            mapping[kind] = parse_block_type(name, f"{OVERRIDE_FIELD}.{kind}")
        return [Segment(s.kind, mapping.get(s.kind, s.type), s.text) for s in segments], None
    if isinstance(override, list):
        return segments, [parse_block_type(v, f"{OVERRIDE_FIELD}[{i}]") for i, v in enumerate(override)]
    raise ValueError(
        f"{OVERRIDE_FIELD}: expected a type name, a map of segment kind to type, or a list, got "
        f"{type(override).__name__}"
    )


def request_block_types(
    body: Mapping[str, Any], num_tokens: int, block_size: int, count_tokens: Callable[[str], int]
) -> list[BlockType]:
    """Per-block types of one OpenAI request body (chat or completions), honouring `kv_block_type`.

    A completions prompt has no structure: its blocks are `other` unless overridden.
    """
    override = body.get(OVERRIDE_FIELD)
    if "messages" in body:
        segs = chat_segments(body["messages"], body.get("tools"))
    else:
        prompt = body.get("prompt", "")
        segs = [Segment("user", BlockType.OTHER, prompt if isinstance(prompt, str) else "")]
    segs, per_block = apply_override(segs, override)
    n_blocks = num_tokens // block_size
    if per_block is not None:
        # A list shorter than the prompt repeats its last entry; an empty list means no override.
        if not per_block:
            per_block = None
        else:
            return [per_block[min(i, len(per_block) - 1)] for i in range(n_blocks)]
    if "messages" not in body:
        return [segs[0].type] * n_blocks
    return block_types(segment_spans(segs, count_tokens), num_tokens, block_size)
