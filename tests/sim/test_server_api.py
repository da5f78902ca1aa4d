"""The server's pure parts: request parsing and vLLM's error objects, failure injection."""

from __future__ import annotations

import pytest

from kvtiers.tokenizer import BuiltinTokenizer
from sim_gpu import api
from sim_gpu.api import APIError, ServedModel
from sim_gpu.faults import FAILURE_TYPES, FaultInjector, failure_body, parse_failure_types


def _served(max_model_len: int = 64) -> ServedModel:
    return ServedModel("m", max_model_len, BuiltinTokenizer())


def test_completion_parsing_defaults_and_options():
    req = api.parse_completion(
        {
            "model": "m",
            "prompt": "hello there",
            "ignore_eos": True,
            "cache_salt": "s",
            "return_token_ids": True,
            "unknown_field": 1,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        _served(),
    )
    assert req.max_tokens == [16] and req.ignore_eos and req.cache_salt == "s" and req.include_usage
    assert req.prompts[0][0] == 1
    batch = api.parse_completion({"prompt": [[5, 6], [7]], "max_tokens": 3}, _served())
    assert batch.prompts == [[5, 6], [7]] and batch.model == "m"
    chat = api.parse_chat({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 2}, _served())
    assert chat.max_tokens == [2] and chat.kind == "chat"
    default_chat = api.parse_chat({"messages": [{"role": "user", "content": "hi"}]}, _served())
    assert default_chat.max_tokens[0] == 64 - len(default_chat.prompts[0])


@pytest.mark.parametrize(
    "body,status,fragment",
    [
        ({"model": "other", "prompt": "x"}, 404, "does not exist"),
        ({"prompt": ""}, 400, "cannot be empty"),
        ({"prompt": []}, 400, "cannot be empty"),
        ({"prompt": "x", "max_tokens": -1}, 400, "at least 1"),
        ({"prompt": "x", "max_tokens": 0}, 400, "at least 1"),
        ({"prompt": list(range(3, 70))}, 400, "maximum context length is 64"),
        ({"prompt": [3, 4], "max_tokens": 63}, 400, "too large"),
        ({"prompt": [99999999]}, 400, "out of vocabulary"),
        ({"prompt": "x", "stream_options": {"include_usage": True}}, 400, "stream=True"),
    ],
)
def test_completion_errors_are_vllm_shaped(body, status, fragment):
    with pytest.raises(APIError) as info:
        api.parse_completion(body, _served())
    err = info.value.body()["error"]
    assert info.value.status == status and err["code"] == status
    assert fragment in err["message"]
    assert err["type"] == ("NotFoundError" if status == 404 else "BadRequestError")


def test_malformed_json_is_400():
    for raw in (b"{not json", b"", b"[1, 2]"):
        with pytest.raises(APIError) as info:
            api.loads_body(raw)
        assert info.value.status == 400


def test_tokenize_detokenize_shapes():
    served = _served(4096)
    out = api.tokenize({"model": "m", "prompt": "hello world"}, served)
    assert set(out) >= {"count", "max_model_len", "tokens"} and out["count"] == len(out["tokens"]) == 3
    assert out["max_model_len"] == 4096
    chat = api.tokenize({"messages": [{"role": "user", "content": "hello"}]}, served)
    assert chat["tokens"] == served.tokenizer.encode_chat([{"role": "user", "content": "hello"}])
    assert api.detokenize({"tokens": out["tokens"]}, served) == {"prompt": "hello world"}


def test_failure_injection_types_and_rates():
    assert set(FAILURE_TYPES) == {
        "rate_limit",
        "invalid_api_key",
        "context_length",
        "server_error",
        "invalid_request",
        "model_not_found",
    }
    assert parse_failure_types(["rate_limit,server_error"]) == ["rate_limit", "server_error"]
    with pytest.raises(ValueError, match="--failure-types"):
        parse_failure_types("bogus")
    always = FaultInjector(100, ["rate_limit"], seed=1)
    assert all(always.pick() == "rate_limit" for _ in range(50))
    never = FaultInjector(0, seed=1)
    assert all(never.pick() is None for _ in range(50))
    half = FaultInjector(50, seed=1)
    hits = sum(half.pick() is not None for _ in range(2000))
    assert 850 < hits < 1150
    status, body = failure_body("rate_limit", "m", 10)
    assert status == 429 and body["error"]["code"] == 429 and "m" in body["error"]["message"]
    assert failure_body("server_error", "m", 10)[0] == 503
    with pytest.raises(ValueError, match="--failure-injection-rate"):
        FaultInjector(101)


def test_startup_delay_counts_from_when_the_server_listens():
    import time

    assert FaultInjector().ready  # no delay: ready at once
    slow = FaultInjector(startup_delay_s=0.01)
    time.sleep(0.05)
    assert not slow.ready  # however long the process took to start, the delay has not begun
    slow.start_delay()  # the servers listen now
    deadline = time.monotonic() + 5
    while not slow.ready and time.monotonic() < deadline:
        time.sleep(0.005)
    assert slow.ready
