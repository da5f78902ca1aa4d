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


def token_load_router(speed_aware: bool) -> dict:
    """Precise prefix (weight 1) + llm-d's token-load-scorer (weight 3) fed by the in-flight tracker, speed-aware
    or not: the heterogeneous profile's scheduling, small enough for planner tests."""
    return {
        "plugins": [
            {"type": "precise-prefix-cache-scorer"},
            {"type": "inflight-load-producer"},
            {"type": "token-load-scorer", "parameters": {"queueThresholdTokens": 65536, "speedAware": speed_aware}},
            {"type": "max-score-picker"},
        ],
        "schedulingProfiles": [
            {
                "name": "default",
                "plugins": [
                    {"pluginRef": "token-load-scorer", "weight": 3},
                    {"pluginRef": "precise-prefix-cache-scorer", "weight": 1},
                    {"pluginRef": "max-score-picker"},
                ],
            }
        ],
    }
