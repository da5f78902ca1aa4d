"""Block types derived from chat structure, and the request override."""

from __future__ import annotations

import pytest

from kvtiers.types import (
    BlockType,
    Span,
    apply_override,
    block_types,
    chat_segments,
    request_block_types,
    segment_spans,
)

T = BlockType


def words(text: str) -> int:
    return len(text.split())


def test_chat_segments_follow_structure():
    msgs = [
        {"role": "system", "content": "you are terse"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": "<think>hmm maybe</think>hello", "tool_calls": [{"id": "1"}]},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "reasoning_content": "so 42", "content": "it is 42"},
        {"role": "system", "content": "late note"},
    ]
    segs = chat_segments(msgs, tools=[{"type": "function", "function": {"name": "calc"}}])
    assert [(s.kind, s.type) for s in segs] == [
        ("system", T.SYSTEM_PROMPT),
        ("tools", T.TOOL_DEFINITION),
        ("user", T.CONVERSATION),
        ("reasoning", T.REASONING_BRANCH),
        ("assistant", T.CONVERSATION),
        ("assistant", T.CONVERSATION),  # tool calls
        ("tool", T.CONVERSATION),
        ("reasoning", T.REASONING_BRANCH),
        ("assistant", T.CONVERSATION),
        ("user", T.CONVERSATION),  # a system message mid-conversation is conversation state
    ]
    assert segs[3].text == "<think>hmm maybe</think>"
    assert segs[4].text == "hello"


def test_block_takes_type_of_its_last_token():
    spans = [Span(0, 20, T.SYSTEM_PROMPT), Span(20, 30, T.TOOL_DEFINITION), Span(30, 50, T.CONVERSATION)]
    # blocks of 8: [0,8) [8,16) sys; [16,24) ends in tools; [24,32) ends in conv; [32,40) [40,48) conv
    assert block_types(spans, 50, 8) == [
        T.SYSTEM_PROMPT,
        T.SYSTEM_PROMPT,
        T.TOOL_DEFINITION,
        T.CONVERSATION,
        T.CONVERSATION,
        T.CONVERSATION,
    ]
    # tokens past the last span (template trailer) keep the last span's type; no spans at all: other
    assert block_types([Span(0, 4, T.SYSTEM_PROMPT)], 16, 8) == [T.SYSTEM_PROMPT, T.SYSTEM_PROMPT]
    assert block_types([], 16, 8) == [T.OTHER, T.OTHER]
    with pytest.raises(ValueError, match="block_size"):
        block_types(spans, 10, 0)


def test_request_types_end_to_end_with_word_counts():
    body = {
        "messages": [
            {"role": "system", "content": " ".join(["s"] * 16)},
            {"role": "user", "content": " ".join(["u"] * 8)},
            {"role": "assistant", "content": "<think>" + " ".join(["r"] * 15) + "</think>"},
        ],
        "tools": [{"name": "t"}],  # json text counts as 2 words
    }
    spans = segment_spans(chat_segments(body["messages"], body["tools"]), words)
    assert [(s.start, s.end) for s in spans] == [(0, 16), (16, 18), (18, 26), (26, 41)]
    types = request_block_types(body, 41, 8, words)
    # [16,24) ends in the user turn: the short tool block is swallowed by it
    assert types == [T.SYSTEM_PROMPT, T.SYSTEM_PROMPT, T.CONVERSATION, T.REASONING_BRANCH, T.REASONING_BRANCH]


def test_override_forms():
    body = {"messages": [{"role": "system", "content": "a b c d"}, {"role": "user", "content": "e f g h"}]}
    assert request_block_types({**body, "kv_block_type": "other"}, 8, 4, words) == [T.OTHER, T.OTHER]
    assert (
        request_block_types({**body, "kv_block_type": {"user": "system_prompt"}}, 8, 4, words) == [T.SYSTEM_PROMPT] * 2
    )
    assert request_block_types({**body, "kv_block_type": ["conversation", "other"]}, 12, 4, words) == [
        T.CONVERSATION,
        T.OTHER,
        T.OTHER,
    ]
    assert request_block_types({"prompt": "x y z w", "kv_block_type": "system_prompt"}, 4, 4, words) == [
        T.SYSTEM_PROMPT
    ]
    assert request_block_types({"prompt": "x y z w"}, 4, 4, words) == [T.OTHER]


@pytest.mark.parametrize(
    "override, message",
    [
        ("durable", "kv_block_type: expected one of system_prompt"),
        ({"bogus": "other"}, "kv_block_type: unknown segment kind 'bogus'"),
        ({"user": "nope"}, r"kv_block_type\.user: expected one of"),
        (["other", 3], r"kv_block_type\[1\]: expected one of"),
        (7, "kv_block_type: expected a type name"),
    ],
)
def test_bad_override_is_one_clear_error(override, message):
    with pytest.raises(ValueError, match=message):
        apply_override([], override)
