"""Request parameters through the openai SDK against a real simulator process: each one honoured as vLLM 0.32
honours it, or refused with vLLM's 400 — never a 200 that ignored it."""

from __future__ import annotations

import json

import openai
import pytest

from tests.sim.simproc import sim_server

MODEL = "sim-llama"


@pytest.fixture(scope="module")
def server():
    with sim_server("--model", MODEL, "--time-scale", "0", "--max-model-len", "4096") as s:
        yield s


@pytest.fixture
def client(server):
    c = openai.OpenAI(base_url=server.base + "/v1", api_key="none", max_retries=0, timeout=20)
    yield c
    c.close()


def _complete(client, **kw):
    kw.setdefault("max_tokens", 12)
    extra = {"ignore_eos": True, "return_token_ids": True, **kw.pop("extra_body", {})}
    return client.completions.create(model=MODEL, prompt="the router keeps a prefix index", extra_body=extra, **kw)


def _refused(fn, param: str) -> str:
    with pytest.raises(openai.BadRequestError) as err:
        fn()
    body = err.value.body
    assert err.value.status_code == 400 and body["param"] == param, body
    return body["message"]


def test_stop_string_ends_the_choice_before_the_string(client):
    free = _complete(client).choices[0]
    words = free.text.split()
    stop = words[3]
    r = _complete(client, stop=[stop]).choices[0]
    assert r.finish_reason == "stop" and r.model_extra["stop_reason"] == stop
    assert r.text == free.text[: free.text.index(stop)]
    assert len(r.model_extra["token_ids"]) < len(free.model_extra["token_ids"])
    kept = _complete(client, stop=stop, extra_body={"include_stop_str_in_output": True}).choices[0]
    assert kept.text.endswith(stop) and kept.text == r.text + stop


def test_stop_string_streamed_never_leaks(client):
    free = _complete(client).choices[0].text
    stop = free.split()[4]
    chunks = list(_complete(client, stop=stop, stream=True))
    text = "".join(c.choices[0].text for c in chunks)
    assert stop not in text and text == free[: free.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stop_token_ids_and_min_tokens(client):
    ids = _complete(client).choices[0].model_extra["token_ids"]
    r = _complete(client, extra_body={"stop_token_ids": [ids[2]]}).choices[0]
    assert r.finish_reason == "stop" and r.model_extra["stop_reason"] == ids[2]
    assert r.model_extra["token_ids"] == ids[:3]  # the stop token is an output token, not text
    late = _complete(client, extra_body={"stop_token_ids": [ids[2]], "min_tokens": 5}).choices[0]
    assert late.finish_reason == "length" and late.model_extra["token_ids"] == ids
    _refused(lambda: _complete(client, max_tokens=3, extra_body={"min_tokens": 4}), "min_tokens")


def test_seed_reproduces_and_n_choices_differ(client):
    a = _complete(client, seed=7, temperature=0.8).choices[0].model_extra["token_ids"]
    b = _complete(client, seed=7, temperature=0.8).choices[0].model_extra["token_ids"]
    c = _complete(client, seed=8, temperature=0.8).choices[0].model_extra["token_ids"]
    assert a == b and a != c
    many = _complete(client, n=3, seed=7)
    outs = [ch.model_extra["token_ids"] for ch in many.choices]
    assert [ch.index for ch in many.choices] == [0, 1, 2] and len({tuple(o) for o in outs}) == 3
    assert outs[0] == a  # choice i draws with seed + i, as vLLM seeds its n child requests
    unseeded = _complete(client, n=2).choices
    assert unseeded[0].model_extra["token_ids"] != unseeded[1].model_extra["token_ids"]
    greedy = _complete(client, n=2, temperature=0, seed=3).choices  # greedy: every choice the same
    assert greedy[0].model_extra["token_ids"] == greedy[1].model_extra["token_ids"]


def test_completion_logprobs(client):
    r = _complete(client, logprobs=3, max_tokens=5).choices[0]
    lp = r.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert "".join(lp.tokens) == r.text and lp.text_offset[0] == 0
    for tok, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert value <= 0 and top[tok] == value and 1 <= len(top) <= 4
    _refused(lambda: _complete(client, logprobs=21), "logprobs")
    streamed = [c.choices[0].logprobs for c in _complete(client, logprobs=1, max_tokens=5, stream=True)]
    assert sum(len(s.tokens) for s in streamed if s) == 5


def test_chat_logprobs(client):
    msgs = [{"role": "user", "content": "hi"}]
    r = client.chat.completions.create(
        model=MODEL, messages=msgs, max_tokens=4, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True}
    )
    content = r.choices[0].logprobs.content
    assert len(content) == 4 and "".join(c.token for c in content) == r.choices[0].message.content
    for c in content:
        assert c.logprob <= 0 and len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob >= c.top_logprobs[1].logprob
        assert bytes(c.bytes).decode() == c.token
    _refused(lambda: client.chat.completions.create(model=MODEL, messages=msgs, top_logprobs=2), "top_logprobs")
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=msgs, max_tokens=3, logprobs=True, stream=True, extra_body={"ignore_eos": True}
        )
    )
    assert sum(len(c.choices[0].logprobs.content) for c in chunks if c.choices and c.choices[0].logprobs) == 3


SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
    },
    "required": ["city", "days"],
}


def test_response_format_gives_json_of_the_schema(client):
    msgs = [{"role": "user", "content": "plan a trip"}]
    r = client.chat.completions.create(
        model=MODEL,
        messages=msgs,
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA}},
    )
    value = json.loads(r.choices[0].message.content)
    assert isinstance(value["city"], str) and isinstance(value["days"], int) and value["tags"] == ["a"]
    assert r.choices[0].finish_reason == "stop"
    obj = client.chat.completions.create(model=MODEL, messages=msgs, response_format={"type": "json_object"})
    assert isinstance(json.loads(obj.choices[0].message.content), dict)
    cut = client.chat.completions.create(
        model=MODEL,
        messages=msgs,
        max_tokens=2,
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA}},
    )
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def test_tools_as_vllm_without_a_parser(client):
    msgs = [{"role": "user", "content": "weather in Paris?"}]
    message = _refused(lambda: client.chat.completions.create(model=MODEL, messages=msgs, tools=TOOLS), "tool_choice")
    assert "--enable-auto-tool-choice" in message
    plain = client.chat.completions.create(model=MODEL, messages=msgs, tools=TOOLS, tool_choice="none", max_tokens=3)
    assert plain.choices[0].message.content and not plain.choices[0].message.tool_calls
    # vLLM 0.32 without --tool-call-parser refuses "required" and named tool choices too (measured on a live pod)
    for choice, text in (
        ("required", 'tool_choice="required"'),
        ({"type": "function", "function": {"name": "weather"}}, 'tool_choice=function "weather"'),
    ):
        message = _refused(
            lambda: client.chat.completions.create(
                model=MODEL, messages=msgs, tools=TOOLS, tool_choice=choice, max_tokens=100
            ),
            None,
        )
        assert message == f"{text} requires --tool-call-parser to be set"
    _refused(
        lambda: client.chat.completions.create(
            model=MODEL, messages=msgs, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}
        ),
        "tool_choice",
    )


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city", "days"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "clock"}}  # no parameters: an empty arguments object


@pytest.fixture(scope="module")
def hermes():
    """A pod started as vLLM is for tool calling: `--enable-auto-tool-choice --tool-call-parser hermes`."""
    args = ("--model", MODEL, "--time-scale", "0", "--max-model-len", "4096", "--tool-call-parser", "hermes")
    with sim_server(*args, "--enable-auto-tool-choice") as auto, sim_server(*args) as parser_only:
        clients = [
            openai.OpenAI(base_url=s.base + "/v1", api_key="none", max_retries=0, timeout=20)
            for s in (auto, parser_only)
        ]
        yield clients
        for c in clients:
            c.close()


def _arguments_fit_the_schema(call) -> None:
    args = json.loads(call.function.arguments)
    assert (
        call.type == "function" and call.id.startswith("chatcmpl-tool-") and len(call.id) == len("chatcmpl-tool-") + 16
    )
    if call.function.name == "weather":
        assert isinstance(args["city"], str) and isinstance(args["days"], int) and args["days"] >= 1
    else:
        assert args == {}


def test_tool_calls_with_the_hermes_parser(hermes):
    auto, _ = hermes
    msgs = [{"role": "user", "content": "weather in Paris for three days?"}]
    r = auto.chat.completions.create(model=MODEL, messages=msgs, tools=[WEATHER, CLOCK], max_tokens=200)
    ch = r.choices[0]  # "auto" (the default with tools): the model calls a tool, vLLM's finish reason
    assert ch.finish_reason == "tool_calls" and ch.message.content is None and len(ch.message.tool_calls) == 1
    _arguments_fit_the_schema(ch.message.tool_calls[0])
    assert r.usage.completion_tokens > 5  # the call's text went through the engine, token by token
    named = auto.chat.completions.create(
        model=MODEL,
        messages=msgs,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "clock"}},
    ).choices[0]
    assert named.finish_reason == "stop" and named.message.content == ""  # vLLM: "stop" for a named function
    assert [c.function.name for c in named.message.tool_calls] == ["clock"]
    _arguments_fit_the_schema(named.message.tool_calls[0])
    required = auto.chat.completions.create(model=MODEL, messages=msgs, tools=[WEATHER], tool_choice="required")
    ch = required.choices[0]
    assert ch.finish_reason == "tool_calls" and [c.function.name for c in ch.message.tool_calls] == ["weather"]
    _arguments_fit_the_schema(ch.message.tool_calls[0])
    # the tool's result comes back: the model answers in text, closing the agent's loop
    call = ch.message.tool_calls[0]
    loop = [
        *msgs,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = auto.chat.completions.create(model=MODEL, messages=loop, tools=[WEATHER], max_tokens=6).choices[0]
    assert answer.finish_reason == "length" and answer.message.content and not answer.message.tool_calls
    cut = auto.chat.completions.create(
        model=MODEL, messages=msgs, tools=[WEATHER], tool_choice="required", max_tokens=3
    )
    assert (
        cut.choices[0].finish_reason == "length" and not cut.choices[0].message.tool_calls
    )  # as vLLM: no JSON, no call


def test_tool_calls_stream_as_vllm_streams_them(hermes):
    auto, _ = hermes
    msgs = [{"role": "user", "content": "weather?"}]
    for choice, reason in (
        ("auto", "tool_calls"),
        ("required", "tool_calls"),
        ({"type": "function", "function": {"name": "weather"}}, "stop"),
    ):
        chunks = list(
            auto.chat.completions.create(model=MODEL, messages=msgs, tools=[WEATHER], tool_choice=choice, stream=True)
        )
        deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
        head = deltas[0]  # the header first: id, type, name, empty arguments; then the arguments in pieces
        assert (
            head.id.startswith("chatcmpl-tool-") and head.function.name == "weather" and head.function.arguments == ""
        )
        assert len(deltas) > 2 and all(d.index == 0 and d.id is None for d in deltas[1:])
        args = "".join(d.function.arguments for d in deltas)
        assert set(json.loads(args)) == {"city", "days"}, choice
        assert chunks[-1].choices[0].finish_reason == reason, choice
        assert not "".join(c.choices[0].delta.content or "" for c in chunks)  # no tool-call markup leaks as text


def test_parser_without_auto_tool_choice(hermes):
    """vLLM with --tool-call-parser but not --enable-auto-tool-choice: "auto" answers in text, required calls."""
    _, parser_only = hermes
    msgs = [{"role": "user", "content": "weather?"}]
    text = parser_only.chat.completions.create(model=MODEL, messages=msgs, tools=[WEATHER], max_tokens=5).choices[0]
    assert text.finish_reason == "length" and text.message.content and not text.message.tool_calls
    req = parser_only.chat.completions.create(model=MODEL, messages=msgs, tools=[WEATHER], tool_choice="required")
    assert req.choices[0].finish_reason == "tool_calls"


def test_auto_tool_choice_without_a_parser_does_not_start():
    with pytest.raises(RuntimeError, match="--enable-auto-tool-choice requires --tool-call-parser"):
        with sim_server("--model", MODEL, "--enable-auto-tool-choice"):
            pass


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"logit_bias": {"5": 10}}, "logit_bias"),
        ({"prompt_logprobs": 1}, "prompt_logprobs"),
        ({"suffix": "end"}, "suffix"),
        ({"structured_outputs": {"regex": "a+"}}, "structured_outputs"),
        ({"best_of": 3}, "best_of"),
    ],
)
def test_fields_not_honoured_are_refused_by_name(client, extra, param):
    _refused(lambda: client.completions.create(model=MODEL, prompt="x", extra_body=extra), param)


def test_through_the_router_parameters_arrive_and_refusals_come_back():
    """The same behaviour through router_lite: the body reaches the pod untouched, the pod's 400 comes back whole."""
    from tests.router.procs import MODEL as ROUTED
    from tests.router.procs import router, sim_pods

    with sim_pods(2, events=False) as pods, router(pods.endpoint_entries()) as r:
        c = openai.OpenAI(base_url=r.url + "/v1", api_key="none", max_retries=0, timeout=20)
        try:

            def run(**kw):
                return c.completions.create(
                    model=ROUTED,
                    prompt="route this prompt please",
                    max_tokens=8,
                    extra_body={"ignore_eos": True, "return_token_ids": True, **kw.pop("extra_body", {})},
                    **kw,
                ).choices[0]

            free = run(seed=5)
            assert run(seed=5).model_extra["token_ids"] == free.model_extra["token_ids"]  # any pod, same seed
            ids = free.model_extra["token_ids"]
            cut = run(seed=5, extra_body={"stop_token_ids": [ids[1]]})
            assert cut.finish_reason == "stop" and cut.model_extra["token_ids"] == ids[:2]
            assert len(run(logprobs=2).logprobs.tokens) == 8
            msgs = [{"role": "user", "content": "weather?"}]
            with pytest.raises(openai.BadRequestError) as err:
                c.chat.completions.create(model=ROUTED, messages=msgs, tools=TOOLS)
            assert err.value.body["param"] == "tool_choice"
        finally:
            c.close()
