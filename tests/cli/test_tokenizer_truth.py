"""One tokenizer truth: a stack counts the tokens a client tokenizing with the model's tokenizer sent, by default
(the simulated model's tokenizer, whose directory /v1/models names as `root`) and with `--tokenizer DIR`.

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
from llmdctl.simtokenizer import cache_dir, sim_tokenizer_dir, stack_tokenizer
from llmdctl.tinymodel import SIM_VOCAB_SIZE, write_sim_tokenizer_dir, write_tokenizer_dir

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
    profile = load_profile("precise-prefix-cache", [f"tokenizer={tok_dir}"])  # its router hashes tokens
    plan = build_plan(profile, PortLayout(9000, 9100, 6000), tmp_path)
    for comp in plan.components:
        assert comp.argv[comp.argv.index("--tokenizer") + 1] == str(tok_dir.resolve()), comp.name
    # a router whose plugins need no tokens loads none (its /tokenize and any later need go to the pods)
    plan = build_plan(
        load_profile("inference-scheduling", [f"tokenizer={tok_dir}"]), PortLayout(9000, 9100, 6000), tmp_path
    )
    assert [c.name for c in plan.components if "--tokenizer" in c.argv] == [
        c.name for c in plan.components if c.kind != "router"
    ]
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


def test_default_stack_counts_bench_random_prompts_as_sent(cli, port_args):
    """No --tokenizer: the client finds the tokenizer where `vllm bench serve` looks (the model card's `root`)."""
    args, ports = port_args(2)
    r = cli("up", "inference-scheduling", "--replicas", "2", *args, "--json", timeout=90)
    assert r.code == 0, r.err
    base = f"http://127.0.0.1:{ports['router']}"
    with httpx.Client(timeout=30) as http:
        card = http.get(f"{base}/v1/models").json()["data"][0]
        root = Path(card["root"])
        assert (root / "tokenizer.json").is_file(), card
        tok = Tokenizer.from_file(str(root / "tokenizer.json"))
        assert tok.get_vocab_size() == SIM_VOCAB_SIZE
        rng = random.Random(1)
        sent = counted = 0
        for i in range(8):
            prompt = bench_random_prompt(tok, rng, i, INPUT_LEN)
            sent += len(tok.encode(prompt, add_special_tokens=False).ids)
            resp = http.post(f"{base}/v1/completions", json={"model": card["id"], "prompt": prompt, "max_tokens": 2})
            assert resp.status_code == 200, resp.text
            counted += resp.json()["usage"]["prompt_tokens"]
        # token-id prompts of the bench workloads (ids up to 30,000) stay inside the vocabulary
        ids = list(range(1000, 30000, 977))
        resp = http.post(f"{base}/v1/completions", json={"model": card["id"], "prompt": ids, "max_tokens": 1})
        assert resp.status_code == 200 and resp.json()["usage"]["prompt_tokens"] == len(ids), resp.text
    assert abs(counted - INPUT_LEN * 8) <= 0.02 * INPUT_LEN * 8, (counted, sent)
    assert counted == sent + 8  # BOS on each prompt, as vLLM adds it with this tokenizer


def test_the_simulated_models_tokenizer_is_built_once_and_the_same_every_time(tmp_path: Path):
    cached = sim_tokenizer_dir()  # the session's shared cache (tests/conftest.py)
    assert cached.parent == cache_dir() and sim_tokenizer_dir() == cached
    fresh = write_sim_tokenizer_dir(tmp_path / "fresh")
    assert fresh["vocab_size"] == SIM_VOCAB_SIZE
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "fresh" / name).read_bytes() == (cached / name).read_bytes(), name


def test_which_tokenizer_a_local_stack_counts_with(tok_dir: Path, tmp_path: Path):
    assert stack_tokenizer(load_profile("inference-scheduling")) == str(sim_tokenizer_dir())
    assert stack_tokenizer(load_profile("inference-scheduling", ["tokenizer=builtin"])) == "builtin"
    assert stack_tokenizer(load_profile("inference-scheduling", [f"tokenizer={tok_dir}"])) == str(tok_dir.resolve())
    assert stack_tokenizer(load_profile("inference-scheduling", [f"model={tok_dir}"])) == str(tok_dir.resolve())
    vllm_only = load_profile("inference-scheduling", ["engine=vllm", "model=some/hub-model"])
    assert stack_tokenizer(vllm_only) is None  # a real engine counts with its own
    builtin = load_profile("inference-scheduling", ["tokenizer=builtin"])
    plan = build_plan(builtin, PortLayout(9000, 9100, 6000), tmp_path)
    assert all("--tokenizer" not in c.argv for c in plan.components)  # the simulator's word tokenizer, as before
