"""Tool definitions in chat prompts: the simulator's template renders them where typing expects them, and
the router's built-in tokenizer produces the same ids as the engine (so its block hashes match)."""

from __future__ import annotations

import asyncio

from kvtiers.tokenizer import BuiltinTokenizer
from kvtiers.types import BlockType, request_block_types, tools_text
from router_lite.tokenization import BuiltinTokenizer as RouterBuiltin

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "find pages " * 40,
            "parameters": {"type": "object", "properties": {}},
        },
    }
]
MESSAGES = [
    {"role": "system", "content": "you plan carefully " * 30},
    {"role": "user", "content": "book a flight " * 20},
]


def test_tools_render_after_the_system_prompt_and_type_as_tool_definitions():
    tok = BuiltinTokenizer()
    text = tok.apply_chat_template(MESSAGES, True, tools=TOOLS)
    assert text.index("<|system|>") < text.index(tools_text(TOOLS)) < text.index("<|user|>")
    assert tools_text(TOOLS) not in tok.apply_chat_template(MESSAGES, True)  # no tools, nothing rendered
    ids = tok.encode_chat(MESSAGES, True, tools=TOOLS)
    types = request_block_types(
        {"messages": MESSAGES, "tools": TOOLS}, len(ids), 16, lambda s: len(tok.encode(s, False))
    )
    n_tool = sum(t is BlockType.TOOL_DEFINITION for t in types)
    assert n_tool >= len(tok.encode(tools_text(TOOLS), False)) // 16 - 1
    assert types.index(BlockType.TOOL_DEFINITION) > types.index(BlockType.SYSTEM_PROMPT)
    assert types[-1] is BlockType.CONVERSATION


def test_tools_only_conversation_still_renders_them():
    tok = BuiltinTokenizer()
    assert tools_text(TOOLS) in tok.apply_chat_template([{"role": "system", "content": "x"}], False, tools=TOOLS)


def test_router_builtin_tokenizer_matches_the_engine_with_tools_and_continued_messages():
    engine, router = BuiltinTokenizer(), RouterBuiltin()
    scratch = MESSAGES + [{"role": "assistant", "content": "<think> maybe a train"}]
    for msgs, options, add_gen in (
        (MESSAGES, {"tools": TOOLS}, True),
        (scratch, {"tools": TOOLS, "continue_final_message": True, "add_generation_prompt": False}, False),
        (scratch, {"continue_final_message": True}, False),
    ):
        got = asyncio.run(router.encode_chat("m", msgs, options))
        assert got == engine.encode_chat(msgs, add_gen, tools=options.get("tools"))
