"""One tokenizer truth: a stack started with `--tokenizer DIR` counts the tokens a client tokenizing with DIR sent.

The prompts are made as `vllm bench serve --dataset-name random --random-input-len 512` makes them: consecutive
token ids from a random offset, decoded to text, re-encoded and trimmed/padded until the text is 512 tokens.
"""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest
from tokenizers import Tokenizer

from llmdctl.local.plan import PortLayout, build_plan
from llmdctl.profile import ProfileError, load_profile
from llmdctl.tinymodel import write_tokenizer_dir

INPUT_LEN = 512


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    write_tokenizer_dir(out, "tiny", 0)
    return out


def bench_random_prompt(tok: Tokenizer, rng: random.Random, index: int, length: int) -> str:
    """vLLM bench's random prompt: decode a run of ids, re-encode, fix the length, up to 10 times."""
    vocab = tok.get_vocab_size()
    ids = [(rng.randrange(vocab) + index + k) % vocab for k in range(length)]
    prompt = ""
    for _ in range(10):
        prompt = tok.decode(ids)
        ids = tok.encode(prompt, add_special_tokens=False).ids
        if len(ids) == length:
            break
        ids = ids[:length] + [rng.randrange(vocab) for _ in range(length - len(ids))]
    return prompt


def test_profile_tokenizer_reaches_pods_and_router(tok_dir: Path, tmp_path: Path):
    profile = load_profile("inference-scheduling", [f"tokenizer={tok_dir}"])
    plan = build_plan(profile, PortLayout(9000, 9100, 6000), tmp_path)
    for comp in plan.components:
        assert comp.argv[comp.argv.index("--tokenizer") + 1] == str(tok_dir.resolve()), comp.name
    with pytest.raises(ProfileError, match=r"tokenizer: expected a directory with tokenizer.json"):
        load_profile("inference-scheduling", [f"tokenizer={tmp_path}"])


def test_bench_random_prompts_are_counted_as_sent(cli, port_args, tok_dir: Path):
    args, ports = port_args(2)
    r = cli("up", "inference-scheduling", "--replicas", "2", "--tokenizer", str(tok_dir), *args, "--json", timeout=90)
    assert r.code == 0, r.err
    base = f"http://127.0.0.1:{ports['router']}"
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    rng = random.Random(0)
    sent = counted = 0
    with httpx.Client(timeout=30) as http:
        for i in range(8):
            prompt = bench_random_prompt(tok, rng, i, INPUT_LEN)
            sent += len(tok.encode(prompt, add_special_tokens=False).ids)
            resp = http.post(f"{base}/v1/completions", json={"model": "sim-model", "prompt": prompt, "max_tokens": 2})
            assert resp.status_code == 200, resp.text
            counted += resp.json()["usage"]["prompt_tokens"]
        tokenized = http.post(f"{base}/tokenize", json={"model": "sim-model", "prompt": prompt}).json()
    assert abs(counted - INPUT_LEN * 8) <= 0.02 * INPUT_LEN * 8, (counted, sent)
    assert counted == sent + 8  # the server adds BOS to each prompt, as vLLM does with this tokenizer
    assert tokenized["count"] == len(tok.encode(prompt).ids)


def test_kubernetes_render_refuses_a_local_tokenizer_dir(tok_dir: Path):
    from llmdctl.k8s.render import RenderError, RenderOptions, render

    profile = load_profile("inference-scheduling", [f"tokenizer={tok_dir}"])
    with pytest.raises(RenderError, match=r"^tokenizer: .* cluster pods cannot read"):
        render(profile, RenderOptions(target="kind"))
