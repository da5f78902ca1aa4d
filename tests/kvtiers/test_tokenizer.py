"""One tokenizer below router and pods: the same conversation gives the same ids on both sides, options included."""

from __future__ import annotations

import asyncio
import json

import pytest

from kvtiers.tokenizer import BuiltinTokenizer, HFTokenizer, TokenizerError, load_tokenizer
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

    words = ["<unk>", "<s>", "</s>", "[", "]", "user", "assistant", "tools", "brief", "hello", "{", "}", '"', ":",
             "name", "search", ","]
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
