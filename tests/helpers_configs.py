"""The shipped profiles' router configs as a `--named-configs` directory, as `llmdctl up` writes it."""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

import yaml

from llmdctl.profile import shipped_router_configs


@lru_cache(maxsize=1)
def shipped_configs_dir() -> Path:
    """One directory per test session (the configs are the same for every test)."""
    out = Path(tempfile.mkdtemp(prefix="llmdctl-named-configs-"))
    for name, config in shipped_router_configs().items():
        (out / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out
