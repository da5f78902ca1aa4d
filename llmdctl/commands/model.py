"""`llmdctl model make-tiny DIR`: a deterministic offline Llama for real vLLM (no download possible or needed).

Weights need torch + transformers. The project's environment does not carry them (they are heavy and pinned
by vLLM), so the build runs with the vLLM virtualenv's interpreter unless the current one has both.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import typer

from llmdctl.commands import fail

app = typer.Typer(
    help="Local models for real engines: build a tiny, deterministic, offline Llama.", no_args_is_help=True
)


@app.callback()
def _group() -> None:
    """Local models for real engines (a group, so `make-tiny` stays a sub-command)."""


def make_tiny(out_dir: str, size: str = "tiny", seed: int = 0) -> dict:
    """Build the model directory in-process when torch+transformers import here, else in the vLLM venv."""
    from llmdctl import tinymodel

    if size not in tinymodel.SIZES:
        raise ValueError(f"--size: expected one of {', '.join(tinymodel.SIZES)}, got {size!r}")
    if importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"):
        return tinymodel.build_tiny_model(out_dir, size, seed)
    from llmdctl.engines.vllm_env import EngineError, vllm_python

    try:
        python = vllm_python()
    except EngineError as exc:
        raise RuntimeError(f"model make-tiny needs torch and transformers: neither is here and {exc}") from None
    argv = [
        str(python),
        tinymodel.__file__,
        str(Path(out_dir).expanduser().resolve()),
        "--size",
        size,
        "--seed",
        str(seed),
    ]
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=900,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"model make-tiny failed in {python}: {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@app.command(
    "make-tiny",
    help=(
        "Write a Llama model directory with seeded random weights (safetensors), a locally trained byte-level BPE "
        "tokenizer and a chat template: byte-identical for the same seed. tiny: ~2.2M parameters, fast start; "
        "small: ~32M parameters, prefill cost visible on a CPU (prefix hits visibly faster)."
    ),
)
def make_tiny_command(
    out_dir: str = typer.Argument(..., metavar="DIR", help="Directory to write (created if missing)."),
    size: str = typer.Option("tiny", "--size", help="tiny or small."),
    seed: int = typer.Option(0, "--seed", help="Seed for weights and the tokenizer's training text."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    tokenizer_only: bool = typer.Option(
        False,
        "--tokenizer-only",
        help="Write only the tokenizer (no torch needed): for simulated pods, `llmdctl up PROFILE --tokenizer DIR`.",
    ),
) -> None:
    if tokenizer_only:
        from llmdctl.tinymodel import write_tokenizer_dir

        try:
            summary = write_tokenizer_dir(out_dir, size, seed)
        except (ValueError, OSError) as exc:
            raise fail(str(exc), 2 if isinstance(exc, ValueError) else 1) from None
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
        else:
            typer.echo(f"wrote {summary['path']}: tokenizer, vocab {summary['vocab_size']}")
            typer.echo(f"use it: llmdctl up inference-scheduling --tokenizer {summary['path']}")
        return
    try:
        summary = make_tiny(out_dir, size, seed)
    except (ValueError, RuntimeError, OSError) as exc:
        raise fail(str(exc), 2 if isinstance(exc, ValueError) else 1) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(
            f"wrote {summary['path']}: {summary['size']} Llama, {summary['parameters']:,} parameters, vocab "
            f"{summary['vocab_size']}, weights sha256 {summary['sha256'][:16]}…"
        )
        typer.echo(f"serve it: llmdctl up precise-prefix-cache --engine vllm --model {summary['path']}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
