"""The official `openai` client against a real simulator process: completions and chat, stream and not."""

from __future__ import annotations

import openai
import pytest

from tests.sim.simproc import sim_server


@pytest.fixture(scope="module")
def server():
    with sim_server(
        "--model", "sim-llama", "--time-scale", "0", "--max-model-len", "4096", "--enable-prompt-tokens-details"
    ) as s:
        yield s


@pytest.fixture
def client(server):
    c = openai.OpenAI(base_url=server.base + "/v1", api_key="none", max_retries=0, timeout=20)
    yield c
    c.close()


def test_completion(client):
    r = client.completions.create(
        model="sim-llama",
        prompt="the cache router sends",
        max_tokens=7,
        extra_body={"ignore_eos": True, "return_token_ids": True},
    )
    assert r.object == "text_completion" and r.model == "sim-llama" and r.id.startswith("cmpl-")
    choice = r.choices[0]
    assert choice.finish_reason == "length" and choice.text
    assert r.usage.completion_tokens == 7 and r.usage.prompt_tokens == 5  # BOS + 4 words
    assert r.usage.total_tokens == 12
    extra = choice.model_extra
    assert len(extra["token_ids"]) == 7 and len(extra["prompt_token_ids"]) == 5


def test_completion_stream_with_usage(client):
    chunks = list(
        client.completions.create(
            model="sim-llama",
            prompt=[11, 12, 13, 14],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    text_chunks = [c for c in chunks if c.choices]
    assert len(text_chunks) == 5
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.prompt_tokens == 4 and usage.completion_tokens == 5
    assert "".join(c.choices[0].text for c in text_chunks).strip()


def test_chat(client):
    r = client.chat.completions.create(
        model="sim-llama",
        max_completion_tokens=4,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "which pod has my prefix?"}],
        extra_body={"ignore_eos": True},
    )
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content
    assert r.usage.completion_tokens == 4 and r.choices[0].finish_reason == "length"


def test_chat_stream(client):
    stream = client.chat.completions.create(
        model="sim-llama",
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream please"}],
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 6
    assert chunks[-1].usage.completion_tokens == 6


def test_prefix_reuse_reports_cached_tokens(client):
    prompt = list(range(100, 180))  # 80 tokens = 5 full blocks of 16
    first = client.completions.create(model="sim-llama", prompt=prompt, max_tokens=1)
    again = client.completions.create(model="sim-llama", prompt=prompt + [5, 6], max_tokens=1)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert again.usage.prompt_tokens_details.cached_tokens == 80


def test_models_and_errors(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["sim-llama"]
    with pytest.raises(openai.NotFoundError) as nf:
        client.completions.create(model="nope", prompt="x", max_tokens=1)
    assert nf.value.status_code == 404 and "does not exist" in str(nf.value)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="sim-llama", prompt="x", max_tokens=-1)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="sim-llama", prompt=list(range(3, 5000)), max_tokens=1)
