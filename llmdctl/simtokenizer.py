"""The tokenizer a local stack counts with: one truth for simulated pods, the router and clients.

A stack that tokenizes with something other than a real tokenizer measures different prompts than its clients
send (`vllm bench serve --random-input-len 512` was counted as ~49 tokens a prompt). So the simulated model
ships a real Hugging Face tokenizer: built offline from a seed (`tinymodel.write_sim_tokenizer_dir`, ~1 s of
training), once, into `$LLMDCTL_CACHE` (default `$LLMDCTL_HOME/cache`), and reused by every later `up`.
Pods report its directory as the model's `root` in /v1/models, which is where `vllm bench serve` (without
--model) loads its tokenizer from.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from llmdctl.paths import home_dir
from llmdctl.profile import Profile

BUILTIN = "builtin"  # profile `tokenizer: builtin`: the simulator's word tokenizer (no files)
RECIPE = "sim-tokenizer-v1-s0"  # bump when write_sim_tokenizer_dir's output changes: a new cache entry


def cache_dir(home: Path | None = None) -> Path:
    """Where built artefacts are kept across runs (`$LLMDCTL_CACHE`, else `$LLMDCTL_HOME/cache`)."""
    override = os.environ.get("LLMDCTL_CACHE")
    return Path(override).expanduser() if override else (home or home_dir()) / "cache"


def sim_tokenizer_dir(cache: Path | None = None) -> Path:
    """The simulated model's tokenizer directory, built on first use.

    Built in a sibling temporary directory and renamed into place, so two `up`s racing never see half a
    directory: the loser of the rename drops its copy and uses the winner's (the same bytes).
    """
    target = (cache or cache_dir()) / RECIPE
    if (target / "tokenizer_config.json").is_file():
        return target
    from llmdctl.tinymodel import write_sim_tokenizer_dir

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{RECIPE}-", dir=target.parent))
    try:
        write_sim_tokenizer_dir(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            if not (target / "tokenizer_config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_tokenizer(model: str) -> Path | None:
    """The model's own tokenizer when the model is a local directory holding one."""
    path = Path(model).expanduser()
    return path.resolve() if (path / "tokenizer.json").is_file() else None


def stack_tokenizer(profile: Profile, home: Path | None = None) -> str | None:
    """The tokenizer directory a local stack of `profile` counts with (see the module docstring).

    The profile's own choice wins (a directory, or "builtin"); else the model directory's tokenizer; else,
    when a pool is simulated, the simulated model's. Real-engine-only stacks: None (the engine's own).
    """
    if profile.tokenizer is not None:
        return profile.tokenizer
    own = model_tokenizer(profile.model)
    if own is not None:
        return str(own)
    if any(profile.engine_of(p) == "sim" and p.replicas for p in profile.pools):
        return str(sim_tokenizer_dir(cache_dir(home)))
    return None
