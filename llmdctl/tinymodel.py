"""A deterministic offline Llama for real vLLM: random weights, a locally trained BPE tokenizer, a chat template.

No model can be downloaded on an offline machine, yet real vLLM needs a real Hugging Face model directory.
This builds one on the spot: the same seed gives byte-identical files on the same library versions.
Weights need torch + transformers, which live in the vLLM virtualenv (not in the project's environment),
so `build_tiny_model` runs there: `llmdctl model make-tiny` re-runs this file with the engine's interpreter
when the current one lacks them. This module therefore imports only the standard library at the top, and
runs as a plain script (`python tinymodel.py DIR --size tiny`) without importing the llmdctl package.

Sizes: "tiny" (~2.2M parameters, vocab 2048; head_dim 64: vLLM's CPU attention rejects 16) starts and answers
fast; "small" (~31M parameters, vocab 8192) makes prefill cost visible on a CPU, so prefix-cache hits are
visibly faster.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

SIZES: dict[str, dict[str, int]] = {
    "tiny": {
        "vocab_size": 2048,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
    },
    "small": {
        "vocab_size": 8192,
        "hidden_size": 512,
        "intermediate_size": 1408,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
    },
}
SIM_VOCAB_SIZE = 32000  # the simulated model's tokenizer: the built-in tokenizer's vocabulary size
SIM_MAX_LEN = 131072
_CONSONANTS, _VOWELS = "bdfghjklmnprstvz", "aeiou"
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word but "
    "not what all were we when your can said there use an each which she do how their if will up other about out many "
    "then them these so some her would make like him into time has look two more write go see number no way could "
    "people my than first water been call who oil its now find long down day did get come made may part cache block "
    "prefix token router model server request latency prefill decode batch memory route pod index event hash tier "
    "offload queue load score filter picker profile engine kernel tensor layer head vector matrix cluster node gateway "
    "policy agent tool system user assistant reason plan answer question context window stream chunk byte network "
    "bandwidth compute"
).split()


def corpus(seed: int = 0, sentences: int = 6000) -> list[str]:
    """A deterministic English-like training text: seeded sentences over a fixed word list, digits, punctuation."""
    rng = random.Random(seed)
    lines = []
    for _ in range(sentences):
        n = rng.randint(4, 18)
        words = [rng.choice(_WORDS) for _ in range(n)]
        if rng.random() < 0.2:
            words.insert(rng.randrange(n), str(rng.randint(0, 9999)))
        text = " ".join(words).capitalize() + rng.choice([".", ".", "?", "!", ",", ":"])
        lines.append(text)
    return lines


def sim_corpus(seed: int = 0, sentences: int = 12000) -> list[str]:
    """`corpus(seed)` plus sentences mixing its words with made-up consonant-vowel words: enough distinct
    pieces for a BPE vocabulary of SIM_VOCAB_SIZE (the plain corpus runs out of merges near 2,400)."""
    rng = random.Random(seed + 1)
    lines = corpus(seed)
    for _ in range(sentences):
        words = [
            rng.choice(_WORDS)
            if rng.random() < 0.5
            else "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(1, 4)))
            for _ in range(rng.randint(3, 14))
        ]
        lines.append(" ".join(words).capitalize() + rng.choice(".,?!:"))
    return lines


def train_tokenizer(
    vocab_size: int, seed: int = 0, lines: list[str] | None = None, special_tokens: list[str] | None = None
) -> Any:
    """A byte-level BPE tokenizer (any text encodes) trained on `lines` (default `corpus(seed)`), adding BOS
    like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens or SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed) if lines is None else lines, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tok


def _write_tokenizer(
    out: Path, tok: Any, max_len: int, template: str = CHAT_TEMPLATE, specials: list[str] | None = None
) -> None:
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "additional_special_tokens": (specials or SPECIAL_TOKENS)[3:],
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        "chat_template": template,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}, indent=2) + "\n"
    )


def write_tokenizer_dir(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> dict[str, Any]:
    """Only the tokenizer files of `build_tiny_model` (no torch needed): what simulated pods and clients share."""
    if size not in SIZES:
        raise ValueError(f"--size: expected one of {', '.join(SIZES)}, got {size!r}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    shape = SIZES[size]
    _write_tokenizer(out, train_tokenizer(shape["vocab_size"], seed), shape["max_position_embeddings"])
    return {
        "path": str(out.resolve()),
        "size": size,
        "seed": seed,
        "vocab_size": shape["vocab_size"],
        "files": sorted(p.name for p in out.iterdir()),
    }


def write_sim_tokenizer_dir(out_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """The simulated model's tokenizer (`llmdctl up`'s default): a 32k byte-level BPE over `sim_corpus(seed)`.

    Its vocabulary has the built-in tokenizer's size, so token-id workloads (ids up to 30,000) stay valid,
    and its chat template is the simulator's built-in one (tool definitions rendered where kvtiers' block
    typing expects them). Training takes about a second: callers cache the directory (llmdctl.simtokenizer).
    """
    from kvtiers.tokenizer import BUILTIN_CHAT_TEMPLATE

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    specials = [*SPECIAL_TOKENS, "<|tools|>", "<|tool|>", "<|developer|>"]
    tok = train_tokenizer(SIM_VOCAB_SIZE, seed, sim_corpus(seed), specials)
    _write_tokenizer(out, tok, SIM_MAX_LEN, BUILTIN_CHAT_TEMPLATE, specials)
    # Clients load a tokenizer through the model's config (transformers' AutoTokenizer, vllm bench); without
    # one they print a config error before falling back. No weights: this is not a model for a real engine.
    config = {
        "model_type": "llama",
        "vocab_size": tok.get_vocab_size(),
        "bos_token_id": tok.token_to_id("<s>"),
        "eos_token_id": tok.token_to_id("</s>"),
        "pad_token_id": tok.token_to_id("<pad>"),
        "max_position_embeddings": SIM_MAX_LEN,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return {"path": str(out.resolve()), "seed": seed, "vocab_size": tok.get_vocab_size()}


def build_tiny_model(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> dict[str, Any]:
    """Write a Llama model directory (config, safetensors weights, tokenizer, chat template); returns a summary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if size not in SIZES:
        raise ValueError(f"--size: expected one of {', '.join(SIZES)}, got {size!r}")
    shape = SIZES[size]
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(shape["vocab_size"], seed)
    ids = {name: tok.token_to_id(name) for name in ("<s>", "</s>", "<pad>")}
    config = LlamaConfig(
        **shape,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        hidden_act="silu",
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
        dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Own init, independent of transformers' init order: N(0, 0.02) from one seeded generator, norms at 1.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    model = model.to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    model.generation_config.save_pretrained(str(out))
    _write_tokenizer(out, tok, shape["max_position_embeddings"])
    params = sum(p.numel() for p in model.parameters())
    weights = out / "model.safetensors"
    return {
        "path": str(out),
        "size": size,
        "seed": seed,
        "parameters": params,
        "vocab_size": shape["vocab_size"],
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "files": sorted(p.name for p in out.iterdir()),
    }


def main(argv: list[str]) -> int:
    """Script entry (used from the vLLM venv): `tinymodel.py DIR [--size tiny|small] [--seed N]`; prints JSON."""
    import argparse

    parser = argparse.ArgumentParser(prog="tinymodel")
    parser.add_argument("dir")
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(build_tiny_model(args.dir, args.size, args.seed)))
    return 0


if __name__ == "__main__":
    # Run as a file, this folder would shadow stdlib modules (llmdctl/profile.py hides `profile`).
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != _here]
    sys.exit(main(sys.argv[1:]))
