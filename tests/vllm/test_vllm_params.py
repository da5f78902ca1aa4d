"""The simulator against a real vLLM 0.32 pod, parameter by parameter and metric family by family.

Each request goes to both with the openai SDK; the outcome must be of the same kind (answered, or refused
with a 400 naming the same field) and, when answered, of the same shape (finish reason, logprobs, tool calls,
valid JSON). The simulator serves the tiny model's tokenizer, so both count the same tokens. Then every
`vllm:*` family the live pod exports must exist on the simulator with the same type.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.sim.simproc import sim_server

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
MSGS = [{"role": "user", "content": "the weather in paris"}]

# (endpoint, request fields): each must behave the same way on both servers.
CASES = [
    ("completions", {"stop": ["the"], "max_tokens": 24}),
    ("completions", {"seed": 3, "temperature": 0.9, "max_tokens": 8}),
    ("completions", {"n": 2, "seed": 3, "max_tokens": 8}),
    ("completions", {"logprobs": 2, "max_tokens": 4}),
    ("completions", {"logprobs": 21, "max_tokens": 4}),
    ("completions", {"min_tokens": 9, "max_tokens": 4}),
    ("completions", {"temperature": -1}),
    ("completions", {"top_p": 0}),
    ("completions", {"suffix": "x"}),
    ("chat", {"logprobs": True, "top_logprobs": 2, "max_tokens": 4}),
    ("chat", {"top_logprobs": 2, "max_tokens": 4}),
    ("chat", {"tools": TOOLS, "max_tokens": 8}),
    ("chat", {"tools": TOOLS, "tool_choice": "none", "max_tokens": 8}),
    ("chat", {"tools": TOOLS, "tool_choice": "required", "max_tokens": 200}),
    ("chat", {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "weather"}}, "max_tokens": 200}),
    (
        "chat",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}}, "max_tokens": 200},
    ),
]


def _outcome(client: openai.OpenAI, model: str, endpoint: str, fields: dict) -> tuple:
    """What a client can tell apart: refused (and the field named) or answered (and its shape)."""
    extra = {k: v for k, v in fields.items() if k in ("min_tokens", "top_k")}
    kw = {k: v for k, v in fields.items() if k not in extra}
    try:
        if endpoint == "completions":
            r = client.completions.create(model=model, prompt="the weather in paris", extra_body=extra, **kw)
            ch = r.choices[0]
            return ("ok", len(r.choices), ch.logprobs is not None, ch.finish_reason in ("stop", "length"))
        r = client.chat.completions.create(model=model, messages=MSGS, extra_body=extra, **kw)
    except openai.BadRequestError as exc:
        return ("400", (exc.body or {}).get("param"))
    ch = r.choices[0]
    calls = ch.message.tool_calls or []
    valid_json = None
    if "response_format" in fields and ch.finish_reason == "stop":
        valid_json = isinstance(json.loads(ch.message.content), dict)
    return ("ok", ch.logprobs is not None, bool(calls), [c.function.name for c in calls], valid_json)


@pytest.fixture(scope="module")
def pair(vllm_pair, tiny_model):
    vllm_url = vllm_pair.pods[0].url
    with sim_server("--model", "sim", "--time-scale", "0", "--tokenizer", tiny_model, "--max-model-len", "4096") as s:
        yield vllm_url, s.base


def test_each_parameter_behaves_or_fails_like_vllm(pair):
    vllm_url, sim_url = pair
    vc = openai.OpenAI(base_url=vllm_url + "/v1", api_key="none", max_retries=0, timeout=120)
    sc = openai.OpenAI(base_url=sim_url + "/v1", api_key="none", max_retries=0, timeout=30)
    model = vc.models.list().data[0].id
    diffs = []
    for endpoint, fields in CASES:
        real, sim = _outcome(vc, model, endpoint, fields), _outcome(sc, "sim", endpoint, fields)
        if (
            real[0] != sim[0]
            or (real[0] == "400" and real[1] and real[1] != sim[1])
            or (real[0] == "ok" and real[1:3] != sim[1:3])
        ):
            diffs.append((endpoint, fields, real, sim))
    assert not diffs, "\n".join(f"{e} {f}: vLLM {r} / sim {s}" for e, f, r, s in diffs)


TOOL_FLAGS = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
# With a parser, "required" and a named function are grammar-forced on vLLM: both servers must call the tool
# (same name, vLLM's finish reasons). The arguments' content is the model's: vLLM 0.32 with the tiny random model
# returns valid JSON that is not the schema's object (e.g. '68856113'); the simulator's must be the schema's
# object. "auto" depends on the model: the tiny random model never writes <tool_call>, the simulated model does;
# "auto" and "none": only the outcome kind is compared.
TOOL_CASES = [
    ({"tool_choice": "required"}, True),
    ({"tool_choice": {"type": "function", "function": {"name": "weather"}}}, True),
    ({"tool_choice": "none"}, False),
    ({}, False),
]


@pytest.fixture(scope="module")
def tool_pair(tiny_model, tmp_path_factory):
    """One vLLM pod and one simulated pod, both started with vLLM's tool-calling flags."""
    from tests.vllm.conftest import HASH_SEED
    from tests.vllm.vllm_harness import start_vllm_pods

    stack = start_vllm_pods(tiny_model, 1, tmp_path_factory.mktemp("vllm-tools"), HASH_SEED, args=TOOL_FLAGS)
    try:
        with sim_server("--model", "sim", "--time-scale", "0", "--tokenizer", tiny_model, *TOOL_FLAGS) as s:
            yield stack.pods[0].url, s.base
    finally:
        stack.close()


def _tool_outcome(client: openai.OpenAI, model: str, fields: dict) -> tuple:
    try:
        r = client.chat.completions.create(model=model, messages=MSGS, tools=TOOLS, max_tokens=400, **fields)
    except openai.BadRequestError as exc:
        return ("400", (exc.body or {}).get("param"))
    ch = r.choices[0]
    calls = ch.message.tool_calls or []
    args_ok = all(isinstance(json.loads(c.function.arguments), dict) for c in calls)
    return ("ok", ch.finish_reason, [c.function.name for c in calls], args_ok)


def test_tool_calls_with_a_parser_behave_like_vllm(tool_pair):
    vllm_url, sim_url = tool_pair
    vc = openai.OpenAI(base_url=vllm_url + "/v1", api_key="none", max_retries=0, timeout=300)
    sc = openai.OpenAI(base_url=sim_url + "/v1", api_key="none", max_retries=0, timeout=30)
    model = vc.models.list().data[0].id
    diffs = []
    for fields, whole in TOOL_CASES:
        real, sim = _tool_outcome(vc, model, fields), _tool_outcome(sc, "sim", fields)
        # a grammar-forced JSON the random model did not close within max_tokens is the model's doing, not vLLM's
        if real[0] != sim[0] or (whole and real[1] != "length" and real[:3] != sim[:3]):
            diffs.append((fields, real, sim))
        if whole and sim[0] == "ok":
            assert sim[3], (fields, sim)  # the simulator's arguments are a JSON object of the tool's schema
    assert not diffs, "\n".join(f"{f}: vLLM {r} / sim {s}" for f, r, s in diffs)


def test_simulator_exports_every_vllm_family_of_a_live_pod(pair):
    vllm_url, sim_url = pair
    with httpx.Client(timeout=30) as c:
        c.post(
            f"{vllm_url}/v1/completions",
            json={"prompt": "hello", "max_tokens": 2, "model": c.get(f"{vllm_url}/v1/models").json()["data"][0]["id"]},
        )
        real = {
            f.name: f.type
            # the classic page: prometheus_client's OpenMetrics parser rejects vLLM's (a clashing python_gc name)
            for f in text_string_to_metric_families(c.get(f"{vllm_url}/metrics").text)
            if f.name.startswith("vllm:")
        }
        sim = {f.name: f.type for f in text_string_to_metric_families(c.get(f"{sim_url}/metrics").text)}
    missing = {n: t for n, t in real.items() if sim.get(n) != t}
    assert not missing, f"families (and types) of the live vLLM pod the simulator lacks: {missing}"
