"""The tool-call emulation's pure core: the text each mode makes the model write, parsed back as vLLM's parser
and chat handler parse it, whole and streamed, complete and cut by max_tokens."""

from __future__ import annotations

import json

import pytest

from sim_gpu.structured import StructuredError, forced_output
from sim_gpu.tools import ToolSettings, ToolStream, parse, plan_text

ARGS = {"city": "sim", "days": 1}


@pytest.mark.parametrize("mode", ["named", "required", "auto"])
def test_complete_text_parses_to_one_call_with_the_arguments(mode):
    text, plan = plan_text(mode, "weather", ARGS)
    content, calls, reason = parse(plan, text, "stop")
    assert [c["function"]["name"] for c in calls] == ["weather"]
    assert json.loads(calls[0]["function"]["arguments"]) == ARGS
    assert calls[0]["id"] == plan.calls[0].id and calls[0]["type"] == "function"
    assert reason == ("stop" if mode == "named" else "tool_calls")
    assert content == ("" if mode != "auto" else None)


def test_cut_text_is_no_call_except_a_named_functions_partial_arguments():
    for mode in ("required", "auto"):
        text, plan = plan_text(mode, "weather", ARGS)
        content, calls, reason = parse(plan, text[:10], "length")
        assert calls == [] and reason == "length", mode
    text, plan = plan_text("named", "weather", ARGS)
    _, calls, reason = parse(plan, text[:5], "length")  # vLLM passes the partial arguments through
    assert calls[0]["function"]["arguments"] == text[:5] and reason == "length"


def test_hermes_text_before_the_call_is_content():
    text, plan = plan_text("auto", "weather", ARGS)
    content, calls, _ = parse(plan, "Let me check. " + text, "stop")
    assert content == "Let me check. " and len(calls) == 1


@pytest.mark.parametrize("mode", ["named", "required", "auto"])
def test_streamed_pieces_rebuild_the_arguments_after_one_header(mode):
    text, plan = plan_text(mode, "weather", ARGS)
    stream = ToolStream(plan)
    deltas = [d for i in range(0, len(text), 3) for d in stream.push(text[i : i + 3])]
    assert deltas[0] == {
        "index": 0,
        "id": plan.calls[0].id,
        "type": "function",
        "function": {"name": "weather", "arguments": ""},
    }
    assert "".join(d["function"]["arguments"] for d in deltas) == json.dumps(ARGS)
    assert stream.finish_reason("stop") == ("stop" if mode == "named" else "tool_calls")
    assert stream.finish_reason("length") == "length"


def test_tool_choice_as_vllm_with_and_without_a_parser():
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    body = {"tools": tools, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(StructuredError, match="--enable-auto-tool-choice"):
        forced_output(body, True)
    assert forced_output(body, True, ToolSettings("hermes")) is None  # parser only: "auto" answers in text
    assert forced_output(body, True, ToolSettings("hermes", auto=True)).tools.mode == "auto"
    after_tool = {**body, "messages": [*body["messages"], {"role": "tool", "content": "sunny"}]}
    assert forced_output(after_tool, True, ToolSettings("hermes", auto=True)) is None
    named = {**body, "tool_choice": {"type": "function", "function": {"name": "nope"}}}
    with pytest.raises(StructuredError, match="has not been passed"):
        forced_output(named, True, ToolSettings("hermes"))
    with pytest.raises(ValueError, match="--tool-call-parser: expected one of hermes"):
        ToolSettings("mistral")
