"""One tokenizer below router and pods: the same conversation gives the same ids on both sides, options included."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys

import pytest

from kvtiers.tokenizer import BuiltinTokenizer, HFTokenizer, IncrementalDetokenizer, TokenizerError, load_tokenizer
from router_lite.tokenization import BuiltinTokenizer as RouterBuiltin
from router_lite.tokenization import LocalTokenizer
from sim_gpu import api

TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
    "{% if tools %}[tools] {{ tools | tojson }} {% endif %}{% if brief %}[brief] {% endif %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


@pytest.fixture
def tokenizer_dir(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [
        "<unk>",
        "<s>",
        "</s>",
        "[",
        "]",
        "user",
        "assistant",
        "tools",
        "brief",
        "hello",
        "{",
        "}",
        '"',
        ":",
        "name",
        "search",
        ",",
    ]
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "chat_template": TEMPLATE}))
    return tmp_path


MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
TOOLS = [{"name": "search"}]


def test_router_and_pod_encode_a_chat_with_tools_and_template_kwargs_alike(tokenizer_dir):
    body = {"model": "m", "messages": MESSAGES, "tools": TOOLS, "chat_template_kwargs": {"brief": True}}
    pod_ids = api.chat_prompt_ids(body, api.ServedModel("m", 4096, load_tokenizer(tokenizer_dir)))
    router_ids = asyncio.run(LocalTokenizer(tokenizer_dir).encode_chat("m", MESSAGES, body))
    assert pod_ids == router_ids
    tok = HFTokenizer(tokenizer_dir)
    assert tok.token_to_id("tools") in pod_ids and tok.token_to_id("brief") in pod_ids  # both reached the template
    assert tok.token_to_id("search") in pod_ids
    plain = api.chat_prompt_ids({"model": "m", "messages": MESSAGES}, api.ServedModel("m", 4096, tok))
    assert tok.token_to_id("tools") not in plain


def test_builtin_router_and_pod_agree():
    body = {"messages": MESSAGES, "add_generation_prompt": False}
    pod_ids = api.chat_prompt_ids({"model": "m", **body}, api.ServedModel("m", 4096, BuiltinTokenizer()))
    assert asyncio.run(RouterBuiltin().encode_chat("m", MESSAGES, body)) == pod_ids


def test_template_errors_and_bad_messages_are_one_line_tokenizer_errors(tokenizer_dir, tmp_path):
    with pytest.raises(TokenizerError, match=r"messages\[0\]: expected an object"):
        BuiltinTokenizer().encode_chat(["not a message"])  # type: ignore[list-item]
    with pytest.raises(TokenizerError, match="content: expected a string or a list of parts"):
        BuiltinTokenizer().encode_chat([{"role": "user", "content": 3}])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_bytes((tokenizer_dir / "tokenizer.json").read_bytes())
    (tmp_path / "bad" / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{% if %}"}))
    with pytest.raises(TokenizerError, match="--tokenizer: chat template"):
        HFTokenizer(tmp_path / "bad")


def test_builtin_tokenizer_roundtrips_text_and_ids():
    tok = BuiltinTokenizer()
    text = "Hello world, the  cache router\nsends 12345 requests!"
    ids = tok.encode(text)
    assert ids[0] == 1  # BOS
    assert tok.decode(ids) == text
    rng = random.Random(7)
    generated = [rng.randrange(3, tok.vocab_size) for _ in range(200)]
    # generated text re-encodes to the same ids (multi-turn chats hit the prefix cache)
    assert tok.encode(tok.decode(generated), add_special_tokens=False) == generated


def test_builtin_tokenizer_is_stable_across_processes():
    text = "a prefix shared by the router and every pod"
    code = f"from kvtiers.tokenizer import BuiltinTokenizer; print(BuiltinTokenizer().encode({text!r}))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
        cwd=".",
    )
    assert json.loads(other.stdout) == BuiltinTokenizer().encode(text)


def test_hf_tokenizer_dir_with_chat_template(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4, "[": 5, "]": 6, "user": 7, "assistant": 8}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    t.add_special_tokens(["<s>", "</s>"])
    t.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": {"content": "</s>"},
                "chat_template": "{{ bos_token }}{% for m in messages %}"
                "[{{ m['role'] }}] {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
            }
        )
    )
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, HFTokenizer) and tok.eos_token_id == 2
    assert tok.encode("hello world", add_special_tokens=False) == [3, 4]
    ids = tok.encode_chat([{"role": "user", "content": "hello"}])
    assert ids == [1, 5, 7, 6, 3, 5, 8, 6]
    detok = IncrementalDetokenizer(tok)
    assert "".join(detok.push([t]) for t in [3, 4, 3, 4]) == tok.decode([3, 4, 3, 4]) == "hello world hello world"
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "missing")
